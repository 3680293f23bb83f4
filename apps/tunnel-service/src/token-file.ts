/**
 * The portal token for `up --portal`: GATEHOUSE_TOKEN (taken out of the environment once read,
 * so that no child process inherits it), else the token file. The file must be a regular file
 * owned by root with mode 0400 or 0600 — anything else is refused, saying how to fix it — and
 * is read through one descriptor opened without following a symbolic link, so that the file
 * checked is the file read. No message here ever holds the token or a part of it.
 */

import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { MAX_PORTAL_TOKEN_CHARS } from '@gatehouse/protocol';

export const TOKEN_ENV = 'GATEHOUSE_TOKEN';
export const DEFAULT_TOKEN_FILE = '/etc/gatehouse/client-token';
/** Far above the portal's tokens; a larger file is not a token file. */
export const MAX_TOKEN_FILE_BYTES = 8 * 1024;
/** What the control protocol takes as a token (printable ASCII, no spaces). */
const TOKEN = new RegExp(`^[\\x21-\\x7e]{1,${MAX_PORTAL_TOKEN_CHARS}}$`);
const ALLOWED_MODES = [0o400, 0o600];

/** The token cannot be used; `message` says why and how to fix it. */
export class TokenError extends Error {
  override readonly name = 'TokenError';
}

export interface PortalToken {
  token: string;
  source: 'env' | 'file';
}

/**
 * GATEHOUSE_TOKEN when set and not blank (deleted from `env` either way), else the token file.
 * `owner`: the uid the file must belong to (root).
 */
export function readPortalToken(
  env: Record<string, string | undefined>,
  tokenFile: string = DEFAULT_TOKEN_FILE,
  owner = 0,
): PortalToken {
  const fromEnv = env[TOKEN_ENV];
  delete env[TOKEN_ENV];
  if (fromEnv !== undefined && fromEnv.trim() !== '') {
    return { token: checkedToken(fromEnv.trim(), TOKEN_ENV), source: 'env' };
  }
  return { token: readTokenFile(tokenFile, owner), source: 'file' };
}

/** The token in `path`, checked as the module's header says. */
export function readTokenFile(path: string, owner = 0): string {
  const shown = shellWord(path);
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; regular files ignore it.
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new TokenError(
        `no token: ${TOKEN_ENV} is not set and there is no token file ${path} ` +
          `(write the token there, then: chown root:root ${shown} && chmod 600 ${shown}; ` +
          'or give another with --token-file)',
      );
    }
    if (code === 'ELOOP') {
      throw new TokenError(
        `the token file ${path} is a symbolic link: give the file's own path (readlink -f ${shown})`,
      );
    }
    if (code === 'EACCES') {
      throw new TokenError(
        `cannot read the token file ${path}: permission denied (it is root's: run as root)`,
      );
    }
    throw new TokenError(`cannot open the token file ${path}: ${code ?? (error as Error).message}`);
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) {
      throw new TokenError(`the token file ${path} is not a regular file: give a file's path`);
    }
    const mode = stats.mode & 0o7777;
    if (stats.uid !== owner || !ALLOWED_MODES.includes(mode)) {
      const owned = owner === 0 ? 'root' : `uid ${owner}`;
      throw new TokenError(
        `the token file ${path} must be owned by ${owned} and readable by it alone ` +
          `(owner uid ${stats.uid}, mode ${mode.toString(8).padStart(4, '0')}; allowed 0400 or 0600): ` +
          `chown ${owner === 0 ? 'root:root' : owner} ${shown} && chmod 600 ${shown}`,
      );
    }
    if (stats.size > MAX_TOKEN_FILE_BYTES) {
      throw new TokenError(
        `the token file ${path} is larger than ${MAX_TOKEN_FILE_BYTES} bytes: it holds no token`,
      );
    }
    const buffer = Buffer.alloc(MAX_TOKEN_FILE_BYTES + 1);
    let length = 0;
    for (;;) {
      const read = readSync(fd, buffer, length, buffer.length - length, null);
      if (read === 0) break;
      length += read;
      if (length > MAX_TOKEN_FILE_BYTES) {
        throw new TokenError(
          `the token file ${path} is larger than ${MAX_TOKEN_FILE_BYTES} bytes: it holds no token`,
        );
      }
    }
    const text = buffer.toString('latin1', 0, length).trim();
    buffer.fill(0);
    return checkedToken(text, `the token file ${path}`);
  } finally {
    closeSync(fd);
  }
}

function checkedToken(text: string, where: string): string {
  if (text === '') throw new TokenError(`${where} is empty: put the token in it`);
  if (!TOKEN.test(text)) {
    throw new TokenError(
      `${where} does not hold a token (one line of at most ${MAX_PORTAL_TOKEN_CHARS} printable ASCII characters, no spaces)`,
    );
  }
  return text;
}

function shellWord(text: string): string {
  return /^[A-Za-z0-9_./+:=@-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}
