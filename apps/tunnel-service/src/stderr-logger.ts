import type { Logger } from '@gatehouse/service-ipc';

/** The service's log: one line per message on stderr (journald adds the time under systemd). */
export function createStderrLogger(options: { debug: boolean }): Logger {
  const write = (level: string) => (message: string) =>
    process.stderr.write(`gatehouse-tunnel: ${level}: ${message}\n`);
  return {
    debug: options.debug ? write('debug') : () => {},
    info: write('info'),
    warn: write('warning'),
    error: write('error'),
  };
}
