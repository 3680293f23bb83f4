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

  /**
   * An initiation with zero MACs, or undefined if the remote key is unusable.
   * `ephemeralPrivateKey` is wiped; the state keeps its own copy.
   */
  createInitiation(
    remote: RemoteKeys,
    localIndex: number,
    wallClockMs: number,
    ephemeralPrivateKey: Uint8Array,
  ): { message: Uint8Array; state: InitiatorState } | undefined {
    const scratch = new Scratch(ephemeralPrivateKey);
    try {
      let h = scratch.keep(hash(INITIAL_HASH, remote.publicKey));
      const ephemeral = publicKey(ephemeralPrivateKey);
      let c = scratch.keep(kdf1(INITIAL_CHAIN_KEY, ephemeral));
      h = scratch.keep(hash(h, ephemeral));
      const ephemeralStatic = scratch.keep(dh(ephemeralPrivateKey, remote.publicKey));
      if (ephemeralStatic === null) return undefined;
      let k: Uint8Array;
      [c, k] = scratch.keepAll(kdf2(c, ephemeralStatic));
      const encryptedStatic = this.#crypto.seal(k, 0, this.#local.publicKey, h);
      h = scratch.keep(hash(h, encryptedStatic));
      const staticStatic = scratch.keep(dh(this.#local.privateKey, remote.publicKey));
      if (staticStatic === null) return undefined;
      [c, k] = scratch.keepAll(kdf2(c, staticStatic));
      const encryptedTimestamp = this.#crypto.seal(k, 0, tai64n(wallClockMs), h);
      h = scratch.keep(hash(h, encryptedTimestamp));
      const message = writeInitiation({
        senderIndex: localIndex,
        ephemeral,
        encryptedStatic,
        encryptedTimestamp,
      });
      const state = {
        localIndex,
        ephemeralPrivateKey: ephemeralPrivateKey.slice(),
        chainKey: c.slice(),
        hash: h.slice(),
      };
      return { message, state };
    } finally {
      scratch.wipe();
    }
  }

  /** Decrypts an initiation addressed to us; undefined if it does not authenticate. */
  consumeInitiation(message: Uint8Array): ConsumedInitiation | undefined {
    const fields = readInitiation(message);
    const remoteEphemeral = new Uint8Array(fields.ephemeral);
    const scratch = new Scratch();
    try {
      let c = scratch.keep(kdf1(INITIAL_CHAIN_KEY, remoteEphemeral));
      let h = scratch.keep(hash(this.#responderHash, remoteEphemeral));
      const ephemeralStatic = scratch.keep(dh(this.#local.privateKey, remoteEphemeral));
      if (ephemeralStatic === null) return undefined;
      let k: Uint8Array;
      [c, k] = scratch.keepAll(kdf2(c, ephemeralStatic));
      const remoteStatic = this.#crypto.open(k, 0, fields.encryptedStatic, h);
      if (remoteStatic === null || remoteStatic.length !== KEY_LENGTH) return undefined;
      h = scratch.keep(hash(h, fields.encryptedStatic));
      const staticStatic = scratch.keep(dh(this.#local.privateKey, remoteStatic));
      if (staticStatic === null) return undefined;
      [c, k] = scratch.keepAll(kdf2(c, staticStatic));
      const timestamp = this.#crypto.open(k, 0, fields.encryptedTimestamp, h);
      if (timestamp === null) return undefined;
      h = scratch.keep(hash(h, fields.encryptedTimestamp));
      return {
        remoteIndex: fields.senderIndex,
        remoteStatic,
        remoteEphemeral,
        timestamp,
        chainKey: c.slice(),
        hash: h.slice(),
      };
    } finally {
      scratch.wipe();
    }
  }

  /**
   * The response to an accepted initiation (zero MACs) and the responder's
   * transport keys. `ephemeralPrivateKey` is wiped.
   */
  createResponse(
    initiation: ConsumedInitiation,
    presharedKey: Uint8Array,
    localIndex: number,
    ephemeralPrivateKey: Uint8Array,
  ): { message: Uint8Array; keys: TransportKeys } | undefined {
    const scratch = new Scratch(ephemeralPrivateKey);
    try {
      const ephemeral = publicKey(ephemeralPrivateKey);
      let c = scratch.keep(kdf1(initiation.chainKey, ephemeral));
      let h = scratch.keep(hash(initiation.hash, ephemeral));
      const ephemeralEphemeral = scratch.keep(dh(ephemeralPrivateKey, initiation.remoteEphemeral));
      const ephemeralStatic = scratch.keep(dh(ephemeralPrivateKey, initiation.remoteStatic));
      if (ephemeralEphemeral === null || ephemeralStatic === null) return undefined;
      c = scratch.keep(kdf1(c, ephemeralEphemeral));
      c = scratch.keep(kdf1(c, ephemeralStatic));
      const [c2, tau, k] = scratch.keepAll(kdf3(c, presharedKey));
      h = scratch.keep(hash(h, tau));
      const encryptedNothing = this.#crypto.seal(k, 0, EMPTY, h);
      const [receiveKey, sendKey] = kdf2(c2, EMPTY);
      const message = writeResponse({
        senderIndex: localIndex,
        receiverIndex: initiation.remoteIndex,
        ephemeral,
        encryptedNothing,
      });
      return { message, keys: { sendKey, receiveKey } };
    } finally {
      scratch.wipe();
    }
  }

  /** The initiator's transport keys, or undefined if the response does not authenticate. */
  consumeResponse(
    state: InitiatorState,
    remote: RemoteKeys,
    message: Uint8Array,
  ): TransportKeys | undefined {
    const fields = readResponse(message);
    const scratch = new Scratch();
    try {
      let c = scratch.keep(kdf1(state.chainKey, fields.ephemeral));
      let h = scratch.keep(hash(state.hash, fields.ephemeral));
      const ephemeralEphemeral = scratch.keep(dh(state.ephemeralPrivateKey, fields.ephemeral));
      const staticEphemeral = scratch.keep(dh(this.#local.privateKey, fields.ephemeral));
      if (ephemeralEphemeral === null || staticEphemeral === null) return undefined;
      c = scratch.keep(kdf1(c, ephemeralEphemeral));
      c = scratch.keep(kdf1(c, staticEphemeral));
      const [c2, tau, k] = scratch.keepAll(kdf3(c, remote.presharedKey));
      h = scratch.keep(hash(h, tau));
      const nothing = this.#crypto.open(k, 0, fields.encryptedNothing, h);
      if (nothing === null) return undefined;
      const [sendKey, receiveKey] = kdf2(c2, EMPTY);
      return { sendKey, receiveKey };
    } finally {
      scratch.wipe();
    }
  }
}

/**
 * The secrets one handshake step derives on its way (chaining keys, keys,
 * hashes, DH results): wiped however the step returns. What a step hands
 * back is a copy.
 */
class Scratch {
  readonly #secrets: Uint8Array[];

  constructor(...secrets: Uint8Array[]) {
    this.#secrets = secrets;
  }

  keep<T extends Uint8Array | null>(secret: T): T {
    if (secret !== null) this.#secrets.push(secret);
    return secret;
  }

  keepAll<T extends Uint8Array[]>(secrets: T): T {
    this.#secrets.push(...secrets);
    return secrets;
  }

  wipe(): void {
    wipe(...this.#secrets);
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
