/**
 * The portable provider: ChaCha20-Poly1305 from libsodium compiled to
 * WebAssembly. Slower than the native providers (every call copies in and
 * out of the WASM heap) but available wherever Node runs.
 */

import sodium from 'libsodium-wrappers';
import {
  AEAD_KEY_LENGTH as KEY_LENGTH,
  AEAD_NONCE_LENGTH as NONCE_LENGTH,
  AEAD_TAG_LENGTH as TAG_LENGTH,
  checkAeadKeyAndNonce,
  counterNonce,
} from './chacha20poly1305.ts';
import type { CryptoProvider, TransportAead } from './provider.ts';

await sodium.ready;

export const libsodiumWasmProvider: CryptoProvider = {
  name: 'libsodium-wasm',
  transportAead: (key) => new LibsodiumWasmTransportAead(key),
  seal: (key, counter, plaintext, aad) =>
    libsodiumWasmSeal(key, counterNonce(counter), plaintext, aad),
  open: (key, counter, ciphertext, aad) =>
    libsodiumWasmOpen(key, counterNonce(counter), ciphertext, aad),
};

/** RFC 8439 ChaCha20-Poly1305 with an arbitrary 12-byte nonce; returns ciphertext || tag. */
export function libsodiumWasmSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  checkAeadKeyAndNonce(key, nonce);
  return sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, aad, null, nonce, key);
}

/** Opens ciphertext || tag; null when authentication fails. */
export function libsodiumWasmOpen(
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array,
): Uint8Array | null {
  checkAeadKeyAndNonce(key, nonce);
  if (ciphertext.length < TAG_LENGTH) return null;
  try {
    return sodium.crypto_aead_chacha20poly1305_ietf_decrypt(null, ciphertext, aad, nonce, key);
  } catch {
    return null;
  }
}

class LibsodiumWasmTransportAead implements TransportAead {
  #key: Uint8Array;
  #nonce = new Uint8Array(NONCE_LENGTH);
  #nonceView = new DataView(this.#nonce.buffer);
  #destroyed = false;

  constructor(key: Uint8Array) {
    if (key.length !== KEY_LENGTH)
      throw new RangeError(`transport key must be ${KEY_LENGTH} bytes`);
    this.#key = Uint8Array.from(key);
  }

  seal(
    counterLow: number,
    counterHigh: number,
    src: Uint8Array,
    srcOffset: number,
    length: number,
    dst: Uint8Array,
    dstOffset: number,
  ): number {
    const nonce = this.#prepareNonce(counterLow, counterHigh);
    const { ciphertext, mac } = sodium.crypto_aead_chacha20poly1305_ietf_encrypt_detached(
      src.subarray(srcOffset, srcOffset + length),
      null,
      null,
      nonce,
      this.#key,
    );
    dst.set(ciphertext, dstOffset);
    dst.set(mac, dstOffset + length);
    return length + TAG_LENGTH;
  }

  open(
    counterLow: number,
    counterHigh: number,
    src: Uint8Array,
    srcOffset: number,
    length: number,
    dst: Uint8Array,
    dstOffset: number,
  ): number {
    const nonce = this.#prepareNonce(counterLow, counterHigh);
    if (length < TAG_LENGTH) return -1;
    const plaintextLength = length - TAG_LENGTH;
    let plaintext: Uint8Array;
    try {
      plaintext = sodium.crypto_aead_chacha20poly1305_ietf_decrypt_detached(
        null,
        src.subarray(srcOffset, srcOffset + plaintextLength),
        src.subarray(srcOffset + plaintextLength, srcOffset + length),
        null,
        nonce,
        this.#key,
      );
    } catch {
      return -1;
    }
    dst.set(plaintext, dstOffset);
    return plaintextLength;
  }

  destroy(): void {
    this.#key.fill(0);
    this.#destroyed = true;
  }

  #prepareNonce(counterLow: number, counterHigh: number): Uint8Array {
    // A destroyed context holds a zeroed key: refuse rather than encrypt with it.
    if (this.#destroyed) throw new Error('transport AEAD used after destroy()');
    this.#nonceView.setUint32(4, counterLow, true);
    this.#nonceView.setUint32(8, counterHigh, true);
    return this.#nonce;
  }
}
