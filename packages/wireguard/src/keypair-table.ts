/**
 * The control thread's side of the shared transport memory: it allocates
 * peer and keypair slots, installs and wipes keys, publishes which keypairs
 * are a peer's current, previous and next, and reads what the data path
 * left behind (stamps, statistics, signals).
 *
 * A keypair slot's number is the low bits of its local index, so a worker
 * finds the keypair of an incoming packet without a shared hash table; the
 * remaining bits are random.
 */

import type { Endpoint } from './endpoint.ts';
import type { TransportKeys } from './handshake.ts';
import {
  K_COUNTER_BLOCK,
  K_CREATED_MS,
  K_FLAGS,
  K_LOCAL_INDEX,
  K_PEER,
  K_RECEIVE_KEY,
  K_RECEIVE_LOCK,
  K_REMOTE_INDEX,
  K_REPLAY_WINDOW,
  K_SEND_KEY,
  K_SEQUENCE,
  K_STATE,
  KEYPAIR_FLAG_INITIATOR,
  KEYPAIR_FREE,
  KEYPAIR_LIVE,
  KEYPAIR_RESERVED,
  KEYPAIR_SLOT_WORDS,
  NO_SLOT,
  P_CURRENT,
  P_DATA_RECEIVED_UNANSWERED_MS,
  P_DATA_SENT_UNANSWERED_MS,
  P_LAST_RECEIVED_MS,
  P_LAST_SENT_MS,
  P_NEXT,
  P_PREVIOUS,
  P_RX_BYTES,
  P_ENDPOINT_SEQUENCE,
  P_RX_PACKETS,
  P_SEQUENCE,
  P_SIGNALS,
  P_TX_BYTES,
  P_TX_PACKETS,
  PEER_SLOT_WORDS,
  beginWrite,
  endWrite,
  fromStamp,
  keypairBase,
  peerBase,
  readCounter,
  toStamp,
  readEndpointWords,
  writeEndpointWords,
  endpointAddressLength,
  endpointPort,
} from './worker-contract.ts';
import type { SharedTransportMemory } from './worker-contract.ts';
import { REPLAY_WINDOW_WORDS } from './replay-window.ts';

export interface KeypairPointers {
  current: number;
  previous: number;
  next: number;
}

export interface TransportCounters {
  txBytes: number;
  rxBytes: number;
  txPackets: number;
  rxPackets: number;
}

export type Random32 = () => number;

export class KeypairTable {
  readonly memory: SharedTransportMemory;
  readonly #words: Int32Array;
  readonly #freeKeypairs: number[];
  readonly #freePeers: number[];

  constructor(memory: SharedTransportMemory) {
    this.memory = memory;
    this.#words = new Int32Array(memory.buffer);
    this.#freeKeypairs = descending(memory.keypairSlots);
    this.#freePeers = descending(memory.peerSlots);
  }

  allocatePeer(): number | undefined {
    return this.#freePeers.pop();
  }

  /** Wipes the peer's keypairs and words and returns its slot to the pool. */
  releasePeer(peer: number): void {
    const { current, previous, next } = this.pointers(peer);
    for (const slot of [current, previous, next]) if (slot !== NO_SLOT) this.releaseKeypair(slot);
    const base = peerBase(this.memory.keypairSlots, peer);
    const sequence = Atomics.load(this.#words, base + P_SEQUENCE);
    const endpointSequence = Atomics.load(this.#words, base + P_ENDPOINT_SEQUENCE);
    for (let i = 0; i < PEER_SLOT_WORDS; i++) Atomics.store(this.#words, base + i, 0);
    // Keep the sequences moving forward so no reader mistakes old values (or a cached
    // endpoint of the slot's previous peer) for new.
    Atomics.store(this.#words, base + P_SEQUENCE, (sequence + 2) & ~1);
    Atomics.store(this.#words, base + P_ENDPOINT_SEQUENCE, (endpointSequence + 2) & ~1);
    this.publish(peer, { current: NO_SLOT, previous: NO_SLOT, next: NO_SLOT });
    this.#freePeers.push(peer);
  }

  /** Takes a free keypair slot for a handshake of `peer`; its local index is random but for the slot bits. */
  reserveKeypair(
    peer: number,
    random32: Random32,
  ): { slot: number; localIndex: number } | undefined {
    const slot = this.#freeKeypairs.pop();
    if (slot === undefined) return undefined;
    const mask = this.memory.keypairSlots - 1;
    const localIndex = ((random32() & ~mask) | slot) >>> 0;
    const base = keypairBase(slot);
    beginWrite(this.#words, base + K_SEQUENCE);
    Atomics.store(this.#words, base + K_STATE, KEYPAIR_RESERVED);
    Atomics.store(this.#words, base + K_LOCAL_INDEX, localIndex | 0);
    Atomics.store(this.#words, base + K_PEER, peer);
    endWrite(this.#words, base + K_SEQUENCE);
    return { slot, localIndex };
  }

  /** The slot that owns `localIndex` (reserved or live) and its peer, if any. */
  lookup(localIndex: number): { slot: number; peer: number; live: boolean } | undefined {
    const slot = localIndex & (this.memory.keypairSlots - 1);
    const base = keypairBase(slot);
    const state = Atomics.load(this.#words, base + K_STATE);
    if (state === KEYPAIR_FREE) return undefined;
    if (Atomics.load(this.#words, base + K_LOCAL_INDEX) >>> 0 !== localIndex >>> 0)
      return undefined;
    return { slot, peer: Atomics.load(this.#words, base + K_PEER), live: state === KEYPAIR_LIVE };
  }

  /** Puts transport keys into a reserved slot and makes it live (not yet any peer's pointer). */
  installKeys(
    slot: number,
    keys: TransportKeys,
    remoteIndex: number,
    initiator: boolean,
    nowMs: number,
  ): void {
    const words = this.#words;
    const base = keypairBase(slot);
    const bytes = new Uint8Array(this.memory.buffer);
    beginWrite(words, base + K_SEQUENCE);
    bytes.set(keys.sendKey, (base + K_SEND_KEY) * 4);
    bytes.set(keys.receiveKey, (base + K_RECEIVE_KEY) * 4);
    words.fill(0, base + K_REPLAY_WINDOW, base + K_REPLAY_WINDOW + REPLAY_WINDOW_WORDS);
    Atomics.store(words, base + K_REMOTE_INDEX, remoteIndex | 0);
    Atomics.store(words, base + K_FLAGS, initiator ? KEYPAIR_FLAG_INITIATOR : 0);
    Atomics.store(words, base + K_CREATED_MS, toStamp(nowMs));
    Atomics.store(words, base + K_COUNTER_BLOCK, 0);
    Atomics.store(words, base + K_RECEIVE_LOCK, 0);
    Atomics.store(words, base + K_STATE, KEYPAIR_LIVE);
    endWrite(words, base + K_SEQUENCE);
  }

  /** Zeroes the slot (keys included) and returns it to the pool. */
  releaseKeypair(slot: number): void {
    const words = this.#words;
    const base = keypairBase(slot);
    if (Atomics.load(words, base + K_STATE) === KEYPAIR_FREE) return;
    beginWrite(words, base + K_SEQUENCE);
    words.fill(0, base + K_SEQUENCE + 1, base + KEYPAIR_SLOT_WORDS);
    endWrite(words, base + K_SEQUENCE);
    this.#freeKeypairs.push(slot);
  }

  isInitiatorKeypair(slot: number): boolean {
    return (Atomics.load(this.#words, keypairBase(slot) + K_FLAGS) & KEYPAIR_FLAG_INITIATOR) !== 0;
  }

  keypairCreatedMs(slot: number, nowMs: number): number {
    return fromStamp(Atomics.load(this.#words, keypairBase(slot) + K_CREATED_MS), nowMs);
  }

  pointers(peer: number): KeypairPointers {
    const base = peerBase(this.memory.keypairSlots, peer);
    return {
      current: Atomics.load(this.#words, base + P_CURRENT),
      previous: Atomics.load(this.#words, base + P_PREVIOUS),
      next: Atomics.load(this.#words, base + P_NEXT),
    };
  }

  /** Publishes a peer's keypair pointers atomically with respect to seqlock readers. */
  publish(peer: number, pointers: KeypairPointers): void {
    const base = peerBase(this.memory.keypairSlots, peer);
    beginWrite(this.#words, base + P_SEQUENCE);
    Atomics.store(this.#words, base + P_CURRENT, pointers.current);
    Atomics.store(this.#words, base + P_PREVIOUS, pointers.previous);
    Atomics.store(this.#words, base + P_NEXT, pointers.next);
    endWrite(this.#words, base + P_SEQUENCE);
  }

  /** Takes (and clears) the SIGNAL_* bits workers raised for `peer`. */
  takeSignals(peer: number): number {
    return Atomics.exchange(this.#words, peerBase(this.memory.keypairSlots, peer) + P_SIGNALS, 0);
  }

  /** Handshake messages count as authenticated traffic for the timers. */
  noteAuthenticatedSent(peer: number, nowMs: number): void {
    const base = peerBase(this.memory.keypairSlots, peer);
    Atomics.store(this.#words, base + P_LAST_SENT_MS, toStamp(nowMs));
    Atomics.store(this.#words, base + P_DATA_RECEIVED_UNANSWERED_MS, 0);
  }

  noteAuthenticatedReceived(peer: number, nowMs: number): void {
    const base = peerBase(this.memory.keypairSlots, peer);
    Atomics.store(this.#words, base + P_LAST_RECEIVED_MS, toStamp(nowMs));
    Atomics.store(this.#words, base + P_DATA_SENT_UNANSWERED_MS, 0);
  }

  lastSentMs(peer: number, nowMs: number): number | undefined {
    return this.#stamp(peer, P_LAST_SENT_MS, nowMs);
  }

  lastReceivedMs(peer: number, nowMs: number): number | undefined {
    return this.#stamp(peer, P_LAST_RECEIVED_MS, nowMs);
  }

  dataSentUnansweredMs(peer: number, nowMs: number): number | undefined {
    return this.#stamp(peer, P_DATA_SENT_UNANSWERED_MS, nowMs);
  }

  dataReceivedUnansweredMs(peer: number, nowMs: number): number | undefined {
    return this.#stamp(peer, P_DATA_RECEIVED_UNANSWERED_MS, nowMs);
  }

  /** Forgets unanswered data sent, so one silence starts one handshake. */
  clearDataSentUnanswered(peer: number): void {
    const base = peerBase(this.memory.keypairSlots, peer);
    Atomics.store(this.#words, base + P_DATA_SENT_UNANSWERED_MS, 0);
  }

  /** Forgets unanswered data received when no keepalive can answer it (no session left). */
  clearDataReceivedUnanswered(peer: number): void {
    const base = peerBase(this.memory.keypairSlots, peer);
    Atomics.store(this.#words, base + P_DATA_RECEIVED_UNANSWERED_MS, 0);
  }

  counters(peer: number): TransportCounters {
    const base = peerBase(this.memory.keypairSlots, peer);
    return {
      txBytes: readCounter(this.#words, base + P_TX_BYTES),
      rxBytes: readCounter(this.#words, base + P_RX_BYTES),
      txPackets: readCounter(this.#words, base + P_TX_PACKETS),
      rxPackets: readCounter(this.#words, base + P_RX_PACKETS),
    };
  }

  writeEndpoint(peer: number, address: Uint8Array, port: number): void {
    writeEndpointWords(this.#words, peerBase(this.memory.keypairSlots, peer), address, port);
  }

  /** Moves whenever any thread writes the peer's endpoint. */
  endpointSequence(peer: number): number {
    return Atomics.load(
      this.#words,
      peerBase(this.memory.keypairSlots, peer) + P_ENDPOINT_SEQUENCE,
    );
  }

  readEndpoint(peer: number): Endpoint | undefined {
    const address = new Uint8Array(16);
    const read = readEndpointWords(this.#words, peerBase(this.memory.keypairSlots, peer), address);
    if (read === 0) return undefined;
    const length = endpointAddressLength(read);
    return {
      family: length === 4 ? 4 : 6,
      address: address.slice(0, length),
      port: endpointPort(read),
    };
  }

  #stamp(peer: number, at: number, nowMs: number): number | undefined {
    const stamp = Atomics.load(this.#words, peerBase(this.memory.keypairSlots, peer) + at);
    return stamp === 0 ? undefined : fromStamp(stamp, nowMs);
  }
}

function descending(count: number): number[] {
  return Array.from({ length: count }, (_, i) => count - 1 - i);
}
