/**
 * The seam between WireGuard and the ChaCha20-Poly1305 implementations.
 *
 * Only the AEAD differs between providers: it is the one primitive that runs
 * per packet. Handshake-only primitives (BLAKE2s, HMAC, X25519, keyed
 * BLAKE2s-128, XChaCha20-Poly1305) live in `primitives.ts` and are shared.
 *
 * Every provider must produce identical bytes for identical inputs.
 */

export type CryptoProviderName = 'openssl-native' | 'libsodium-native' | 'libsodium-wasm';

/**
 * A ChaCha20-Poly1305 context bound to one 32-byte key, for the transport
 * path. The nonce is WireGuard's: 4 zero bytes then the 64-bit counter,
 * little-endian, passed as two unsigned 32-bit halves so the hot path never
 * builds a BigInt. There is no additional data on the transport path.
 *
 * Buffers are (view, offset, length) triples so callers can work inside
 * preallocated (Shared)ArrayBuffer slots; `dst` may be the same memory as
 * `src` at the same offset (in-place).
 */
export interface TransportAead {
  /** Writes ciphertext || 16-byte tag at dst[dstOffset]; returns bytes written (length + 16). */
  seal(
    counterLow: number,
    counterHigh: number,
    src: Uint8Array,
    srcOffset: number,
    length: number,
    dst: Uint8Array,
    dstOffset: number,
  ): number;
  /**
   * Opens ciphertext || tag of `length` bytes (length >= 16); writes the
   * plaintext at dst[dstOffset]. Returns the plaintext length, or -1 when
   * authentication fails (dst content is then unspecified).
   */
  open(
    counterLow: number,
    counterHigh: number,
    src: Uint8Array,
    srcOffset: number,
    length: number,
    dst: Uint8Array,
    dstOffset: number,
  ): number;
  /** Zeroes and frees the key material. The context must not be used afterwards. */
  destroy(): void;
}

export interface CryptoProvider {
  readonly name: CryptoProviderName;
  /** A pre-keyed transport context; the caller may zero its copy of `key` afterwards. */
  transportAead(key: Uint8Array): TransportAead;
  /** One-shot ChaCha20-Poly1305 with a 64-bit counter nonce and additional data (handshake path). */
  seal(key: Uint8Array, counter: number, plaintext: Uint8Array, aad: Uint8Array): Uint8Array;
  /** One-shot open; null when authentication fails. */
  open(
    key: Uint8Array,
    counter: number,
    ciphertext: Uint8Array,
    aad: Uint8Array,
  ): Uint8Array | null;
}
