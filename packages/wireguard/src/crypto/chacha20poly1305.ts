/** Facts about RFC 8439 ChaCha20-Poly1305 shared by every provider. */

export const AEAD_KEY_LENGTH = 32;
export const AEAD_NONCE_LENGTH = 12;
export const AEAD_TAG_LENGTH = 16;

/**
 * RFC 8439 ChaCha20-Poly1305 with an arbitrary 12-byte nonce and additional
 * data. Every provider exposes one so known-answer vectors and the selection
 * self-test can reach it; WireGuard itself only uses counter nonces.
 */
export interface NonceAead {
  /** Returns ciphertext || 16-byte tag. */
  seal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array;
  /** Opens ciphertext || tag; null when authentication fails. */
  open(
    key: Uint8Array,
    nonce: Uint8Array,
    ciphertext: Uint8Array,
    aad: Uint8Array,
  ): Uint8Array | null;
}

/** WireGuard's nonce: 4 zero bytes, then the 64-bit counter little-endian. */
export function counterNonce(counter: number): Uint8Array {
  if (!Number.isSafeInteger(counter) || counter < 0) {
    throw new RangeError(`nonce counter must be a non-negative safe integer, got ${counter}`);
  }
  const nonce = new Uint8Array(AEAD_NONCE_LENGTH);
  const view = new DataView(nonce.buffer);
  view.setUint32(4, counter % TWO_TO_THE_32, true);
  view.setUint32(8, Math.floor(counter / TWO_TO_THE_32), true);
  return nonce;
}

export function checkAeadKeyAndNonce(key: Uint8Array, nonce: Uint8Array): void {
  if (key.length !== AEAD_KEY_LENGTH) {
    throw new RangeError(
      `ChaCha20-Poly1305 key must be ${AEAD_KEY_LENGTH} bytes, got ${key.length}`,
    );
  }
  if (nonce.length !== AEAD_NONCE_LENGTH) {
    throw new RangeError(
      `ChaCha20-Poly1305 nonce must be ${AEAD_NONCE_LENGTH} bytes, got ${nonce.length}`,
    );
  }
}

const TWO_TO_THE_32 = 0x1_0000_0000;
