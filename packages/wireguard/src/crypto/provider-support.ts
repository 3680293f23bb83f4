/**
 * What the three ChaCha20-Poly1305 providers have in common: the
 * `CryptoProvider` object built from a provider's `NonceAead` and transport
 * factory, and the transport contexts' key check, counter nonce and tag
 * length check. The per-packet helpers are plain functions over the caller's
 * own preallocated nonce, so the transport path allocates nothing.
 */

import { AEAD_KEY_LENGTH, AEAD_TAG_LENGTH, counterNonce } from './chacha20poly1305.ts';
import type { NonceAead } from './chacha20poly1305.ts';
import type { CryptoProvider, CryptoProviderName, TransportAead } from './provider.ts';

/**
 * A provider whose one-shot seal/open (handshake path) is `nonceAead` with
 * WireGuard's counter nonce, and whose transport contexts come from
 * `transportAead`.
 */
export function cryptoProviderFromNonceAead(
  name: CryptoProviderName,
  nonceAead: NonceAead,
  transportAead: (key: Uint8Array) => TransportAead,
): CryptoProvider {
  return {
    name,
    transportAead,
    seal: (key, counter, plaintext, aad) =>
      nonceAead.seal(key, counterNonce(counter), plaintext, aad),
    open: (key, counter, ciphertext, aad) =>
      nonceAead.open(key, counterNonce(counter), ciphertext, aad),
  };
}

/** Throws unless `key` is a ChaCha20-Poly1305 key; for transport context constructors. */
export function checkTransportKey(key: Uint8Array): void {
  if (key.length !== AEAD_KEY_LENGTH)
    throw new RangeError(`transport key must be ${AEAD_KEY_LENGTH} bytes`);
}

/**
 * Writes the counter into a 12-byte nonce's last 8 bytes, little-endian
 * (the first 4 stay zero): WireGuard's transport nonce, without a BigInt.
 */
export function setCounterNonce(nonce: DataView, counterLow: number, counterHigh: number): void {
  nonce.setUint32(4, counterLow, true);
  nonce.setUint32(8, counterHigh, true);
}

/** The plaintext length of a transport ciphertext of `length` bytes, or -1 when it is shorter than a tag. */
export function transportPlaintextLength(length: number): number {
  return length < AEAD_TAG_LENGTH ? -1 : length - AEAD_TAG_LENGTH;
}
