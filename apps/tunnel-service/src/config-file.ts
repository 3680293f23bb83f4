/**
 * Reads a wg-quick file, which holds the tunnel's private key: through one
 * descriptor opened without following a symbolic link, so that the file
 * whose type, size, owner and mode are checked is the file that is read.
 * Like wg-quick, it warns when others could read the key.
 */

import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';

export const MAX_CONFIG_BYTES = 1024 * 1024;

export interface ConfigFile {
  text: string;
  /** How to make the file private, when it is not. */
  warnings: string[];
}

/** Throws with a message naming what is wrong (the caller adds the path). */
export function readConfigFile(path: string): ConfigFile {
  const fd = openNoFollow(path);
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) throw new Error('it is not a regular file');
    if (stats.size > MAX_CONFIG_BYTES)
      throw new Error(`the file is larger than ${MAX_CONFIG_BYTES} bytes`);
    return { text: readAtMost(fd, MAX_CONFIG_BYTES), warnings: configFileWarnings(path, stats) };
  } finally {
    closeSync(fd);
  }
}

/** The file should be root's and nobody else's: others could read the key or add a peer. */
export function configFileWarnings(path: string, stats: Pick<Stats, 'mode' | 'uid'>): string[] {
  const warnings: string[] = [];
  const shown = shellWord(path);
  if (stats.uid !== 0) {
    warnings.push(
      `${path} holds the private key but is owned by uid ${stats.uid}, not root: chown root:root ${shown}`,
    );
  }
  const access = stats.mode & 0o077;
  if (access !== 0) {
    const mode = (stats.mode & 0o777).toString(8).padStart(4, '0');
    warnings.push(
      `${path} holds the private key but its group or others may access it (mode ${mode}): chmod 600 ${shown}`,
    );
  }
  return warnings;
}

function openNoFollow(path: string): number {
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; regular files ignore it.
    return openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') {
      throw new Error(
        `it is a symbolic link: give the file's own path (readlink -f ${shellWord(path)})`,
      );
    }
    throw error;
  }
}

/** Reads to the end, refusing a file that grew past `limit` since fstat. */
function readAtMost(fd: number, limit: number): string {
  const buffer = Buffer.alloc(limit + 1);
  let length = 0;
  for (;;) {
    const read = readSync(fd, buffer, length, buffer.length - length, null);
    if (read === 0) break;
    length += read;
    if (length > limit) throw new Error(`the file is larger than ${limit} bytes`);
  }
  return buffer.toString('utf8', 0, length);
}

function shellWord(text: string): string {
  return /^[A-Za-z0-9_./+:=@-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}
