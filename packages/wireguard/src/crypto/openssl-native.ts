/**
 * ChaCha20-Poly1305 through the OpenSSL built into the Node binary, whose
 * EVP_* symbols `koffi.load(null)` resolves. Never load the system's
 * libcrypto instead: two OpenSSL versions in one process crash.
 *
 * A transport context keys one EVP context per direction once; per packet
 * only the nonce is set. Pointer parameters are declared `uintptr_t` and get
 * plain numbers (addressInView, from @gatehouse/libc).
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

export interface OpensslNative {
  provider: CryptoProvider;
  /** RFC 8439 with an arbitrary nonce and additional data, for vectors and self-tests. */
  nonceAead: NonceAead;
}

/** Binds OpenSSL's EVP functions; throws when the Node binary does not export them. */
export function loadOpensslNative(): OpensslNative {
  loaded ??= bind();
  return loaded;
}

let loaded: OpensslNative | undefined;

// From OpenSSL's evp.h.
const EVP_CTRL_AEAD_SET_IVLEN = 0x9;
const EVP_CTRL_AEAD_GET_TAG = 0x10;
const EVP_CTRL_AEAD_SET_TAG = 0x11;

interface Evp {
  newContext: () => number;
  freeContext: (ctx: number) => void;
  cipher: number;
  encryptInit: (ctx: number, cipher: number, engine: number, key: number, iv: number) => number;
  encryptUpdate: (
    ctx: number,
    out: number,
    outLength: number,
    input: number,
    inputLength: number,
  ) => number;
  encryptFinal: (ctx: number, out: number, outLength: number) => number;
  decryptInit: (ctx: number, cipher: number, engine: number, key: number, iv: number) => number;
  decryptUpdate: (
    ctx: number,
    out: number,
    outLength: number,
    input: number,
    inputLength: number,
  ) => number;
  decryptFinal: (ctx: number, out: number, outLength: number) => number;
  control: (ctx: number, type: number, arg: number, pointer: number) => number;
  clearErrors: () => void;
}

function bind(): OpensslNative {
  const node = koffi.load(null);
  const evp: Evp = {
    newContext: node.func('uintptr_t EVP_CIPHER_CTX_new()'),
    freeContext: node.func('void EVP_CIPHER_CTX_free(uintptr_t ctx)'),
    cipher: (node.func('uintptr_t EVP_chacha20_poly1305()') as () => number)(),
    encryptInit: node.func(
      'int EVP_EncryptInit_ex(uintptr_t ctx, uintptr_t cipher, uintptr_t engine, uintptr_t key, uintptr_t iv)',
    ),
    encryptUpdate: node.func(
      'int EVP_EncryptUpdate(uintptr_t ctx, uintptr_t out, uintptr_t outl, uintptr_t in, int inl)',
    ),
    encryptFinal: node.func(
      'int EVP_EncryptFinal_ex(uintptr_t ctx, uintptr_t out, uintptr_t outl)',
    ),
    decryptInit: node.func(
      'int EVP_DecryptInit_ex(uintptr_t ctx, uintptr_t cipher, uintptr_t engine, uintptr_t key, uintptr_t iv)',
    ),
    decryptUpdate: node.func(
      'int EVP_DecryptUpdate(uintptr_t ctx, uintptr_t out, uintptr_t outl, uintptr_t in, int inl)',
    ),
    decryptFinal: node.func(
      'int EVP_DecryptFinal_ex(uintptr_t ctx, uintptr_t out, uintptr_t outl)',
    ),
    control: node.func('int EVP_CIPHER_CTX_ctrl(uintptr_t ctx, int type, int arg, uintptr_t ptr)'),
    clearErrors: node.func('void ERR_clear_error()'),
  };
  if (evp.cipher === 0) throw new Error('EVP_chacha20_poly1305() returned NULL');

  const nonceAead: NonceAead = {
    seal: (key, nonce, plaintext, aad) => sealWithNonce(evp, key, nonce, plaintext, aad),
    open: (key, nonce, ciphertext, aad) => openWithNonce(evp, key, nonce, ciphertext, aad),
  };
  const provider = cryptoProviderFromNonceAead(
    'openssl-native',
    nonceAead,
    (key) => new OpensslTransportAead(evp, key),
  );
  return { provider, nonceAead };
}

class OpensslTransportAead implements TransportAead {
  readonly #evp: Evp;
  #sealContext: number;
  #openContext: number;
  // Nonce and the int that EVP_*Update/Final write their output length to,
  // kept in one buffer so both addresses come from one lookup.
  readonly #scratch = new Uint8Array(AEAD_NONCE_LENGTH + 4);
  readonly #scratchView = new DataView(this.#scratch.buffer);
  readonly #nonceAddress: number;
  readonly #outLengthAddress: number;

  constructor(evp: Evp, key: Uint8Array) {
    checkTransportKey(key);
    this.#evp = evp;
    this.#nonceAddress = addressInView(this.#scratch, 0, AEAD_NONCE_LENGTH);
    this.#outLengthAddress = this.#nonceAddress + AEAD_NONCE_LENGTH;
    this.#sealContext = keyedContext(evp, evp.encryptInit, key);
    try {
      this.#openContext = keyedContext(evp, evp.decryptInit, key);
    } catch (error) {
      evp.freeContext(this.#sealContext);
      throw error;
    }
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
    const evp = this.#evp;
    const ctx = this.#liveContext(this.#sealContext);
    const input = addressInView(src, srcOffset, length);
    const output = addressInView(dst, dstOffset, length + AEAD_TAG_LENGTH);
    setCounterNonce(this.#scratchView, counterLow, counterHigh);
    const outLength = this.#outLengthAddress;
    const ok =
      evp.encryptInit(ctx, 0, 0, 0, this.#nonceAddress) === 1 &&
      (length === 0 || evp.encryptUpdate(ctx, output, outLength, input, length) === 1) &&
      evp.encryptFinal(ctx, output + length, outLength) === 1 &&
      evp.control(ctx, EVP_CTRL_AEAD_GET_TAG, AEAD_TAG_LENGTH, output + length) === 1;
    if (!ok) throw opensslFailure(evp, 'seal');
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
    const evp = this.#evp;
    const ctx = this.#liveContext(this.#openContext);
    const plaintextLength = transportPlaintextLength(length);
    if (plaintextLength < 0) return -1;
    const input = addressInView(src, srcOffset, length);
    const output = addressInView(dst, dstOffset, plaintextLength);
    setCounterNonce(this.#scratchView, counterLow, counterHigh);
    const outLength = this.#outLengthAddress;
    if (
      evp.decryptInit(ctx, 0, 0, 0, this.#nonceAddress) !== 1 ||
      evp.control(ctx, EVP_CTRL_AEAD_SET_TAG, AEAD_TAG_LENGTH, input + plaintextLength) !== 1 ||
      (plaintextLength !== 0 &&
        evp.decryptUpdate(ctx, output, outLength, input, plaintextLength) !== 1)
    ) {
      throw opensslFailure(evp, 'open');
    }
    if (evp.decryptFinal(ctx, output + plaintextLength, outLength) !== 1) {
      // A forged packet must not leave an entry in OpenSSL's per-thread error queue.
      evp.clearErrors();
      return -1;
    }
    return plaintextLength;
  }

  destroy(): void {
    // EVP_CIPHER_CTX_free cleanses the key schedule before freeing it.
    if (this.#sealContext !== 0) this.#evp.freeContext(this.#sealContext);
    if (this.#openContext !== 0) this.#evp.freeContext(this.#openContext);
    this.#sealContext = 0;
    this.#openContext = 0;
  }

  #liveContext(ctx: number): number {
    if (ctx === 0) throw new Error('transport AEAD used after destroy()');
    return ctx;
  }
}

type InitFunction = Evp['encryptInit'];

/** A fresh context for ChaCha20-Poly1305 holding `key`; the nonce is set per use. */
function keyedContext(evp: Evp, init: InitFunction, key: Uint8Array): number {
  const ctx = evp.newContext();
  if (ctx === 0) throw new Error('EVP_CIPHER_CTX_new failed');
  const keyCopy = Uint8Array.from(key);
  try {
    const ok =
      init(ctx, evp.cipher, 0, 0, 0) === 1 &&
      evp.control(ctx, EVP_CTRL_AEAD_SET_IVLEN, AEAD_NONCE_LENGTH, 0) === 1 &&
      init(ctx, 0, 0, addressInView(keyCopy, 0, AEAD_KEY_LENGTH), 0) === 1;
    if (!ok) {
      evp.freeContext(ctx);
      throw opensslFailure(evp, 'key setup');
    }
    return ctx;
  } finally {
    keyCopy.fill(0);
  }
}

function sealWithNonce(
  evp: Evp,
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  checkAeadKeyAndNonce(key, nonce);
  const sealed = new Uint8Array(plaintext.length + AEAD_TAG_LENGTH);
  const outLength = new Uint8Array(4);
  return keepingReachable([key, nonce, plaintext, aad, sealed, outLength], () => {
    const ctx = keyedContext(evp, evp.encryptInit, key);
    try {
      const output = addressInView(sealed, 0, sealed.length);
      const outLengthAddress = addressInView(outLength, 0, 4);
      const ok =
        evp.encryptInit(ctx, 0, 0, 0, addressInView(nonce, 0, AEAD_NONCE_LENGTH)) === 1 &&
        (aad.length === 0 ||
          evp.encryptUpdate(
            ctx,
            0,
            outLengthAddress,
            addressInView(aad, 0, aad.length),
            aad.length,
          ) === 1) &&
        (plaintext.length === 0 ||
          evp.encryptUpdate(
            ctx,
            output,
            outLengthAddress,
            addressInView(plaintext, 0, plaintext.length),
            plaintext.length,
          ) === 1) &&
        evp.encryptFinal(ctx, output + plaintext.length, outLengthAddress) === 1 &&
        evp.control(ctx, EVP_CTRL_AEAD_GET_TAG, AEAD_TAG_LENGTH, output + plaintext.length) === 1;
      if (!ok) throw opensslFailure(evp, 'seal');
      return sealed;
    } finally {
      evp.freeContext(ctx);
    }
  });
}

function openWithNonce(
  evp: Evp,
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array,
): Uint8Array | null {
  checkAeadKeyAndNonce(key, nonce);
  if (ciphertext.length < AEAD_TAG_LENGTH) return null;
  const plaintextLength = ciphertext.length - AEAD_TAG_LENGTH;
  // One spare byte so the output address is valid even for an empty plaintext.
  const opened = new Uint8Array(plaintextLength + 1);
  const outLength = new Uint8Array(4);
  return keepingReachable([key, nonce, ciphertext, aad, opened, outLength], () => {
    const ctx = keyedContext(evp, evp.decryptInit, key);
    try {
      const input = addressInView(ciphertext, 0, ciphertext.length);
      const output = addressInView(opened, 0, opened.length);
      const outLengthAddress = addressInView(outLength, 0, 4);
      const ok =
        evp.decryptInit(ctx, 0, 0, 0, addressInView(nonce, 0, AEAD_NONCE_LENGTH)) === 1 &&
        evp.control(ctx, EVP_CTRL_AEAD_SET_TAG, AEAD_TAG_LENGTH, input + plaintextLength) === 1 &&
        (aad.length === 0 ||
          evp.decryptUpdate(
            ctx,
            0,
            outLengthAddress,
            addressInView(aad, 0, aad.length),
            aad.length,
          ) === 1) &&
        (plaintextLength === 0 ||
          evp.decryptUpdate(ctx, output, outLengthAddress, input, plaintextLength) === 1);
      if (!ok) throw opensslFailure(evp, 'open');
      if (evp.decryptFinal(ctx, output + plaintextLength, outLengthAddress) !== 1) {
        evp.clearErrors();
        opened.fill(0);
        return null;
      }
      return opened.subarray(0, plaintextLength);
    } finally {
      evp.freeContext(ctx);
    }
  });
}

function opensslFailure(evp: Evp, operation: string): Error {
  evp.clearErrors();
  return new Error(`OpenSSL ChaCha20-Poly1305 ${operation} failed`);
}
