/** Where a component reports what happens to it; the process that runs it supplies its own. */
export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export type LogLevel = keyof Logger;

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};
