/**
 * Chooses the ChaCha20-Poly1305 provider for this process.
 *
 * `auto` prefers the fastest: openssl-native (OpenSSL inside the Node
 * binary), then libsodium-native (system libsodium), then libsodium-wasm,
 * which always works. A candidate is only chosen after it reproduces known
 * ciphertexts through both its nonce API and its transport path and rejects
 * a forged tag. The WebAssembly build is imported only when selection gets
 * to it: instantiating it costs every thread tens of megabytes.
 *
 * When no preference is passed, the environment variable
 * GATEHOUSE_CRYPTO_PROVIDER (`auto` or a provider name) supplies one, so an
 * operator can pin a provider while diagnosing a machine without a config
 * change. An explicit argument always wins over the environment.
 */

import type { NonceAead } from './chacha20poly1305.ts';
import { LIBSODIUM_SONAME, loadLibsodiumNative } from './libsodium-native.ts';
import { loadOpensslNative } from './openssl-native.ts';
import { constantTimeEqual } from './primitives.ts';
import type { CryptoProvider, CryptoProviderName } from './provider.ts';

export type CryptoProviderPreference = CryptoProviderName | 'auto';

export const CRYPTO_PROVIDER_ENV = 'GATEHOUSE_CRYPTO_PROVIDER';

export interface CryptoProviderSelection {
  provider: CryptoProvider;
  /** One line for the service log: what was chosen and why the others were not. */
  reason: string;
}

export async function selectCryptoProvider(
  preference?: CryptoProviderPreference,
): Promise<CryptoProviderSelection> {
  return selectFromCandidates(PROVIDER_CANDIDATES, preference, process.env[CRYPTO_PROVIDER_ENV]);
}

export interface LoadedProvider {
  provider: CryptoProvider;
  nonceAead: NonceAead;
}

/** A provider that selection may pick, with how to load it. */
export interface ProviderCandidate {
  name: CryptoProviderName;
  description: string;
  /** Throws (or rejects) when the provider cannot be used on this machine. */
  load: () => LoadedProvider | Promise<LoadedProvider>;
}

/** The selection logic over an explicit candidate list, fastest first (tests substitute failing ones). */
export async function selectFromCandidates(
  candidates: readonly ProviderCandidate[],
  preference: CryptoProviderPreference | undefined,
  environmentPreference: string | undefined,
): Promise<CryptoProviderSelection> {
  const fromEnvironment = preference === undefined ? environmentPreference : undefined;
  const wanted = preference ?? (fromEnvironment || 'auto');
  const source = fromEnvironment ? ` (from ${CRYPTO_PROVIDER_ENV})` : '';

  if (wanted === 'auto') return selectAutomatically(candidates, source);

  const candidate = candidates.find((c) => c.name === wanted);
  if (candidate === undefined) {
    const known = ['auto', ...candidates.map((c) => c.name)].join(', ');
    throw new Error(
      `unknown crypto provider '${String(wanted)}'${source}; expected one of: ${known}`,
    );
  }
  const outcome = await tryCandidate(candidate);
  if (typeof outcome === 'string') {
    throw new Error(
      `crypto provider '${candidate.name}' was requested${source} but is unavailable: ${outcome}`,
    );
  }
  return {
    provider: outcome,
    reason: `${candidate.name}: requested${source}; ${candidate.description}`,
  };
}

export const PROVIDER_CANDIDATES: readonly ProviderCandidate[] = [
  {
    name: 'openssl-native',
    description: "OpenSSL's EVP ChaCha20-Poly1305 from the Node binary",
    load: loadOpensslNative,
  },
  {
    name: 'libsodium-native',
    description: `native ${LIBSODIUM_SONAME}`,
    load: loadLibsodiumNative,
  },
  {
    name: 'libsodium-wasm',
    description: 'portable libsodium WebAssembly build',
    load: async () => {
      const wasm = await import('./libsodium-wasm.ts');
      return { provider: wasm.libsodiumWasmProvider, nonceAead: wasm.libsodiumWasmNonceAead };
    },
  },
];

async function selectAutomatically(
  candidates: readonly ProviderCandidate[],
  source: string,
): Promise<CryptoProviderSelection> {
  const skipped: string[] = [];
  for (const candidate of candidates) {
    const outcome = await tryCandidate(candidate);
    if (typeof outcome === 'string') {
      skipped.push(`${candidate.name} skipped: ${outcome}`);
      continue;
    }
    const why = skipped.length === 0 ? 'the fastest, passed its self-test' : skipped.join('; ');
    return {
      provider: outcome,
      reason: `${candidate.name}: auto${source}, ${candidate.description}; ${why}`,
    };
  }
  throw new Error(`no usable crypto provider: ${skipped.join('; ')}`);
}

/** The provider, or why it cannot be used. */
async function tryCandidate(candidate: ProviderCandidate): Promise<CryptoProvider | string> {
  let loaded: LoadedProvider;
  try {
    loaded = await candidate.load();
  } catch (error) {
    return `failed to load (${error instanceof Error ? error.message : String(error)})`;
  }
  try {
    const failure = selfTestFailure(loaded.provider, loaded.nonceAead);
    return failure === undefined ? loaded.provider : `self-test failed: ${failure}`;
  } catch (error) {
    return `self-test threw (${error instanceof Error ? error.message : String(error)})`;
  }
}

// RFC 8439 section 2.8.2.
const RFC8439_KEY = fromHex('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f');
const RFC8439_NONCE = fromHex('070000004041424344454647');
const RFC8439_AAD = fromHex('50515253c0c1c2c3c4c5c6c7');
const RFC8439_PLAINTEXT = new TextEncoder().encode(
  "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
);
const RFC8439_SEALED = fromHex(
  'd31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b' +
    '1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc' +
    '3ff4def08e4b7a9de576d26586cec64b6116' +
    '1ae10b594f09e26a7e902ecbd0600691',
);
// The same key and plaintext through the transport path: no additional data,
// counterLow 1 and counterHigh 2, i.e. nonce 00000000 01000000 02000000.
// Computed with Node's createCipheriv; tests compare every provider with it.
const TRANSPORT_SELF_TEST_SEALED = fromHex(
  '093f0c932e692f07eb70765323f200128ed82c64b2cc6ec9b20026f8a365107494fa45fec8f7e74fdbc5ad9d8cf5aa3d' +
    'ebec01fe07c8931d6c4f07a574500a64dbb4bf24948969dff101fc9fe23553292954233cc0b5cf8210422e95a23fcf37' +
    '6b19ec15fddfeb275f1619d5367d48d68da0f1406a7c317030a9738cd3bdb74b35' +
    '94',
);

/** Undefined when the provider reproduces the known answers, else what went wrong. */
function selfTestFailure(provider: CryptoProvider, nonceAead: NonceAead): string | undefined {
  const sealed = nonceAead.seal(RFC8439_KEY, RFC8439_NONCE, RFC8439_PLAINTEXT, RFC8439_AAD);
  if (!constantTimeEqual(sealed, RFC8439_SEALED)) return 'RFC 8439 2.8.2 ciphertext mismatch';
  const opened = nonceAead.open(RFC8439_KEY, RFC8439_NONCE, RFC8439_SEALED, RFC8439_AAD);
  if (opened === null || !constantTimeEqual(opened, RFC8439_PLAINTEXT))
    return 'RFC 8439 2.8.2 open failed';

  const length = RFC8439_PLAINTEXT.length;
  const packet = new Uint8Array(length + 16);
  packet.set(RFC8439_PLAINTEXT);
  const aead = provider.transportAead(RFC8439_KEY);
  try {
    aead.seal(1, 2, packet, 0, length, packet, 0);
    if (!constantTimeEqual(packet, TRANSPORT_SELF_TEST_SEALED))
      return 'transport ciphertext mismatch';
    if (aead.open(1, 2, packet, 0, packet.length, packet, 0) !== length)
      return 'transport open failed';
    if (!constantTimeEqual(packet.subarray(0, length), RFC8439_PLAINTEXT))
      return 'transport open garbled';
    packet.set(TRANSPORT_SELF_TEST_SEALED);
    packet[length]! ^= 1;
    if (aead.open(1, 2, packet, 0, packet.length, packet, 0) !== -1) return 'accepted a forged tag';
  } finally {
    aead.destroy();
  }
  return undefined;
}

function fromHex(hex: string): Uint8Array {
  return Uint8Array.from(Buffer.from(hex, 'hex'));
}
