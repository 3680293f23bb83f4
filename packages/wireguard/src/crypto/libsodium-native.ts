/**
 * ChaCha20-Poly1305 through the system's native libsodium (Debian's
 * libsodium23). Unlike OpenSSL it has no key schedule to keep, so a transport
 * context is just the key, held in guarded memory from sodium_malloc (freed,
 * and thereby zeroed, by sodium_free). Pointer parameters are declared
 * `uintptr_t` and get plain numbers (addressInView, from @gatehouse/libc).
 */

import koffi from 'koffi';
import { addressInView, keepingReachable } from '@gatehouse/libc';
import {
  AEAD_KEY_LENGTH,
  AEAD_NONCE_LENGTH,
  AEAD_TAG_LENGTH,
  checkAeadKeyAndNonce,
} from './chacha20poly1305.ts';
import type { NonceAead } from './chacha20poly1305.ts';
import type { CryptoProvider, TransportAead } from './provider.ts';
import {
  checkTransportKey,
  cryptoProviderFromNonceAead,
  setCounterNonce,
  transportPlaintextLength,
} from './provider-support.ts';

export const LIBSODIUM_SONAME = 'libsodium.so.23';

export interface LibsodiumNative {
  provider: CryptoProvider;
  /** RFC 8439 with an arbitrary nonce and additional data, for vectors and self-tests. */
  nonceAead: NonceAead;
}

/** Loads and initialises libsodium; throws when it is missing or fails to initialise. */
export function loadLibsodiumNative(): LibsodiumNative {
  loaded ??= bind();
  return loaded;
}

let loaded: LibsodiumNative | undefined;

interface Sodium {
  malloc: (size: number) => number;
  free: (pointer: number) => void;
  encryptDetached: (
    ciphertext: number,
    tag: number,
    tagLengthOut: number,
    message: number,
    messageLength: number,
    aad: number,
    aadLength: number,
    secretNonce: number,
    nonce: number,
    key: number,
  ) => number;
  decryptDetached: (
    message: number,
    secretNonce: number,
    ciphertext: number,
    ciphertextLength: number,
    tag: number,
    aad: number,
    aadLength: number,
    nonce: number,
    key: number,
  ) => number;
}

function bind(): LibsodiumNative {
  const library = koffi.load(LIBSODIUM_SONAME);
  const initialise = library.func('int sodium_init()') as () => number;
  if (initialise() < 0) throw new Error('sodium_init() failed');
  const sodium: Sodium = {
    malloc: library.func('uintptr_t sodium_malloc(size_t size)'),
    free: library.func('void sodium_free(uintptr_t pointer)'),
    encryptDetached: library.func(
      'int crypto_aead_chacha20poly1305_ietf_encrypt_detached(uintptr_t c, uintptr_t mac, uintptr_t maclen_p, ' +
        'uintptr_t m, uint64_t mlen, uintptr_t ad, uint64_t adlen, uintptr_t nsec, uintptr_t npub, uintptr_t k)',
    ),
    decryptDetached: library.func(
      'int crypto_aead_chacha20poly1305_ietf_decrypt_detached(uintptr_t m, uintptr_t nsec, uintptr_t c, ' +
        'uint64_t clen, uintptr_t mac, uintptr_t ad, uint64_t adlen, uintptr_t npub, uintptr_t k)',
    ),
  };

  const nonceAead: NonceAead = {
    seal: (key, nonce, plaintext, aad) => sealWithNonce(sodium, key, nonce, plaintext, aad),
    open: (key, nonce, ciphertext, aad) => openWithNonce(sodium, key, nonce, ciphertext, aad),
  };
  const provider = cryptoProviderFromNonceAead(
    'libsodium-native',
    nonceAead,
    (key) => new LibsodiumTransportAead(sodium, key),
  );
  return { provider, nonceAead };
}

class LibsodiumTransportAead implements TransportAead {
  readonly #sodium: Sodium;
  #keyAddress: number;
  readonly #nonce = new Uint8Array(AEAD_NONCE_LENGTH);
  readonly #nonceView = new DataView(this.#nonce.buffer);
  readonly #nonceAddress: number;

  constructor(sodium: Sodium, key: Uint8Array) {
    checkTransportKey(key);
    this.#sodium = sodium;
    this.#nonceAddress = addressInView(this.#nonce, 0, AEAD_NONCE_LENGTH);
    this.#keyAddress = sodium.malloc(AEAD_KEY_LENGTH);
    if (this.#keyAddress === 0) throw new Error('sodium_malloc failed');
    new Uint8Array(koffi.view(this.#keyAddress, AEAD_KEY_LENGTH)).set(key);
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
    const key = this.#liveKey();
    const input = addressInView(src, srcOffset, length);
    const output = addressInView(dst, dstOffset, length + AEAD_TAG_LENGTH);
    setCounterNonce(this.#nonceView, counterLow, counterHigh);
    this.#sodium.encryptDetached(
      output,
      output + length,
      0,
      input,
      length,
      0,
      0,
      0,
      this.#nonceAddress,
      key,
    );
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
    const key = this.#liveKey();
    const plaintextLength = transportPlaintextLength(length);
    if (plaintextLength < 0) return -1;
    const input = addressInView(src, srcOffset, length);
    const output = addressInView(dst, dstOffset, plaintextLength);
    setCounterNonce(this.#nonceView, counterLow, counterHigh);
    const result = this.#sodium.decryptDetached(
      output,
      0,
      input,
      plaintextLength,
      input + plaintextLength,
      0,
      0,
      this.#nonceAddress,
      key,
    );
    return result === 0 ? plaintextLength : -1;
  }

  destroy(): void {
    if (this.#keyAddress !== 0) this.#sodium.free(this.#keyAddress);
    this.#keyAddress = 0;
  }

  #liveKey(): number {
    if (this.#keyAddress === 0) throw new Error('transport AEAD used after destroy()');
    return this.#keyAddress;
  }
}

function sealWithNonce(
  sodium: Sodium,
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  checkAeadKeyAndNonce(key, nonce);
  const sealed = new Uint8Array(plaintext.length + AEAD_TAG_LENGTH);
  return keepingReachable([key, nonce, plaintext, aad, sealed], () => {
    const output = addressInView(sealed, 0, sealed.length);
    sodium.encryptDetached(
      output,
      output + plaintext.length,
      0,
      addressInView(plaintext, 0, plaintext.length),
      plaintext.length,
      addressInView(aad, 0, aad.length),
      aad.length,
      0,
      addressInView(nonce, 0, AEAD_NONCE_LENGTH),
      addressInView(key, 0, AEAD_KEY_LENGTH),
    );
    return sealed;
  });
}

function openWithNonce(
  sodium: Sodium,
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array,
): Uint8Array | null {
  checkAeadKeyAndNonce(key, nonce);
  if (ciphertext.length < AEAD_TAG_LENGTH) return null;
  const plaintextLength = ciphertext.length - AEAD_TAG_LENGTH;
  const opened = new Uint8Array(plaintextLength);
  return keepingReachable([key, nonce, ciphertext, aad, opened], () => {
    const input = addressInView(ciphertext, 0, ciphertext.length);
    const result = sodium.decryptDetached(
      addressInView(opened, 0, plaintextLength),
      0,
      input,
      plaintextLength,
      input + plaintextLength,
      addressInView(aad, 0, aad.length),
      aad.length,
      addressInView(nonce, 0, AEAD_NONCE_LENGTH),
      addressInView(key, 0, AEAD_KEY_LENGTH),
    );
    return result === 0 ? opened : null;
  });
}
