import type { Writable } from 'node:stream';
import type { Logger } from '@gatehouse/service-ipc';

export interface StderrLogger extends Logger {
  /** Lines not written because the stream's reader went away. */
  readonly linesLost: number;
}

/**
 * The service's log: one line per message on stderr (journald adds the time
 * under systemd). A reader that goes away (`up | head`, a journal that is
 * gone) costs the lines from then on, counted, never the tunnel: unheard,
 * the stream's EPIPE would reach the process-level handler, whose own log
 * line fails again, and so on, with the main thread spinning.
 */
export function createStderrLogger(
  options: { debug: boolean },
  stream: Writable = process.stderr,
): StderrLogger {
  let broken = false;
  let linesLost = 0;
  stream.on('error', () => {
    // The line whose write failed is lost too.
    if (!broken) linesLost++;
    broken = true;
  });
  const write = (level: string) => (message: string) => {
    if (broken) linesLost++;
    else stream.write(`gatehouse-tunnel: ${level}: ${message}\n`);
  };
  return {
    debug: options.debug ? write('debug') : () => {},
    info: write('info'),
    warn: write('warning'),
    error: write('error'),
    get linesLost() {
      return linesLost;
    },
  };
}
