export type { CryptoProvider, CryptoProviderName, TransportAead } from './provider.ts';
export type { CryptoProviderPreference, CryptoProviderSelection } from './select.ts';
export { CRYPTO_PROVIDER_ENV, selectCryptoProvider } from './select.ts';
export type { NonceAead } from './chacha20poly1305.ts';
export { AEAD_KEY_LENGTH, AEAD_NONCE_LENGTH, AEAD_TAG_LENGTH } from './chacha20poly1305.ts';
export {
  HASH_LENGTH,
  KEY_LENGTH,
  MAC_LENGTH,
  XAEAD_NONCE_LENGTH,
  constantTimeEqual,
  dh,
  generatePrivateKey,
  hash,
  hmac,
  kdf1,
  kdf2,
  kdf3,
  mac,
  publicKey,
  randomBytes,
  xaeadOpen,
  xaeadSeal,
} from './primitives.ts';
export { loadLibsodiumNative } from './libsodium-native.ts';
export { loadOpensslNative } from './openssl-native.ts';
