/**
 * The contract between the control thread (handshakes, timers) and data
 * workers (sealing and opening transport packets), as one SharedArrayBuffer
 * of 32-bit words. README.md ("Worker contract") explains the rules; this
 * file fixes the layout and the few shared-memory steps both sides use.
 *
 * Layout: a header, then `keypairSlots` keypair slots, then `peerSlots`
 * peer slots. Slot counts are powers of two.
 *
 * Writers:
 * - Keypair slots and the keypair pointers of a peer slot are written only
 *   by the control thread, each under its seqlock (odd while writing).
 * - A keypair's send counter block word: any sender (Atomics.add).
 * - A keypair's replay window: whoever holds its receive lock (one
 *   receiving worker per keypair in practice).
 * - A peer's stamps, statistics and signals: any thread, with Atomics.
 * - A peer's endpoint: any thread that authenticated a packet from a new
 *   source, under the endpoint seqlock taken with compareExchange.
 */

import { MAX_CONTENT_SIZE } from './constants.ts';
import { REPLAY_WINDOW_WORDS } from './replay-window.ts';

export interface SharedTransportMemory {
  buffer: SharedArrayBuffer;
  keypairSlots: number;
  peerSlots: number;
}

export interface SharedTransportOptions {
  /** The tunnel MTU: transport padding never takes a packet beyond it. */
  mtu: number;
  capacity?: SharedTransportCapacity;
  /** Send-side rekey threshold (default REKEY_AFTER_MESSAGES, 2^60). */
  rekeyAfterMessages?: number;
}

export interface SharedTransportCapacity {
  /** Peers the device can hold (default 256). */
  peers?: number;
  /** Keypairs and in-flight handshakes together; 4 per peer suffice (default 4 × peers). */
  keypairs?: number;
}

/** Creates the memory for one device; post `memory` to workers as is. */
export function createSharedTransportMemory(
  options: SharedTransportOptions,
): SharedTransportMemory {
  const { capacity = {}, rekeyAfterMessages = 2 ** 60, mtu } = options;
  if (!Number.isInteger(mtu) || mtu < 1 || mtu > MAX_CONTENT_SIZE) {
    throw new RangeError(`MTU must be an integer 1-${MAX_CONTENT_SIZE}, got ${mtu}`);
  }
  const peerSlots = powerOfTwoAtLeast(capacity.peers ?? DEFAULT_PEERS);
  const keypairSlots = powerOfTwoAtLeast(capacity.keypairs ?? peerSlots * 4);
  if (keypairSlots > MAX_KEYPAIR_SLOTS) {
    throw new RangeError(`at most ${MAX_KEYPAIR_SLOTS} keypair slots`);
  }
  const words = HEADER_WORDS + keypairSlots * KEYPAIR_SLOT_WORDS + peerSlots * PEER_SLOT_WORDS;
  const buffer = new SharedArrayBuffer(words * 4);
  const view = new Int32Array(buffer);
  view[H_KEYPAIR_SLOTS] = keypairSlots;
  view[H_PEER_SLOTS] = peerSlots;
  view[H_REKEY_AFTER_MESSAGES_HIGH] = Math.floor(rekeyAfterMessages / 2 ** 32);
  view[H_REKEY_AFTER_MESSAGES_LOW] = rekeyAfterMessages >>> 0;
  view[H_MTU] = mtu;
  for (let peer = 0; peer < peerSlots; peer++) {
    const base = peerBase(keypairSlots, peer);
    view[base + P_CURRENT] = NO_SLOT;
    view[base + P_PREVIOUS] = NO_SLOT;
    view[base + P_NEXT] = NO_SLOT;
  }
  return { buffer, keypairSlots, peerSlots };
}

// Header words.
/** Bumped (Atomics.add) and notified whenever a peer's signal word gains a bit. */
export const H_DOORBELL = 0;
export const H_KEYPAIR_SLOTS = 1;
export const H_PEER_SLOTS = 2;
export const H_REKEY_AFTER_MESSAGES_HIGH = 3;
export const H_REKEY_AFTER_MESSAGES_LOW = 4;
export const H_MTU = 5;
export const HEADER_WORDS = 16;

// Keypair slot words.
export const K_SEQUENCE = 0;
export const K_STATE = 1;
export const K_LOCAL_INDEX = 2;
export const K_REMOTE_INDEX = 3;
export const K_PEER = 4;
export const K_FLAGS = 5;
/** Monotonic ms of the handshake that derived the keys, modulo 2^32. */
export const K_CREATED_MS = 6;
/** Send counters are reserved in blocks of COUNTER_BLOCK_SIZE: Atomics.add(…, 1) returns the block. */
export const K_COUNTER_BLOCK = 7;
/** 0 free, 1 held: guards the replay window. */
export const K_RECEIVE_LOCK = 8;
export const K_SEND_KEY = 16;
export const K_RECEIVE_KEY = 24;
export const K_REPLAY_WINDOW = 32;
export const KEYPAIR_SLOT_WORDS = K_REPLAY_WINDOW + REPLAY_WINDOW_WORDS;

export const KEYPAIR_FREE = 0;
/** The slot's index is taken by a handshake under way; no keys yet. */
export const KEYPAIR_RESERVED = 1;
export const KEYPAIR_LIVE = 2;

export const KEYPAIR_FLAG_INITIATOR = 1;

export const COUNTER_BLOCK_SIZE = 256;

// Peer slot words.
export const P_SEQUENCE = 0;
export const P_CURRENT = 1;
export const P_PREVIOUS = 2;
export const P_NEXT = 3;
/** SIGNAL_* bits for the control thread (Atomics.or to set, Atomics.exchange to take). */
export const P_SIGNALS = 4;
/** Stamps: monotonic ms modulo 2^32, 0 meaning "none" (a real 0 is stored as 1). */
export const P_LAST_SENT_MS = 5;
export const P_LAST_RECEIVED_MS = 6;
/** First data packet sent since the last authenticated packet received. */
export const P_DATA_SENT_UNANSWERED_MS = 7;
/** First data packet received since the last authenticated packet sent. */
export const P_DATA_RECEIVED_UNANSWERED_MS = 8;
/** 64-bit statistics as low/high word pairs (see addToCounter). */
export const P_TX_BYTES = 9;
export const P_RX_BYTES = 11;
export const P_TX_PACKETS = 13;
export const P_RX_PACKETS = 15;
export const P_ENDPOINT_SEQUENCE = 17;
/** Port in the low 16 bits, address length (4 or 16) above. */
export const P_ENDPOINT_PORT_AND_LENGTH = 18;
export const P_ENDPOINT_ADDRESS = 19;
export const PEER_SLOT_WORDS = 24;

export const SIGNAL_HANDSHAKE_NEEDED = 1;
/** A packet arrived on the peer's next keypair: the responder may rotate it to current. */
export const SIGNAL_NEXT_KEYPAIR_CONFIRMED = 2;

export const NO_SLOT = -1;

export function keypairBase(slot: number): number {
  return HEADER_WORDS + slot * KEYPAIR_SLOT_WORDS;
}

export function peerBase(keypairSlots: number, peer: number): number {
  return HEADER_WORDS + keypairSlots * KEYPAIR_SLOT_WORDS + peer * PEER_SLOT_WORDS;
}

export function toStamp(monotonicMs: number): number {
  return Math.floor(monotonicMs) >>> 0 || 1;
}

/** The full monotonic time of a stamp taken within 2^31 ms (about 24 days) of `nowMs`. */
export function fromStamp(stamp: number, nowMs: number): number {
  return nowMs - ((toStamp(nowMs) - stamp) | 0);
}

/** Adds to a 64-bit counter kept as two words, carrying into the high word. */
export function addToCounter(words: Int32Array, at: number, amount: number): void {
  const before = Atomics.add(words, at, amount) >>> 0;
  if (before + amount > 0xffffffff) Atomics.add(words, at + 1, 1);
}

export function readCounter(words: Int32Array, at: number): number {
  for (;;) {
    const high = Atomics.load(words, at + 1) >>> 0;
    const low = Atomics.load(words, at) >>> 0;
    if (Atomics.load(words, at + 1) >>> 0 === high) return high * 2 ** 32 + low;
  }
}

/** Sets signal bits on a peer and rings the doorbell if any bit is new. */
export function raiseSignal(words: Int32Array, peerWordBase: number, bits: number): void {
  const before = Atomics.or(words, peerWordBase + P_SIGNALS, bits);
  if ((before & bits) !== bits) {
    Atomics.add(words, H_DOORBELL, 1);
    Atomics.notify(words, H_DOORBELL);
  }
}

export function beginWrite(words: Int32Array, sequenceAt: number): void {
  Atomics.add(words, sequenceAt, 1);
}

export function endWrite(words: Int32Array, sequenceAt: number): void {
  Atomics.add(words, sequenceAt, 1);
}

/** Writes a peer's endpoint (address bytes 4 or 16, port) under its seqlock. */
export function writeEndpointWords(
  words: Int32Array,
  peerWordBase: number,
  address: Uint8Array,
  port: number,
): void {
  const sequenceAt = peerWordBase + P_ENDPOINT_SEQUENCE;
  for (;;) {
    const sequence = Atomics.load(words, sequenceAt);
    if (
      (sequence & 1) === 0 &&
      Atomics.compareExchange(words, sequenceAt, sequence, sequence + 1) === sequence
    ) {
      break;
    }
  }
  Atomics.store(words, peerWordBase + P_ENDPOINT_PORT_AND_LENGTH, (address.length << 16) | port);
  for (let i = 0; i < 4; i++) {
    const word =
      (address[i * 4] ?? 0) |
      ((address[i * 4 + 1] ?? 0) << 8) |
      ((address[i * 4 + 2] ?? 0) << 16) |
      ((address[i * 4 + 3] ?? 0) << 24);
    Atomics.store(words, peerWordBase + P_ENDPOINT_ADDRESS + i, word);
  }
  Atomics.add(words, sequenceAt, 1);
}

/** Reads a peer's endpoint into `address` (16 bytes); packed as PeerSlots.readEndpoint returns it. */
export function readEndpointWords(
  words: Int32Array,
  peerWordBase: number,
  address: Uint8Array,
): number {
  const sequenceAt = peerWordBase + P_ENDPOINT_SEQUENCE;
  for (;;) {
    const before = Atomics.load(words, sequenceAt);
    if (before === 0) return 0;
    if ((before & 1) !== 0) continue;
    const portAndLength = Atomics.load(words, peerWordBase + P_ENDPOINT_PORT_AND_LENGTH);
    for (let i = 0; i < 4; i++) {
      const word = Atomics.load(words, peerWordBase + P_ENDPOINT_ADDRESS + i);
      address[i * 4] = word & 0xff;
      address[i * 4 + 1] = (word >>> 8) & 0xff;
      address[i * 4 + 2] = (word >>> 16) & 0xff;
      address[i * 4 + 3] = (word >>> 24) & 0xff;
    }
    if (Atomics.load(words, sequenceAt) === before) {
      return portAndLength >>> 16 === 0 ? 0 : portAndLength;
    }
  }
}

/**
 * The peer slots as a data path uses them: whether a peer has a session,
 * asking the control thread for a handshake, and the peer's endpoint
 * (read and roamed under its seqlock). Allocates nothing.
 */
export class PeerSlots {
  readonly #words: Int32Array;
  readonly #keypairSlots: number;

  constructor(memory: SharedTransportMemory) {
    this.#words = new Int32Array(memory.buffer);
    this.#keypairSlots = memory.keypairSlots;
  }

  hasSession(peer: number): boolean {
    return Atomics.load(this.#words, peerBase(this.#keypairSlots, peer) + P_CURRENT) !== NO_SLOT;
  }

  requestHandshake(peer: number): void {
    raiseSignal(this.#words, peerBase(this.#keypairSlots, peer), SIGNAL_HANDSHAKE_NEEDED);
  }

  /** Changes whenever the peer's endpoint is written: a copy read under one version stays valid while it holds. */
  endpointVersion(peer: number): number {
    return Atomics.load(this.#words, peerBase(this.#keypairSlots, peer) + P_ENDPOINT_SEQUENCE);
  }

  /**
   * Reads the peer's endpoint address into `address` (16 bytes); returns
   * the address length (4 or 16) shifted left by 16 with the port below,
   * or 0 when the peer has no endpoint yet (see endpointPort, endpointAddressLength).
   */
  readEndpoint(peer: number, address: Uint8Array): number {
    return readEndpointWords(this.#words, peerBase(this.#keypairSlots, peer), address);
  }

  /** Roaming: `address` (4 or 16 bytes) and `port` become the peer's endpoint. */
  noteEndpoint(peer: number, address: Uint8Array, port: number): void {
    writeEndpointWords(this.#words, peerBase(this.#keypairSlots, peer), address, port);
  }
}

export function endpointPort(packed: number): number {
  return packed & 0xffff;
}

export function endpointAddressLength(packed: number): number {
  return packed >>> 16;
}

/**
 * The word every worker rings after it signals a peer or fills a ring for
 * the control thread, which sleeps on it.
 */
export class Doorbell {
  readonly #words: Int32Array;

  constructor(memory: SharedTransportMemory) {
    this.#words = new Int32Array(memory.buffer);
  }

  ring(): void {
    Atomics.add(this.#words, H_DOORBELL, 1);
    Atomics.notify(this.#words, H_DOORBELL);
  }

  /** The ring count now: pass it to `rungSince` before looking at what the rings carry. */
  get rings(): number {
    return Atomics.load(this.#words, H_DOORBELL);
  }

  /** Resolves once the doorbell rings after `rings` (at once when it already has). */
  async rungSince(rings: number): Promise<void> {
    const waited = Atomics.waitAsync(this.#words, H_DOORBELL, rings);
    if (waited.async) await waited.value;
  }
}

// Atomics.waitAsync is ES2024; the project's TypeScript lib stops at ES2023.
declare global {
  interface Atomics {
    waitAsync(
      typedArray: Int32Array,
      index: number,
      value: number,
    ): { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<string> };
  }
}

const DEFAULT_PEERS = 256;
/** Local indices carry the slot in their low bits; the rest stays random. */
const MAX_KEYPAIR_SLOTS = 2 ** 20;

function powerOfTwoAtLeast(count: number): number {
  if (!Number.isInteger(count) || count < 1)
    throw new RangeError('capacity must be a positive integer');
  return 2 ** Math.ceil(Math.log2(count));
}
