/** The log file is renamed to `PATH.1` (replacing the older one) before it grows past this. */
export const LOG_FILE_MAX_BYTES = 16 * 1024 * 1024;

/** Root writes it; the administrators' group (the directory's, under systemd's LogsDirectory) reads it. */
export const LOG_FILE_MODE = 0o640;

/** The file that holds the lines from before the last rotation. */
export const ROTATED_LOG_FILE_SUFFIX = '.1';
