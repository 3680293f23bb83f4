/**
 * The portable provider: ChaCha20-Poly1305 from libsodium compiled to
 * WebAssembly. Slower than the native providers (every call copies in and
 * out of the WASM heap) but available wherever Node runs.
 */

import sodium from 'libsodium-wrappers';
import {
  AEAD_KEY_LENGTH,
  AEAD_NONCE_LENGTH,
  AEAD_TAG_LENGTH,
  checkAeadKeyAndNonce,
  counterNonce,
} from './chacha20poly1305.ts';
import type { NonceAead } from './chacha20poly1305.ts';
import type { CryptoProvider, TransportAead } from './provider.ts';

await sodium.ready;

export const libsodiumWasmProvider: CryptoProvider = {
  name: 'libsodium-wasm',
  transportAead: (key) => new LibsodiumWasmTransportAead(key),
  seal: (key, counter, plaintext, aad) =>
    libsodiumWasmNonceAead.seal(key, counterNonce(counter), plaintext, aad),
  open: (key, counter, ciphertext, aad) =>
    libsodiumWasmNonceAead.open(key, counterNonce(counter), ciphertext, aad),
};

export const libsodiumWasmNonceAead: NonceAead = {
  seal(key, nonce, plaintext, aad) {
    checkAeadKeyAndNonce(key, nonce);
    return sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, aad, null, nonce, key);
  },
  open(key, nonce, ciphertext, aad) {
    checkAeadKeyAndNonce(key, nonce);
    if (ciphertext.length < AEAD_TAG_LENGTH) return null;
    try {
      return sodium.crypto_aead_chacha20poly1305_ietf_decrypt(null, ciphertext, aad, nonce, key);
    } catch {
      return null;
    }
  },
};

class LibsodiumWasmTransportAead implements TransportAead {
  #key: Uint8Array;
  #nonce = new Uint8Array(AEAD_NONCE_LENGTH);
  #nonceView = new DataView(this.#nonce.buffer);
  #destroyed = false;

  constructor(key: Uint8Array) {
    if (key.length !== AEAD_KEY_LENGTH)
      throw new RangeError(`transport key must be ${AEAD_KEY_LENGTH} bytes`);
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
    return length + AEAD_TAG_LENGTH;
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
    if (length < AEAD_TAG_LENGTH) return -1;
    const plaintextLength = length - AEAD_TAG_LENGTH;
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
