import {
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  openSync,
  renameSync,
  writeSync,
} from 'node:fs';
import { LOG_FILE_MAX_BYTES, LOG_FILE_MODE, ROTATED_LOG_FILE_SUFFIX } from './constants.ts';

/**
 * A log file for export: lines appended through one descriptor opened
 * without following a symbolic link, kept under `maxBytes` by renaming it
 * to `PATH.1` (one old file kept) and starting a new one. A line that cannot
 * be written is counted, never thrown: the log must not take the service down.
 */
export class LogFile {
  readonly path: string;
  readonly #maxBytes: number;
  #fd: number | undefined;
  #size: number;
  #linesLost = 0;

  /** Throws with a message naming what is wrong with `path` (the caller adds the path). */
  constructor(path: string, maxBytes = LOG_FILE_MAX_BYTES) {
    this.path = path;
    this.#maxBytes = maxBytes;
    const { fd, size } = openLogFile(path);
    this.#fd = fd;
    this.#size = size;
  }

  get linesLost(): number {
    return this.#linesLost;
  }

  /** Appends one whole line (ending in "\n"). */
  write(line: string): void {
    const bytes = Buffer.from(line);
    if (this.#fd !== undefined && this.#size > 0 && this.#size + bytes.length > this.#maxBytes)
      this.#rotate();
    if (this.#fd === undefined) this.#reopen();
    if (this.#fd === undefined) {
      this.#linesLost++;
      return;
    }
    try {
      for (let written = 0; written < bytes.length;)
        written += writeSync(this.#fd, bytes, written, bytes.length - written);
      this.#size += bytes.length;
    } catch {
      this.#linesLost++;
    }
  }

  close(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }

  #rotate(): void {
    this.close();
    try {
      renameSync(this.path, this.path + ROTATED_LOG_FILE_SUFFIX);
    } catch {
      // Gone already (removed by hand or by logrotate): a new file starts all the same.
    }
  }

  /** After a failed open the next line tries again; the lines in between are counted as lost. */
  #reopen(): void {
    try {
      ({ fd: this.#fd, size: this.#size } = openLogFile(this.path));
    } catch {
      this.#fd = undefined;
    }
  }
}

function openLogFile(path: string): { fd: number; size: number } {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a reader; regular files ignore it.
    fd = openSync(
      path,
      constants.O_WRONLY |
        constants.O_CREAT |
        constants.O_APPEND |
        constants.O_NOFOLLOW |
        constants.O_NONBLOCK,
      LOG_FILE_MODE,
    );
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new Error("it is a symbolic link: give the log file's own path");
    // A FIFO without a reader.
    if (code === 'ENXIO') throw new Error('it is not a regular file');
    throw error;
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) throw new Error('it is not a regular file');
    // A second name could be a file an attacker linked into the log directory.
    if (stats.nlink > 1) throw new Error(`it has ${stats.nlink} hard links`);
    // The umask may have taken bits off, or the file was there with another mode.
    fchmodSync(fd, LOG_FILE_MODE);
    return { fd, size: stats.size };
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}
