/**
 * The gateway's WireGuard private key, kept in its state directory so a
 * restarted gateway keeps its public key (the portal and the clients know
 * it by it). Created on the first run: the directory 0700, the file
 * `private-key` 0600 holding the key in base64 (as `wg genkey` writes it),
 * both owned by the user the gateway runs as (root). Refused when anyone
 * else could read or replace it; the error says how to fix it.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';

import { decodeKey, encodeKey, generateKeyPair } from '@gatehouse/wireguard';

export const PRIVATE_KEY_FILE = 'private-key';

/** The key cannot be used; `message` says why and what to do. */
export class PrivateKeyError extends Error {
  override name = 'PrivateKeyError';
}

export interface GatewayKey {
  privateKey: Uint8Array;
  publicKey: Uint8Array;
  /** Whether this run made it. */
  created: boolean;
  path: string;
}

/** The key in `stateDir`, made there when absent. `uid`: who must own them (the process's). */
export function loadOrCreatePrivateKey(
  stateDir: string,
  uid: number = process.geteuid?.() ?? 0,
): GatewayKey {
  ensureStateDir(stateDir, uid);
  const path = join(stateDir, PRIVATE_KEY_FILE);
  let fd: number;
  try {
    // O_NOFOLLOW: a symbolic link put there is refused, never followed.
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return create(path);
    if (code === 'ELOOP') {
      throw new PrivateKeyError(`${path} is a symbolic link: remove it (a new key is made)`);
    }
    throw new PrivateKeyError(`cannot read ${path}: ${(error as Error).message}`);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new PrivateKeyError(`${path} is not a regular file: remove it`);
    if (stat.uid !== uid) {
      throw new PrivateKeyError(
        `${path} is owned by uid ${stat.uid}, not ${uid}: chown ${uid}:${stat.gid} ${path}`,
      );
    }
    if ((stat.mode & 0o077) !== 0) {
      throw new PrivateKeyError(
        `${path} is open to group or others (mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')}): ` +
          `chmod 600 ${path}`,
      );
    }
    const text = readFileSync(fd, 'utf8').trim();
    let privateKey: Uint8Array;
    try {
      privateKey = decodeKey(text);
    } catch (error) {
      throw new PrivateKeyError(
        `${path} does not hold a WireGuard private key (${(error as Error).message}): ` +
          'remove it to make a new one (the portal then knows the gateway by a new public key)',
      );
    }
    return { privateKey, publicKey: publicKeyOf(privateKey), created: false, path };
  } finally {
    closeSync(fd);
  }
}

function create(path: string): GatewayKey {
  const { privateKey, publicKey } = generateKeyPair();
  let fd: number;
  try {
    fd = openSync(
      path,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
  } catch (error) {
    throw new PrivateKeyError(`cannot create ${path}: ${(error as Error).message}`);
  }
  try {
    writeSync(fd, `${encodeKey(privateKey)}\n`);
  } finally {
    closeSync(fd);
  }
  return { privateKey, publicKey, created: true, path };
}

function ensureStateDir(stateDir: string, uid: number): void {
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new PrivateKeyError(
      `cannot create the state directory ${stateDir}: ${(error as Error).message}`,
    );
  }
  const stat = lstatSync(stateDir);
  if (!stat.isDirectory()) {
    throw new PrivateKeyError(`the state directory ${stateDir} is not a directory`);
  }
  if (stat.uid !== uid) {
    throw new PrivateKeyError(
      `the state directory ${stateDir} is owned by uid ${stat.uid}, not ${uid}: chown ${uid} ${stateDir}`,
    );
  }
  if ((stat.mode & 0o022) !== 0) {
    throw new PrivateKeyError(
      `the state directory ${stateDir} is writable by group or others: chmod 700 ${stateDir}`,
    );
  }
}

/** The DER prefix of an X25519 private key in PKCS #8 (RFC 8410); the raw 32 bytes follow. */
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

function publicKeyOf(privateKey: Uint8Array): Uint8Array {
  const pkcs8 = Buffer.concat([X25519_PKCS8_PREFIX, privateKey]);
  try {
    const privateObject = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
    const spki = createPublicKey(privateObject).export({
      format: 'der',
      type: 'spki',
    });
    return new Uint8Array(spki.subarray(spki.length - 32));
  } finally {
    pkcs8.fill(0);
  }
}
