/**
 * The transport data path: sealing and opening WireGuard transport messages
 * on keypairs that live in shared memory (worker-contract.ts). Data workers
 * each hold one TransportPath over the same memory; the single-threaded
 * device uses one too.
 *
 * The per-packet calls take (buffer, offset, length) triples, return a byte
 * count or a negative TRANSPORT_* code, and allocate nothing once a
 * keypair's contexts are cached.
 */

import {
  KEEPALIVE_TIMEOUT,
  MAX_CONTENT_SIZE,
  MESSAGE_PADDING_MULTIPLE,
  MESSAGE_TRANSPORT_HEADER_SIZE,
  MESSAGE_TRANSPORT_MIN_SIZE,
  REJECT_AFTER_TIME,
  REKEY_AFTER_TIME,
  REKEY_TIMEOUT,
} from './constants.ts';
import type { CryptoProvider, TransportAead } from './crypto/provider.ts';
import { readUint32, writeTransportHeader } from './messages.ts';
import { REPLAY_WINDOW_SIZE, ReplayWindow } from './replay-window.ts';
import {
  COUNTER_BLOCK_SIZE,
  H_REKEY_AFTER_MESSAGES_HIGH,
  H_REKEY_AFTER_MESSAGES_LOW,
  H_MTU,
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
  KEYPAIR_LIVE,
  NO_SLOT,
  P_CURRENT,
  P_DATA_RECEIVED_UNANSWERED_MS,
  P_DATA_SENT_UNANSWERED_MS,
  P_LAST_RECEIVED_MS,
  P_LAST_SENT_MS,
  P_NEXT,
  P_RX_BYTES,
  P_RX_PACKETS,
  P_SEQUENCE,
  P_TX_BYTES,
  P_TX_PACKETS,
  SIGNAL_HANDSHAKE_NEEDED,
  SIGNAL_NEXT_KEYPAIR_CONFIRMED,
  addToCounter,
  keypairBase,
  peerBase,
  raiseSignal,
  toStamp,
} from './worker-contract.ts';
import type { SharedTransportMemory } from './worker-contract.ts';

/** The peer has no usable current keypair: queue the packet and get a handshake. */
export const TRANSPORT_NO_SESSION = -1;
/** The keypair is past REJECT_AFTER_TIME or its counters ran out. */
export const TRANSPORT_EXPIRED = -2;
/** No live keypair has the receiver index, or its slot was recycled while the packet was opened. */
export const TRANSPORT_UNKNOWN_RECEIVER = -3;
export const TRANSPORT_DECRYPT_FAILED = -4;
export const TRANSPORT_REPLAY = -5;
/** Authenticated, but the plaintext is not an IPv4 or IPv6 packet of consistent length. */
export const TRANSPORT_INVALID_INNER_PACKET = -6;
export const TRANSPORT_TOO_LARGE = -7;

/** Bytes of the transport message that carries `packetLength` bytes in a tunnel of `mtu`. */
export function sealedLength(packetLength: number, mtu: number): number {
  return MESSAGE_TRANSPORT_MIN_SIZE + paddedLength(packetLength, mtu);
}

/**
 * The plaintext length of a packet once padded: a multiple of 16, but never
 * beyond the MTU (a full-size packet stays full-size, so its datagram still
 * fits the underlay) nor beyond the largest content; never shorter than the
 * packet itself.
 */
export function paddedLength(length: number, mtu: number): number {
  const padded = Math.ceil(length / MESSAGE_PADDING_MULTIPLE) * MESSAGE_PADDING_MULTIPLE;
  return Math.max(length, Math.min(padded, mtu, MAX_CONTENT_SIZE));
}

/** Whose keypair an `open` found: each call fills it, so one instance serves every packet. */
export interface OpenedFrom {
  /** The peer slot, or -1 when no live keypair had the receiver index. */
  peer: number;
}

export class TransportPath {
  readonly #words: Int32Array;
  readonly #bytes: Uint8Array;
  readonly #wordsUnsigned: Uint32Array;
  readonly #crypto: CryptoProvider;
  readonly #keypairSlots: number;
  readonly #rekeyAfterMessages: number;
  readonly #mtu: number;
  readonly #cachedSequence: Int32Array;
  readonly #sendAead: (TransportAead | undefined)[];
  readonly #receiveAead: (TransportAead | undefined)[];
  readonly #replayWindows: (ReplayWindow | undefined)[];
  readonly #nextCounter: Float64Array;
  readonly #counterBlockEnd: Float64Array;

  constructor(memory: SharedTransportMemory, crypto: CryptoProvider) {
    this.#words = new Int32Array(memory.buffer);
    this.#wordsUnsigned = new Uint32Array(memory.buffer);
    this.#bytes = new Uint8Array(memory.buffer);
    this.#crypto = crypto;
    this.#keypairSlots = memory.keypairSlots;
    this.#rekeyAfterMessages =
      (this.#words[H_REKEY_AFTER_MESSAGES_HIGH]! >>> 0) * 2 ** 32 +
      (this.#words[H_REKEY_AFTER_MESSAGES_LOW]! >>> 0);
    this.#mtu = this.#words[H_MTU]!;
    // Odd: never equal to a published (even) sequence.
    this.#cachedSequence = new Int32Array(memory.keypairSlots).fill(1);
    this.#sendAead = new Array<TransportAead | undefined>(memory.keypairSlots);
    this.#receiveAead = new Array<TransportAead | undefined>(memory.keypairSlots);
    this.#replayWindows = new Array<ReplayWindow | undefined>(memory.keypairSlots);
    this.#nextCounter = new Float64Array(memory.keypairSlots);
    this.#counterBlockEnd = new Float64Array(memory.keypairSlots);
  }

  /**
   * Seals `length` bytes of `src` (an empty packet is a keepalive) for the
   * peer's current keypair into `dst` at `dstOffset`, which needs
   * sealedLength(length, mtu) bytes. Returns the message length or a code.
   */
  seal(
    peer: number,
    src: Uint8Array,
    srcOffset: number,
    length: number,
    dst: Uint8Array,
    dstOffset: number,
    nowMs: number,
  ): number {
    if (length > MAX_CONTENT_SIZE) return TRANSPORT_TOO_LARGE;
    const words = this.#words;
    const peerWords = peerBase(this.#keypairSlots, peer);
    const slot = Atomics.load(words, peerWords + P_CURRENT);
    if (slot === NO_SLOT) return TRANSPORT_NO_SESSION;
    const keypairWords = keypairBase(slot);
    const sequence = Atomics.load(words, keypairWords + K_SEQUENCE);
    if ((sequence & 1) !== 0 || Atomics.load(words, keypairWords + K_STATE) !== KEYPAIR_LIVE) {
      return TRANSPORT_NO_SESSION;
    }
    const now = toStamp(nowMs);
    const age = (now - Atomics.load(words, keypairWords + K_CREATED_MS)) >>> 0;
    if (age >= REJECT_AFTER_TIME) {
      raiseSignal(words, peerWords, SIGNAL_HANDSHAKE_NEEDED);
      return TRANSPORT_EXPIRED;
    }
    const aead = this.#contexts(slot, sequence) ? this.#sendAead[slot] : undefined;
    if (aead === undefined) return TRANSPORT_NO_SESSION;
    const counter = this.#reserveCounter(slot, keypairWords);
    if (counter < 0) {
      raiseSignal(words, peerWords, SIGNAL_HANDSHAKE_NEEDED);
      return TRANSPORT_EXPIRED;
    }
    const initiator = (Atomics.load(words, keypairWords + K_FLAGS) & KEYPAIR_FLAG_INITIATOR) !== 0;
    if (counter >= this.#rekeyAfterMessages || (initiator && age >= REKEY_AFTER_TIME)) {
      raiseSignal(words, peerWords, SIGNAL_HANDSHAKE_NEEDED);
    }

    const padded = paddedLength(length, this.#mtu);
    const payloadOffset = dstOffset + MESSAGE_TRANSPORT_HEADER_SIZE;
    if (src !== dst || srcOffset !== payloadOffset) {
      dst.set(src.subarray(srcOffset, srcOffset + length), payloadOffset);
    }
    dst.fill(0, payloadOffset + length, payloadOffset + padded);
    const counterLow = counter >>> 0;
    const counterHigh = Math.floor(counter / 2 ** 32);
    const remoteIndex = Atomics.load(words, keypairWords + K_REMOTE_INDEX);
    writeTransportHeader(dst, dstOffset, remoteIndex, counterLow, counterHigh);
    const sealed = aead.seal(
      counterLow,
      counterHigh,
      dst,
      payloadOffset,
      padded,
      dst,
      payloadOffset,
    );
    const total = MESSAGE_TRANSPORT_HEADER_SIZE + sealed;

    addToCounter(words, peerWords + P_TX_BYTES, total);
    addToCounter(words, peerWords + P_TX_PACKETS, 1);
    Atomics.store(words, peerWords + P_LAST_SENT_MS, now);
    if (length > 0) {
      Atomics.compareExchange(words, peerWords + P_DATA_SENT_UNANSWERED_MS, 0, now);
    }
    if (Atomics.load(words, peerWords + P_DATA_RECEIVED_UNANSWERED_MS) !== 0) {
      Atomics.store(words, peerWords + P_DATA_RECEIVED_UNANSWERED_MS, 0);
    }
    return total;
  }

  /**
   * Opens a transport message (already classified: type 4, at least 32
   * bytes) into `dst` at `dstOffset` (it may be the message's own payload
   * offset, in place). Returns the inner packet's length (0 for a
   * keepalive) or a code; `from.peer` tells whose keypair it was.
   */
  open(
    src: Uint8Array,
    srcOffset: number,
    length: number,
    dst: Uint8Array,
    dstOffset: number,
    nowMs: number,
    from: OpenedFrom,
  ): number {
    from.peer = -1;
    const words = this.#words;
    const receiverIndex = readUint32(src, srcOffset + 4);
    const slot = receiverIndex & (this.#keypairSlots - 1);
    const keypairWords = keypairBase(slot);
    const sequence = Atomics.load(words, keypairWords + K_SEQUENCE);
    if (
      (sequence & 1) !== 0 ||
      Atomics.load(words, keypairWords + K_STATE) !== KEYPAIR_LIVE ||
      Atomics.load(words, keypairWords + K_LOCAL_INDEX) >>> 0 !== receiverIndex
    ) {
      return TRANSPORT_UNKNOWN_RECEIVER;
    }
    const peer = Atomics.load(words, keypairWords + K_PEER);
    from.peer = peer;
    const now = toStamp(nowMs);
    const age = (now - Atomics.load(words, keypairWords + K_CREATED_MS)) >>> 0;
    const counterLow = readUint32(src, srcOffset + 8);
    const counterHigh = readUint32(src, srcOffset + 12);
    if (age >= REJECT_AFTER_TIME || isAtOrPastRejectAfterMessages(counterLow, counterHigh)) {
      return TRANSPORT_EXPIRED;
    }
    const aead = this.#contexts(slot, sequence) ? this.#receiveAead[slot] : undefined;
    if (aead === undefined) return TRANSPORT_UNKNOWN_RECEIVER;
    const plaintextLength = aead.open(
      counterLow,
      counterHigh,
      src,
      srcOffset + MESSAGE_TRANSPORT_HEADER_SIZE,
      length - MESSAGE_TRANSPORT_HEADER_SIZE,
      dst,
      dstOffset,
    );
    if (plaintextLength < 0) return TRANSPORT_DECRYPT_FAILED;
    if (!this.#acceptCounter(slot, keypairWords, counterLow, counterHigh)) return TRANSPORT_REPLAY;
    // The control thread may have recycled the slot (for another peer) since `sequence` was
    // read: the peer read then and the keys that opened the packet need not belong together.
    if (Atomics.load(words, keypairWords + K_SEQUENCE) !== sequence) {
      from.peer = -1;
      return TRANSPORT_UNKNOWN_RECEIVER;
    }

    const peerWords = peerBase(this.#keypairSlots, peer);
    addToCounter(words, peerWords + P_RX_BYTES, length);
    addToCounter(words, peerWords + P_RX_PACKETS, 1);
    Atomics.store(words, peerWords + P_LAST_RECEIVED_MS, now);
    if (Atomics.load(words, peerWords + P_DATA_SENT_UNANSWERED_MS) !== 0) {
      Atomics.store(words, peerWords + P_DATA_SENT_UNANSWERED_MS, 0);
    }
    if (plaintextLength > 0) {
      Atomics.compareExchange(words, peerWords + P_DATA_RECEIVED_UNANSWERED_MS, 0, now);
    }
    this.#noteKeypairUse(peerWords, slot, keypairWords, age);
    if (plaintextLength === 0) return 0;
    return innerPacketLength(dst, dstOffset, plaintextLength);
  }

  /** Destroys cached contexts of keypairs the control thread has since replaced or freed. */
  sweep(): void {
    for (let slot = 0; slot < this.#keypairSlots; slot++) {
      if (this.#sendAead[slot] === undefined) continue;
      const sequence = Atomics.load(this.#words, keypairBase(slot) + K_SEQUENCE);
      if (sequence !== this.#cachedSequence[slot]) this.#dropContexts(slot);
    }
  }

  /** Destroys every cached context (the worker is shutting down). */
  destroy(): void {
    for (let slot = 0; slot < this.#keypairSlots; slot++) this.#dropContexts(slot);
  }

  #noteKeypairUse(peerWords: number, slot: number, keypairWords: number, age: number): void {
    const words = this.#words;
    let current: number;
    let next: number;
    for (;;) {
      const sequence = Atomics.load(words, peerWords + P_SEQUENCE);
      current = Atomics.load(words, peerWords + P_CURRENT);
      next = Atomics.load(words, peerWords + P_NEXT);
      if ((sequence & 1) === 0 && Atomics.load(words, peerWords + P_SEQUENCE) === sequence) break;
    }
    if (slot === next) {
      raiseSignal(words, peerWords, SIGNAL_NEXT_KEYPAIR_CONFIRMED);
    } else if (
      slot === current &&
      (Atomics.load(words, keypairWords + K_FLAGS) & KEYPAIR_FLAG_INITIATOR) !== 0 &&
      age >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
    ) {
      raiseSignal(words, peerWords, SIGNAL_HANDSHAKE_NEEDED);
    }
  }

  /** Builds (once per published keypair) the AEAD contexts and the counter state. */
  #contexts(slot: number, sequence: number): boolean {
    if (this.#cachedSequence[slot] === sequence) return true;
    this.#dropContexts(slot);
    const keypairWords = keypairBase(slot);
    const sendKey = this.#bytes.slice(
      (keypairWords + K_SEND_KEY) * 4,
      (keypairWords + K_SEND_KEY + 8) * 4,
    );
    const receiveKey = this.#bytes.slice(
      (keypairWords + K_RECEIVE_KEY) * 4,
      (keypairWords + K_RECEIVE_KEY + 8) * 4,
    );
    const consistent = Atomics.load(this.#words, keypairWords + K_SEQUENCE) === sequence;
    if (consistent) {
      this.#sendAead[slot] = this.#crypto.transportAead(sendKey);
      this.#receiveAead[slot] = this.#crypto.transportAead(receiveKey);
      this.#replayWindows[slot] ??= new ReplayWindow(
        this.#wordsUnsigned,
        keypairWords + K_REPLAY_WINDOW,
      );
      this.#nextCounter[slot] = 0;
      this.#counterBlockEnd[slot] = 0;
      this.#cachedSequence[slot] = sequence;
    }
    sendKey.fill(0);
    receiveKey.fill(0);
    return consistent;
  }

  #dropContexts(slot: number): void {
    this.#sendAead[slot]?.destroy();
    this.#receiveAead[slot]?.destroy();
    this.#sendAead[slot] = undefined;
    this.#receiveAead[slot] = undefined;
    this.#cachedSequence[slot] = 1;
  }

  /**
   * The next send counter, from this thread's reserved block; -1 when none
   * are left. A block left behind by busier senders is abandoned: its
   * counters would land outside the receiver's replay window.
   */
  #reserveCounter(slot: number, keypairWords: number): number {
    let counter = this.#nextCounter[slot]!;
    if (
      counter >= this.#counterBlockEnd[slot]! ||
      (Atomics.load(this.#words, keypairWords + K_COUNTER_BLOCK) >>> 0) * COUNTER_BLOCK_SIZE -
        counter >
        MAX_COUNTER_LAG
    ) {
      const block = Atomics.add(this.#words, keypairWords + K_COUNTER_BLOCK, 1) >>> 0;
      if (block === 0xffffffff) return -1;
      counter = block * COUNTER_BLOCK_SIZE;
      this.#counterBlockEnd[slot] = counter + COUNTER_BLOCK_SIZE;
    }
    this.#nextCounter[slot] = counter + 1;
    return counter;
  }

  #acceptCounter(
    slot: number,
    keypairWords: number,
    counterLow: number,
    counterHigh: number,
  ): boolean {
    const words = this.#words;
    const lock = keypairWords + K_RECEIVE_LOCK;
    while (Atomics.compareExchange(words, lock, 0, 1) !== 0) {
      // Held only for a few instructions by another receiver of the same keypair.
    }
    const accepted = this.#replayWindows[slot]!.accept(counterLow, counterHigh);
    Atomics.store(words, lock, 0);
    return accepted;
  }
}

/** Half the replay window: a sender this far behind the newest block takes a new one. */
const MAX_COUNTER_LAG = REPLAY_WINDOW_SIZE / 2;

/** REJECT_AFTER_MESSAGES is 2^64 − 2^13 − 1: high word all ones, low word 0xffffdfff. */
function isAtOrPastRejectAfterMessages(counterLow: number, counterHigh: number): boolean {
  return counterHigh === 0xffffffff && counterLow >= 0xffffdfff;
}

/** The IP packet's own length, which excludes the padding; a code if it is not a valid IP packet. */
function innerPacketLength(packet: Uint8Array, offset: number, available: number): number {
  const version = packet[offset]! >>> 4;
  let length: number;
  if (version === 4 && available >= IPV4_MIN_HEADER) {
    length = (packet[offset + 2]! << 8) | packet[offset + 3]!;
    if (length < IPV4_MIN_HEADER) return TRANSPORT_INVALID_INNER_PACKET;
  } else if (version === 6 && available >= IPV6_HEADER) {
    length = IPV6_HEADER + ((packet[offset + 4]! << 8) | packet[offset + 5]!);
  } else {
    return TRANSPORT_INVALID_INNER_PACKET;
  }
  return length <= available ? length : TRANSPORT_INVALID_INNER_PACKET;
}

const IPV4_MIN_HEADER = 20;
const IPV6_HEADER = 40;
