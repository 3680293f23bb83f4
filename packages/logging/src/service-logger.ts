import type { Writable } from 'node:stream';
import pino from 'pino';
import type { LogFile } from './log-file.ts';
import type { Logger } from './logger.ts';

export interface ServiceLogger extends Logger {
  /** Lines a sink could not write: its reader went away, or the file could not be written. */
  readonly linesLost: number;
  /** Closes the log file, if any. */
  close(): void;
}

export interface ServiceLoggerOptions {
  /** The program's name, leading every line. */
  name: string;
  debug: boolean;
  /** Readable lines; the process's stderr unless told. */
  stream?: Writable & { isTTY?: boolean };
  /** JSON lines for log export, when configured. */
  file?: LogFile;
}

const READABLE_LEVELS: Record<string, string> = {
  debug: 'debug',
  info: 'info',
  warn: 'warning',
  error: 'error',
};

interface LogRecord {
  level: string;
  time: string;
  msg: string;
}

/**
 * The service's log, through pino: one JSON object per line (time, level,
 * pid, message) to the log file, and a readable line per message on stderr
 * (journald adds the time under systemd; on a terminal the line starts with
 * the local time). A reader of stderr that goes away (`up | head`, a
 * journal that is gone) costs the lines from then on, counted, never the
 * tunnel: unheard, the stream's EPIPE would reach the process-level
 * handler, whose own log line fails again, and so on, with the main thread
 * spinning.
 */
export function createServiceLogger(options: ServiceLoggerOptions): ServiceLogger {
  const stream = options.stream ?? process.stderr;
  let streamBroken = false;
  let streamLinesLost = 0;
  stream.on('error', () => {
    // The line whose write failed is lost too.
    if (!streamBroken) streamLinesLost++;
    streamBroken = true;
  });
  const readable = {
    write(json: string) {
      if (streamBroken) {
        streamLinesLost++;
        return;
      }
      const record = JSON.parse(json) as LogRecord;
      const time = stream.isTTY === true ? `${localTime(new Date(record.time))} ` : '';
      stream.write(
        `${time}${options.name}: ${READABLE_LEVELS[record.level] ?? record.level}: ${record.msg}\n`,
      );
    },
  };
  const level = options.debug ? 'debug' : 'info';
  const sinks: pino.StreamEntry[] = [{ stream: readable, level }];
  if (options.file !== undefined) sinks.push({ stream: options.file, level });
  const log = pino(
    {
      level,
      name: options.name,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.multistream(sinks),
  );
  return {
    debug: (message) => log.debug(message),
    info: (message) => log.info(message),
    warn: (message) => log.warn(message),
    error: (message) => log.error(message),
    get linesLost() {
      return streamLinesLost + (options.file?.linesLost ?? 0);
    },
    close: () => options.file?.close(),
  };
}

function localTime(date: Date): string {
  const two = (n: number) => String(n).padStart(2, '0');
  return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}.${String(date.getMilliseconds()).padStart(3, '0')}`;
}
