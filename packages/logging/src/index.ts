export { prefixedLogger, silentLogger } from './logger.ts';
export type { Logger, LogLevel } from './logger.ts';
export { createServiceLogger } from './service-logger.ts';
export type { ServiceLogger, ServiceLoggerOptions } from './service-logger.ts';
export { LogFile } from './log-file.ts';
export { LOG_FILE_MAX_BYTES, LOG_FILE_MODE, ROTATED_LOG_FILE_SUFFIX } from './constants.ts';
export { printableText } from './printable-text.ts';
