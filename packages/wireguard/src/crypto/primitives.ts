/**
 * Handshake-path primitives shared by every crypto provider: BLAKE2s hashing,
 * HMAC and WireGuard's HKDF, keyed BLAKE2s-128 (MAC1/MAC2), X25519 and
 * XChaCha20-Poly1305 (cookie replies).
 */

import {
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  getRandomValues,
  timingSafeEqual,
} from 'node:crypto';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { blake2s } from '@noble/hashes/blake2.js';
import { AEAD_TAG_LENGTH } from './chacha20poly1305.ts';

export const HASH_LENGTH = 32;
export const MAC_LENGTH = 16;
export const KEY_LENGTH = 32;
export const XAEAD_NONCE_LENGTH = 24;

/** BLAKE2s-256 of the concatenation of `parts`. */
export function hash(...parts: Uint8Array[]): Uint8Array {
  const hasher = createHash('blake2s256');
  for (const part of parts) hasher.update(part);
  return ownedCopy(hasher.digest());
}

/** HMAC-BLAKE2s-256 of the concatenation of `parts`. */
export function hmac(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const authenticator = createHmac('blake2s256', key);
  for (const part of parts) authenticator.update(part);
  return ownedCopy(authenticator.digest());
}

/** WireGuard's KDF_1 (HKDF over HMAC-BLAKE2s, one output). */
export function kdf1(key: Uint8Array, input: Uint8Array): Uint8Array {
  const secret = hmac(key, input);
  const first = hmac(secret, COUNTER_1);
  secret.fill(0);
  return first;
}

/** WireGuard's KDF_2. */
export function kdf2(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array] {
  const secret = hmac(key, input);
  const first = hmac(secret, COUNTER_1);
  const second = hmac(secret, first, COUNTER_2);
  secret.fill(0);
  return [first, second];
}

/** WireGuard's KDF_3. */
export function kdf3(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array, Uint8Array] {
  const secret = hmac(key, input);
  const first = hmac(secret, COUNTER_1);
  const second = hmac(secret, first, COUNTER_2);
  const third = hmac(secret, second, COUNTER_3);
  secret.fill(0);
  return [first, second, third];
}

/** Keyed BLAKE2s with a 16-byte output, as used for MAC1 and MAC2. */
export function mac(key: Uint8Array, data: Uint8Array): Uint8Array {
  return blake2s(data, { key, dkLen: MAC_LENGTH });
}

/** 32 random bytes, clamped as an X25519 scalar. */
export function generatePrivateKey(): Uint8Array {
  const key = randomBytes(KEY_LENGTH);
  key[0]! &= 248;
  key[31]! = (key[31]! & 127) | 64;
  return key;
}

/** X25519 multiplication of the base point by `privateKey`. */
export function publicKey(privateKey: Uint8Array): Uint8Array {
  const spki = createPublicKey(privateKeyObject(privateKey)).export({
    format: 'der',
    type: 'spki',
  });
  return ownedCopy(spki.subarray(SPKI_X25519_PREFIX.length));
}

/**
 * X25519 shared secret; null when the result is all zeros, i.e. the peer's
 * point has small order and contributes nothing to the secret.
 */
export function dh(privateKey: Uint8Array, peerPublicKey: Uint8Array): Uint8Array | null {
  const privateObject = privateKeyObject(privateKey);
  const publicObject = publicKeyObject(peerPublicKey);
  let shared: Buffer;
  try {
    shared = diffieHellman({ privateKey: privateObject, publicKey: publicObject });
  } catch (error) {
    // OpenSSL refuses to derive an all-zero secret; that is our null case.
    if ((error as { code?: unknown }).code === 'ERR_OSSL_FAILED_DURING_DERIVATION') return null;
    throw error;
  }
  const result = ownedCopy(shared);
  return isAllZero(result) ? null : result;
}

/** XChaCha20-Poly1305 seal; returns ciphertext || 16-byte tag. */
export function xaeadSeal(
  key: Uint8Array,
  nonce24: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  checkLength('key', key, KEY_LENGTH);
  checkLength('nonce', nonce24, XAEAD_NONCE_LENGTH);
  return xchacha20poly1305(key, nonce24, aad).encrypt(plaintext);
}

/** XChaCha20-Poly1305 open of ciphertext || tag; null when authentication fails. */
export function xaeadOpen(
  key: Uint8Array,
  nonce24: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array,
): Uint8Array | null {
  checkLength('key', key, KEY_LENGTH);
  checkLength('nonce', nonce24, XAEAD_NONCE_LENGTH);
  if (ciphertext.length < AEAD_TAG_LENGTH) return null;
  try {
    return xchacha20poly1305(key, nonce24, aad).decrypt(ciphertext);
  } catch {
    return null;
  }
}

export function randomBytes(length: number): Uint8Array {
  return getRandomValues(new Uint8Array(length));
}

/** Equality in time independent of the contents (not of the lengths). */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

const COUNTER_1 = Uint8Array.of(1);
const COUNTER_2 = Uint8Array.of(2);
const COUNTER_3 = Uint8Array.of(3);

// DER framing of raw X25519 keys (RFC 8410), so OpenSSL can import them.
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function privateKeyObject(privateKey: Uint8Array) {
  checkLength('private key', privateKey, KEY_LENGTH);
  const der = Buffer.concat([PKCS8_X25519_PREFIX, privateKey]);
  try {
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } finally {
    der.fill(0);
  }
}

function publicKeyObject(key: Uint8Array) {
  checkLength('public key', key, KEY_LENGTH);
  return createPublicKey({
    key: Buffer.concat([SPKI_X25519_PREFIX, key]),
    format: 'der',
    type: 'spki',
  });
}

/** Copies Node's Buffer into a plain Uint8Array and wipes the original. */
function ownedCopy(buffer: Buffer): Uint8Array {
  const copy = new Uint8Array(buffer);
  buffer.fill(0);
  return copy;
}

function isAllZero(bytes: Uint8Array): boolean {
  let accumulated = 0;
  for (const byte of bytes) accumulated |= byte;
  return accumulated === 0;
}

function checkLength(what: string, bytes: Uint8Array, expected: number): void {
  if (bytes.length !== expected) {
    throw new RangeError(`${what} must be ${expected} bytes, got ${bytes.length}`);
  }
}
