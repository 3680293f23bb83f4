/**
 * The portable provider: ChaCha20-Poly1305 from libsodium compiled to
 * WebAssembly. Slower than the native providers (every call copies in and
 * out of the WASM heap) but available wherever Node runs.
 */

import sodium from 'libsodium-wrappers';
import { AEAD_NONCE_LENGTH, AEAD_TAG_LENGTH, checkAeadKeyAndNonce } from './chacha20poly1305.ts';
import type { NonceAead } from './chacha20poly1305.ts';
import type { CryptoProvider, TransportAead } from './provider.ts';
import {
  checkTransportKey,
  cryptoProviderFromNonceAead,
  setCounterNonce,
  transportPlaintextLength,
} from './provider-support.ts';

await sodium.ready;

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

export const libsodiumWasmProvider: CryptoProvider = cryptoProviderFromNonceAead(
  'libsodium-wasm',
  libsodiumWasmNonceAead,
  (key) => new LibsodiumWasmTransportAead(key),
);

class LibsodiumWasmTransportAead implements TransportAead {
  #key: Uint8Array;
  #nonce = new Uint8Array(AEAD_NONCE_LENGTH);
  #nonceView = new DataView(this.#nonce.buffer);
  #destroyed = false;

  constructor(key: Uint8Array) {
    checkTransportKey(key);
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
    const plaintextLength = transportPlaintextLength(length);
    if (plaintextLength < 0) return -1;
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
    setCounterNonce(this.#nonceView, counterLow, counterHigh);
    return this.#nonce;
  }
}
