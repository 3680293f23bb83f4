/**
 * Datagrams from one data worker to the control thread: a single-producer
 * single-consumer ring of fixed entries in a SharedArrayBuffer. Two carry
 * what the data path does not handle itself: handshake messages (types
 * 1–3) and relay datagrams (STUN, TURN ChannelData). Both are rare, so a
 * full ring drops (and counts) rather than blocking the data path. After a
 * push the worker rings the WireGuard device's doorbell, so the control
 * thread sleeps on one word for worker signals and both rings.
 */
import type { DatagramBatch } from '@gatehouse/udp';
import { Doorbell } from '@gatehouse/wireguard';
import type { SharedTransportMemory } from '@gatehouse/wireguard';
import type { Endpoint } from '@gatehouse/addresses';

const HEAD = 0;
const TAIL = 1;
const DROPPED = 2;
const HEADER_WORDS = 4;
// Per entry: length, family, port (3 words), address (16 bytes), message.
const MESSAGE_AT = 28;

export interface RingShape {
  /** A power of two. */
  entries: number;
  /** Longer datagrams are dropped (and counted). */
  maxMessageBytes: number;
}

export const HANDSHAKE_RING: RingShape = {
  entries: 64,
  // An initiation, the largest handshake message, is 148 bytes.
  maxMessageBytes: 256 - MESSAGE_AT,
};
/**
 * Messages waiting in one ring that put the device under load (cookie
 * replies instead of handshakes, see WireGuardDevice.noteHandshakeQueueDepth):
 * an eighth of the ring, as wireguard-go's QueueHandshakeSize / 8.
 */
export const UNDER_LOAD_RING_DEPTH = HANDSHAKE_RING.entries / 8;
/** STUN answers and ChannelData carrying a full-size WireGuard message. */
export const RELAY_RING: RingShape = { entries: 32, maxMessageBytes: 2048 - MESSAGE_AT };

export class DatagramRing {
  readonly buffer: SharedArrayBuffer;
  readonly #words: Int32Array;
  readonly #bytes: Uint8Array;
  readonly #doorbell: Doorbell;
  readonly #entries: number;
  readonly #entryBytes: number;
  readonly #maxMessage: number;

  /** `device`: the WireGuard device's shared memory, whose doorbell is rung; `buffer`: another thread's ring of the same shape. */
  constructor(device: SharedTransportMemory, shape: RingShape, buffer?: SharedArrayBuffer) {
    this.#entries = shape.entries;
    this.#entryBytes = MESSAGE_AT + Math.ceil(shape.maxMessageBytes / 4) * 4;
    this.#maxMessage = shape.maxMessageBytes;
    this.buffer =
      buffer ?? new SharedArrayBuffer(HEADER_WORDS * 4 + this.#entries * this.#entryBytes);
    this.#words = new Int32Array(this.buffer);
    this.#bytes = new Uint8Array(this.buffer);
    this.#doorbell = new Doorbell(device);
  }

  /** Messages dropped because the ring was full or they were too long. */
  get dropped(): number {
    return Atomics.load(this.#words, DROPPED);
  }

  /** Messages pushed and not yet drained. */
  get waiting(): number {
    return Atomics.load(this.#words, HEAD) - Atomics.load(this.#words, TAIL);
  }

  /** Producer: copies a datagram and the endpoint of `slot` in `from`. */
  push(data: Uint8Array, offset: number, length: number, from: DatagramBatch, slot: number): void {
    const words = this.#words;
    const head = words[HEAD]!;
    if (length > this.#maxMessage || head - Atomics.load(words, TAIL) >= this.#entries) {
      Atomics.add(words, DROPPED, 1);
      return;
    }
    const entry = HEADER_WORDS * 4 + (head & (this.#entries - 1)) * this.#entryBytes;
    words[entry >> 2] = length;
    words[(entry >> 2) + 1] = from.families[slot]!;
    words[(entry >> 2) + 2] = from.ports[slot]!;
    for (let i = 0; i < 16; i++) this.#bytes[entry + 12 + i] = from.addresses[slot * 16 + i]!;
    this.#bytes.set(data.subarray(offset, offset + length), entry + MESSAGE_AT);
    Atomics.store(words, HEAD, head + 1);
    this.#doorbell.ring();
  }

  /** Consumer: hands each waiting message (a copy) and its source to `handle`. */
  drain(handle: (datagram: Uint8Array, from: Endpoint) => void): void {
    const words = this.#words;
    const head = Atomics.load(words, HEAD);
    let tail = words[TAIL]!;
    for (; tail !== head; tail++) {
      const entry = HEADER_WORDS * 4 + (tail & (this.#entries - 1)) * this.#entryBytes;
      const length = words[entry >> 2]!;
      const family = words[(entry >> 2) + 1] === 6 ? 6 : 4;
      const address = this.#bytes.slice(entry + 12, entry + 12 + (family === 4 ? 4 : 16));
      const datagram = this.#bytes.slice(entry + MESSAGE_AT, entry + MESSAGE_AT + length);
      Atomics.store(words, TAIL, tail + 1);
      handle(datagram, { family, address, port: words[(entry >> 2) + 2]! });
    }
  }
}
