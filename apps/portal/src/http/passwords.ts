/**
 * Password hashing for password identities: node:crypto scrypt, a memory-hard KDF.
 *
 * A stored hash is self-describing, `scrypt$N$r$p$salt$hash` (salt and hash base64url without
 * padding), so the cost can be raised later and old hashes still verify. New hashes use
 * N=2^15, r=8, p=1 (32 MiB of memory per computation) with a 16-byte salt and a 32-byte key.
 *
 * `verifyPassword` compares in constant time, and when there is no stored hash (the user does
 * not exist, or has no password) it still runs one scrypt against a dummy hash, so the response
 * time does not tell an attacker whether the account has such a user.
 *
 * The sync forms block the thread for the duration of one scrypt (tens of milliseconds); the
 * CLI's `apply` may use them. A server uses the async forms, which run on libuv's thread pool.
 */
import { randomBytes, scrypt, scryptSync, timingSafeEqual } from 'node:crypto';

/** Cost parameters of new hashes. */
export const SCRYPT_N = 2 ** 15;
export const SCRYPT_R = 8;
export const SCRYPT_P = 1;
const SALT_BYTES = 16;
const KEY_BYTES = 32;

/** Upper bounds on what a stored string may ask for, so a corrupt row cannot exhaust memory. */
const MAX_LOG2_N = 20;
const MAX_R = 32;
const MAX_P = 16;
const MIN_KEY_BYTES = 16;
const MAX_KEY_BYTES = 64;

/** scrypt needs 128·N·r bytes; node's default maxmem (32 MiB) is exactly N=2^15,r=8 and too tight. */
function maxmemFor(n: number, r: number, p: number): number {
  return 128 * n * r * p + 16 * 1024 * 1024;
}

interface ParsedHash {
  n: number;
  r: number;
  p: number;
  salt: Buffer;
  hash: Buffer;
}

const BASE64URL = /^[A-Za-z0-9_-]+$/;
const DECIMAL = /^[1-9][0-9]{0,9}$/;

/** Parses `scrypt$N$r$p$salt$hash`; undefined when the string is not one within the bounds. */
export function parsePasswordHash(stored: string): ParsedHash | undefined {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return undefined;
  const [, nText, rText, pText, saltText, hashText] = parts as [
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  if (!DECIMAL.test(nText) || !DECIMAL.test(rText) || !DECIMAL.test(pText)) return undefined;
  const n = Number(nText);
  const r = Number(rText);
  const p = Number(pText);
  if (n < 2 || n > 2 ** MAX_LOG2_N || (n & (n - 1)) !== 0) return undefined;
  if (r > MAX_R || p > MAX_P) return undefined;
  if (!BASE64URL.test(saltText) || !BASE64URL.test(hashText)) return undefined;
  const salt = Buffer.from(saltText, 'base64url');
  const hash = Buffer.from(hashText, 'base64url');
  if (salt.length < 8 || hash.length < MIN_KEY_BYTES || hash.length > MAX_KEY_BYTES) {
    return undefined;
  }
  return { n, r, p, salt, hash };
}

function format(n: number, r: number, p: number, salt: Buffer, hash: Buffer): string {
  return `scrypt$${n}$${r}$${p}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

/** Unicode NFC, so the same password typed on different systems hashes the same. */
function passwordBytes(password: string): Buffer {
  return Buffer.from(password.normalize('NFC'), 'utf8');
}

/** A fresh salted hash of `password` in the stored form. Blocks for one scrypt. */
export function hashPassword(password: string): string {
  const salt = randomBytes(SALT_BYTES);
  const hash = scryptSync(passwordBytes(password), salt, KEY_BYTES, {
    N: SCRYPT_N,
    r: SCRYPT_R,
    p: SCRYPT_P,
    maxmem: maxmemFor(SCRYPT_N, SCRYPT_R, SCRYPT_P),
  });
  return format(SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, hash);
}

/** `hashPassword` on the thread pool. */
export async function hashPasswordAsync(password: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const hash = await scryptAsync(
    passwordBytes(password),
    salt,
    KEY_BYTES,
    SCRYPT_N,
    SCRYPT_R,
    SCRYPT_P,
  );
  return format(SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, hash);
}

/**
 * A fixed hash of a random password nobody knows, with the current parameters: what a missing
 * or unreadable stored hash is checked against, so that case costs one scrypt as well.
 */
const DUMMY: ParsedHash = {
  n: SCRYPT_N,
  r: SCRYPT_R,
  p: SCRYPT_P,
  salt: Buffer.from('Z2F0ZWhvdXNlLWR1bW15', 'base64url'),
  hash: Buffer.alloc(KEY_BYTES, 0xa5),
};

function target(stored: string | null | undefined): { parsed: ParsedHash; real: boolean } {
  const parsed = typeof stored === 'string' ? parsePasswordHash(stored) : undefined;
  return parsed === undefined ? { parsed: DUMMY, real: false } : { parsed, real: true };
}

function scryptAsync(
  password: Buffer,
  salt: Buffer,
  keylen: number,
  n: number,
  r: number,
  p: number,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keylen, { N: n, r, p, maxmem: maxmemFor(n, r, p) }, (error, key) => {
      if (error) reject(error);
      else resolve(key);
    });
  });
}

/**
 * Whether `password` matches `stored`. `stored` null/undefined (no such user, no password) or
 * not a well-formed hash: false, after the same amount of work as a real check.
 */
export function verifyPassword(password: string, stored: string | null | undefined): boolean {
  const { parsed, real } = target(stored);
  const key = scryptSync(passwordBytes(password), parsed.salt, parsed.hash.length, {
    N: parsed.n,
    r: parsed.r,
    p: parsed.p,
    maxmem: maxmemFor(parsed.n, parsed.r, parsed.p),
  });
  return timingSafeEqual(key, parsed.hash) && real;
}

/** `verifyPassword` on the thread pool. */
export async function verifyPasswordAsync(
  password: string,
  stored: string | null | undefined,
): Promise<boolean> {
  const { parsed, real } = target(stored);
  const key = await scryptAsync(
    passwordBytes(password),
    parsed.salt,
    parsed.hash.length,
    parsed.n,
    parsed.r,
    parsed.p,
  );
  return timingSafeEqual(key, parsed.hash) && real;
}

/** Whether `stored` was made with weaker parameters than new hashes get (rehash on sign-in). */
export function passwordHashNeedsUpgrade(stored: string): boolean {
  const parsed = parsePasswordHash(stored);
  return (
    parsed === undefined ||
    parsed.n < SCRYPT_N ||
    parsed.r < SCRYPT_R ||
    parsed.p < SCRYPT_P ||
    parsed.hash.length < KEY_BYTES
  );
}
