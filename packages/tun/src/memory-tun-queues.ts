/**
 * In-memory TUN queues for tests of code that owns queues directly (the
 * `TunQueueIo` seam): one SharedArrayBuffer, so the test plays the kernel
 * on one thread while queue owners run in workers. Steering is the
 * kernel's: an injected packet goes to the queue that last wrote its flow,
 * else to a queue picked by a hash unlike `flowHash % queues`.
 */
import { NO_OFFLOADS } from './open-device.ts';
import { flowHash } from './packet/flow.ts';
import type { WritableLengths } from './packet/gso-split.ts';
import type { TunQueueIo } from './tun-queue.ts';

/** Structured-cloneable: post it to a worker and `MemoryTunQueues.attach` it there. */
export interface SharedMemoryTunQueues {
  readonly buffer: SharedArrayBuffer;
  readonly queues: number;
  readonly mtu: number;
  readonly linkMtu: number;
  readonly slots: number;
}

export interface MemoryTunQueuesOptions {
  readonly queues?: number;
  readonly mtu?: number;
  /**
   * The largest packet the kernel side injects (default `mtu`); above `mtu`
   * it is an interface MTU raised behind the owner's back (`ip link set
   * mtu`), and the queues drop and count the reads they cannot deliver.
   */
  readonly linkMtu?: number;
  /** Packets each ring holds, per queue and direction (a power of two). */
  readonly slots?: number;
}

const FLOW_TABLE_WORDS = 1024;
// Per queue: rx head (inject), rx tail (read), tx head (write), tx tail (take).
const QUEUE_WORDS = 4;
const RX_HEAD = 0;
const RX_TAIL = 1;
const TX_HEAD = 2;
const TX_TAIL = 3;

export class MemoryTunQueues {
  readonly shared: SharedMemoryTunQueues;
  readonly offloads = NO_OFFLOADS;
  /** Injected packets dropped because their queue's ring was full. */
  injectDropped = 0;
  readonly #words: Int32Array;
  readonly #bytes: Uint8Array;

  /** New queues, or (from `shared`) the same queues on another thread. */
  constructor(options: MemoryTunQueuesOptions | SharedMemoryTunQueues = {}) {
    this.shared = 'buffer' in options ? options : allocate(options);
    this.#words = new Int32Array(this.shared.buffer);
    this.#bytes = new Uint8Array(this.shared.buffer);
  }

  get queueCount(): number {
    return this.shared.queues;
  }

  /** The owner's end of queue `index`. */
  queue(index: number): TunQueueIo {
    if (!Number.isInteger(index) || index < 0 || index >= this.shared.queues) {
      throw new RangeError(`no queue ${index}`);
    }
    return new MemoryTunQueue(this.shared, index);
  }

  /** A packet the kernel routes into the device; false when its queue is full. Returns the queue otherwise. */
  inject(packet: Uint8Array): number | false {
    const { queues, slots, linkMtu } = this.shared;
    if (packet.length > linkMtu) {
      throw new RangeError(`packet of ${packet.length} bytes exceeds the link MTU ${linkMtu}`);
    }
    const hash = flowHash(packet, 0, packet.length);
    const writer = Atomics.load(this.#words, hash & (FLOW_TABLE_WORDS - 1));
    const queue = writer !== 0 ? writer - 1 : (Math.imul(hash, 0x9e3779b1) >>> 0) % queues;
    const base = queueBase(this.shared, queue);
    const head = this.#words[base + RX_HEAD]!;
    if (head - Atomics.load(this.#words, base + RX_TAIL) >= slots) {
      this.injectDropped++;
      return false;
    }
    const slot = head & (slots - 1);
    this.#words[rxLengths(this.shared, queue) + slot] = packet.length;
    this.#bytes.set(packet, packetAt(this.shared, queue, 0, slot));
    Atomics.store(this.#words, base + RX_HEAD, head + 1);
    return queue;
  }

  /** What the device wrote to the kernel since the last call, queue by queue, each in order. */
  takeWritten(): { queue: number; packet: Uint8Array }[] {
    const { queues, slots } = this.shared;
    const taken: { queue: number; packet: Uint8Array }[] = [];
    for (let queue = 0; queue < queues; queue++) {
      const base = queueBase(this.shared, queue);
      let tail = this.#words[base + TX_TAIL]!;
      const head = Atomics.load(this.#words, base + TX_HEAD);
      for (; tail !== head; tail++) {
        const slot = tail & (slots - 1);
        const length = this.#words[txLengths(this.shared, queue) + slot]!;
        const at = packetAt(this.shared, queue, 1, slot);
        taken.push({ queue, packet: this.#bytes.slice(at, at + length) });
      }
      Atomics.store(this.#words, base + TX_TAIL, tail);
    }
    return taken;
  }
}

function allocate(options: MemoryTunQueuesOptions): SharedMemoryTunQueues {
  const queues = options.queues ?? 2;
  const mtu = options.mtu ?? 1280;
  const linkMtu = options.linkMtu ?? mtu;
  const slots = options.slots ?? 1024;
  if ((slots & (slots - 1)) !== 0) throw new RangeError('slots must be a power of two');
  const words = FLOW_TABLE_WORDS + queues * (QUEUE_WORDS + 2 * slots);
  const buffer = new SharedArrayBuffer(words * 4 + queues * 2 * slots * linkMtu);
  return { buffer, queues, mtu, linkMtu, slots };
}

class MemoryTunQueue implements TunQueueIo {
  readonly mtu: number;
  readonly readBudget = 1;
  readonly writeRoom: number;
  /** Injected packets longer than the MTU (see `linkMtu`). */
  rxDropped = 0;
  /** Packets longer than the MTU. */
  txRejected = 0;
  readonly #shared: SharedMemoryTunQueues;
  readonly #queue: number;
  readonly #words: Int32Array;
  readonly #bytes: Uint8Array;
  readonly #base: number;
  #closed = false;

  constructor(shared: SharedMemoryTunQueues, queue: number) {
    this.#shared = shared;
    this.#queue = queue;
    this.mtu = shared.mtu;
    this.writeRoom = shared.mtu;
    this.#words = new Int32Array(shared.buffer);
    this.#bytes = new Uint8Array(shared.buffer);
    this.#base = queueBase(shared, queue);
  }

  read(
    packets: readonly Uint8Array[],
    offsets: ArrayLike<number>,
    lengths: WritableLengths,
    count: number,
  ): number {
    this.#assertOpen();
    const words = this.#words;
    const head = Atomics.load(words, this.#base + RX_HEAD);
    let tail = words[this.#base + RX_TAIL]!;
    let read = 0;
    for (; read < count && tail !== head; tail++) {
      const slot = tail & (this.#shared.slots - 1);
      const length = words[rxLengths(this.#shared, this.#queue) + slot]!;
      if (length > this.mtu) {
        this.rxDropped++;
        continue;
      }
      const at = packetAt(this.#shared, this.#queue, 0, slot);
      packets[read]!.set(this.#bytes.subarray(at, at + length), offsets[read]!);
      lengths[read++] = length;
    }
    Atomics.store(words, this.#base + RX_TAIL, tail);
    return read;
  }

  write(
    packets: readonly Uint8Array[],
    offsets: ArrayLike<number>,
    lengths: ArrayLike<number>,
    count: number,
  ): number {
    this.#assertOpen();
    const words = this.#words;
    const { slots, mtu } = this.#shared;
    let head = words[this.#base + TX_HEAD]!;
    let written = 0;
    for (let i = 0; i < count; i++) {
      if (head - Atomics.load(words, this.#base + TX_TAIL) >= slots) break;
      const length = lengths[i]!;
      if (length > mtu) {
        this.txRejected++;
        continue;
      }
      const slot = head & (slots - 1);
      const at = packetAt(this.#shared, this.#queue, 1, slot);
      const offset = offsets[i]!;
      this.#bytes.set(packets[i]!.subarray(offset, offset + length), at);
      words[txLengths(this.#shared, this.#queue) + slot] = length;
      const hash = flowHash(this.#bytes, at, length);
      Atomics.store(words, hash & (FLOW_TABLE_WORDS - 1), this.#queue + 1);
      head++;
      written++;
    }
    Atomics.store(words, this.#base + TX_HEAD, head);
    return written;
  }

  close(): void {
    this.#closed = true;
  }

  #assertOpen(): void {
    if (this.#closed) throw new Error('TUN queue is closed');
  }
}

function queueBase(shared: SharedMemoryTunQueues, queue: number): number {
  return FLOW_TABLE_WORDS + queue * (QUEUE_WORDS + 2 * shared.slots);
}

function rxLengths(shared: SharedMemoryTunQueues, queue: number): number {
  return queueBase(shared, queue) + QUEUE_WORDS;
}

function txLengths(shared: SharedMemoryTunQueues, queue: number): number {
  return rxLengths(shared, queue) + shared.slots;
}

/** Byte offset of a packet slot; direction 0 is rx (kernel → owner), 1 is tx. */
function packetAt(
  shared: SharedMemoryTunQueues,
  queue: number,
  direction: number,
  slot: number,
): number {
  const words = FLOW_TABLE_WORDS + shared.queues * (QUEUE_WORDS + 2 * shared.slots);
  return words * 4 + ((queue * 2 + direction) * shared.slots + slot) * shared.linkMtu;
}
