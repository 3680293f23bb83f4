/**
 * X25519 key pairs and their base64 text form (as `wg` prints them).
 */

import { KEY_LENGTH } from './constants.ts';
import { generatePrivateKey, publicKey as derivePublicKey } from './crypto/primitives.ts';

export interface KeyPair {
  privateKey: Uint8Array;
  publicKey: Uint8Array;
}

/** Raised for key text or bytes that are not exactly one 32-byte key. */
export class KeyFormatError extends Error {
  override readonly name = 'KeyFormatError';
}

export function generateKeyPair(): KeyPair {
  const privateKey = generatePrivateKey();
  return { privateKey, publicKey: derivePublicKey(privateKey) };
}

export function publicKeyFromPrivateKey(privateKey: Uint8Array): Uint8Array {
  checkKeyLength(privateKey, 'private key');
  return derivePublicKey(privateKey);
}

/** Base64 with padding: 44 characters. */
export function encodeKey(key: Uint8Array): string {
  checkKeyLength(key, 'key');
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('base64');
}

/**
 * Decodes a key in canonical base64 (44 characters, one `=`), refusing
 * anything else rather than guessing: wrong length, characters outside the
 * alphabet, URL-safe base64, whitespace, or non-zero trailing bits.
 */
export function decodeKey(text: string): Uint8Array {
  if (typeof text !== 'string') throw new KeyFormatError('key must be a base64 string');
  if (text.length !== ENCODED_KEY_LENGTH) {
    throw new KeyFormatError(
      `key must be ${ENCODED_KEY_LENGTH} base64 characters, got ${text.length}`,
    );
  }
  if (!CANONICAL_KEY_SHAPE.test(text)) {
    throw new KeyFormatError(
      'key must be standard base64 (A-Z a-z 0-9 + /) ending with a single "="',
    );
  }
  const bytes = Buffer.from(text, 'base64');
  if (bytes.toString('base64') !== text) {
    throw new KeyFormatError('key is not canonical base64: its last character has unused bits set');
  }
  return new Uint8Array(bytes);
}

const ENCODED_KEY_LENGTH = 44;
const CANONICAL_KEY_SHAPE = /^[A-Za-z0-9+/]{43}=$/;

export function checkKeyLength(key: Uint8Array, what: string): void {
  if (!(key instanceof Uint8Array)) throw new KeyFormatError(`${what} must be a Uint8Array`);
  if (key.length !== KEY_LENGTH) {
    throw new KeyFormatError(`${what} must be ${KEY_LENGTH} bytes, got ${key.length}`);
  }
}
