/**
 * Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s as WireGuard uses it (whitepaper
 * section 5.4.2 to 5.4.5): building and consuming initiations and
 * responses, and deriving the transport keys.
 *
 * These are pure steps: the caller keeps the state between them, checks
 * MACs (cookie.ts) and timestamps, and chooses the indices.
 */

import { CONSTRUCTION, IDENTIFIER, KEY_LENGTH } from './constants.ts';
import type { CryptoProvider } from './crypto/provider.ts';
import { dh, hash, kdf1, kdf2, kdf3, publicKey } from './crypto/primitives.ts';
import type { KeyPair } from './keys.ts';
import { readInitiation, readResponse, writeInitiation, writeResponse } from './messages.ts';
import { tai64n } from './tai64n.ts';

export interface RemoteKeys {
  publicKey: Uint8Array;
  /** All zeros when the peer has none. */
  presharedKey: Uint8Array;
}

export interface TransportKeys {
  sendKey: Uint8Array;
  receiveKey: Uint8Array;
}

/** What the initiator keeps between sending an initiation and consuming the response. */
export interface InitiatorState {
  localIndex: number;
  ephemeralPrivateKey: Uint8Array;
  chainKey: Uint8Array;
  hash: Uint8Array;
}

/** A decrypted, not yet accepted, initiation. */
export interface ConsumedInitiation {
  remoteIndex: number;
  remoteStatic: Uint8Array;
  remoteEphemeral: Uint8Array;
  timestamp: Uint8Array;
  chainKey: Uint8Array;
  hash: Uint8Array;
}

/** The handshake steps, bound to our static key pair and a crypto provider. */
export class NoiseHandshake {
  readonly #local: KeyPair;
  readonly #crypto: CryptoProvider;
  readonly #responderHash: Uint8Array;

  constructor(local: KeyPair, crypto: CryptoProvider) {
    this.#local = local;
    this.#crypto = crypto;
    this.#responderHash = hash(INITIAL_HASH, local.publicKey);
  }

  /** An initiation with zero MACs, or undefined if the remote key is unusable. */
  createInitiation(
    remote: RemoteKeys,
    localIndex: number,
    wallClockMs: number,
    ephemeralPrivateKey: Uint8Array,
  ): { message: Uint8Array; state: InitiatorState } | undefined {
    let h = hash(INITIAL_HASH, remote.publicKey);
    const ephemeral = publicKey(ephemeralPrivateKey);
    let c = kdf1(INITIAL_CHAIN_KEY, ephemeral);
    h = hash(h, ephemeral);
    const ephemeralStatic = dh(ephemeralPrivateKey, remote.publicKey);
    if (ephemeralStatic === null) return undefined;
    let k: Uint8Array;
    [c, k] = kdf2(c, ephemeralStatic);
    const encryptedStatic = this.#crypto.seal(k, 0, this.#local.publicKey, h);
    h = hash(h, encryptedStatic);
    const staticStatic = dh(this.#local.privateKey, remote.publicKey);
    if (staticStatic === null) return undefined;
    [c, k] = kdf2(c, staticStatic);
    const encryptedTimestamp = this.#crypto.seal(k, 0, tai64n(wallClockMs), h);
    h = hash(h, encryptedTimestamp);
    wipe(ephemeralStatic, staticStatic, k);
    const message = writeInitiation({
      senderIndex: localIndex,
      ephemeral,
      encryptedStatic,
      encryptedTimestamp,
    });
    return { message, state: { localIndex, ephemeralPrivateKey, chainKey: c, hash: h } };
  }

  /** Decrypts an initiation addressed to us; undefined if it does not authenticate. */
  consumeInitiation(message: Uint8Array): ConsumedInitiation | undefined {
    const fields = readInitiation(message);
    const remoteEphemeral = new Uint8Array(fields.ephemeral);
    let h = this.#responderHash;
    let c = kdf1(INITIAL_CHAIN_KEY, remoteEphemeral);
    h = hash(h, remoteEphemeral);
    const ephemeralStatic = dh(this.#local.privateKey, remoteEphemeral);
    if (ephemeralStatic === null) return undefined;
    let k: Uint8Array;
    [c, k] = kdf2(c, ephemeralStatic);
    const remoteStatic = this.#crypto.open(k, 0, fields.encryptedStatic, h);
    if (remoteStatic === null || remoteStatic.length !== KEY_LENGTH) return undefined;
    h = hash(h, fields.encryptedStatic);
    const staticStatic = dh(this.#local.privateKey, remoteStatic);
    if (staticStatic === null) return undefined;
    [c, k] = kdf2(c, staticStatic);
    const timestamp = this.#crypto.open(k, 0, fields.encryptedTimestamp, h);
    if (timestamp === null) return undefined;
    h = hash(h, fields.encryptedTimestamp);
    wipe(ephemeralStatic, staticStatic, k);
    return {
      remoteIndex: fields.senderIndex,
      remoteStatic,
      remoteEphemeral,
      timestamp,
      chainKey: c,
      hash: h,
    };
  }

  /** The response to an accepted initiation (zero MACs) and the responder's transport keys. */
  createResponse(
    initiation: ConsumedInitiation,
    presharedKey: Uint8Array,
    localIndex: number,
    ephemeralPrivateKey: Uint8Array,
  ): { message: Uint8Array; keys: TransportKeys } | undefined {
    const ephemeral = publicKey(ephemeralPrivateKey);
    let c = kdf1(initiation.chainKey, ephemeral);
    let h = hash(initiation.hash, ephemeral);
    const ephemeralEphemeral = dh(ephemeralPrivateKey, initiation.remoteEphemeral);
    const ephemeralStatic = dh(ephemeralPrivateKey, initiation.remoteStatic);
    if (ephemeralEphemeral === null || ephemeralStatic === null) return undefined;
    c = kdf1(c, ephemeralEphemeral);
    c = kdf1(c, ephemeralStatic);
    const [c2, tau, k] = kdf3(c, presharedKey);
    h = hash(h, tau);
    const encryptedNothing = this.#crypto.seal(k, 0, EMPTY, h);
    const [receiveKey, sendKey] = kdf2(c2, EMPTY);
    wipe(ephemeralEphemeral, ephemeralStatic, c, c2, tau, k, ephemeralPrivateKey);
    const message = writeResponse({
      senderIndex: localIndex,
      receiverIndex: initiation.remoteIndex,
      ephemeral,
      encryptedNothing,
    });
    return { message, keys: { sendKey, receiveKey } };
  }

  /** The initiator's transport keys, or undefined if the response does not authenticate. */
  consumeResponse(
    state: InitiatorState,
    remote: RemoteKeys,
    message: Uint8Array,
  ): TransportKeys | undefined {
    const fields = readResponse(message);
    let c = kdf1(state.chainKey, fields.ephemeral);
    let h = hash(state.hash, fields.ephemeral);
    const ephemeralEphemeral = dh(state.ephemeralPrivateKey, fields.ephemeral);
    const staticEphemeral = dh(this.#local.privateKey, fields.ephemeral);
    if (ephemeralEphemeral === null || staticEphemeral === null) return undefined;
    c = kdf1(c, ephemeralEphemeral);
    c = kdf1(c, staticEphemeral);
    const [c2, tau, k] = kdf3(c, remote.presharedKey);
    h = hash(h, tau);
    const nothing = this.#crypto.open(k, 0, fields.encryptedNothing, h);
    wipe(ephemeralEphemeral, staticEphemeral, c, tau, k);
    if (nothing === null) {
      wipe(c2);
      return undefined;
    }
    const [sendKey, receiveKey] = kdf2(c2, EMPTY);
    wipe(c2);
    return { sendKey, receiveKey };
  }
}

export function wipeInitiatorState(state: InitiatorState): void {
  wipe(state.ephemeralPrivateKey, state.chainKey, state.hash);
}

export function wipeConsumedInitiation(initiation: ConsumedInitiation): void {
  wipe(initiation.chainKey, initiation.hash);
}

const EMPTY = new Uint8Array(0);
const INITIAL_CHAIN_KEY = hash(new TextEncoder().encode(CONSTRUCTION));
const INITIAL_HASH = hash(INITIAL_CHAIN_KEY, new TextEncoder().encode(IDENTIFIER));

function wipe(...secrets: Uint8Array[]): void {
  for (const secret of secrets) secret.fill(0);
}
