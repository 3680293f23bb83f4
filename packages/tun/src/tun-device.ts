import type { TunOffloads } from './open-device.ts';

/**
 * Packets moved per step: the most a worker reads or writes before it looks
 * at its other direction, and the default capacity of a PacketBatch.
 * `npm run bench:tun` compares 16, 64 and 256 (figures in README.md): on a
 * 2-vCPU machine they differ by less than run-to-run noise, so 64 keeps
 * steps short (~64 µs of syscalls) with Firezone's measured 100 in reach.
 */
export const TUN_BATCH_SIZE = 64;

/**
 * Packets by reference: packet i is
 * `buffers[i].subarray(offsets[i], offsets[i] + lengths[i])`. Preallocated
 * and reused; filling it allocates nothing.
 */
export class PacketBatch {
  readonly capacity: number;
  count = 0;
  readonly buffers: Uint8Array[];
  readonly offsets: Int32Array;
  readonly lengths: Int32Array;
  /** The device queue each received packet came from. */
  readonly queues: Int32Array;
  /** Device bookkeeping: slots of each queue this batch holds until released. */
  readonly held: Int32Array;

  constructor(capacity: number = TUN_BATCH_SIZE) {
    this.capacity = capacity;
    this.buffers = new Array<Uint8Array>(capacity).fill(EMPTY);
    this.offsets = new Int32Array(capacity);
    this.lengths = new Int32Array(capacity);
    this.queues = new Int32Array(capacity);
    this.held = new Int32Array(MAX_BATCH_QUEUES);
  }

  /** Appends a packet reference (for batches handed to sendBatch); false when full. */
  push(buffer: Uint8Array, offset: number, length: number): boolean {
    if (this.count === this.capacity) return false;
    this.buffers[this.count] = buffer;
    this.offsets[this.count] = offset;
    this.lengths[this.count] = length;
    this.count++;
    return true;
  }
}

const EMPTY = new Uint8Array(0);
const MAX_BATCH_QUEUES = 256;

export interface QueueStats {
  readonly rxPackets: number;
  readonly rxBytes: number;
  readonly txPackets: number;
  readonly txBytes: number;
  /** Writes the kernel refused (malformed or unsupported packets). */
  readonly txRejected: number;
  /** GSO super-packets read and split. */
  readonly rxSuperpackets: number;
  /** Packets read that could not be delivered (oversize, bad offload metadata). */
  readonly rxDropped: number;
  /** Times the worker stopped reading because the consumer held every rx slot. */
  readonly rxRingFull: number;
  /** Now: packets in the rx ring that the consumer has not released yet. */
  readonly rxRingUsed: number;
  /** Now: packets in the tx ring that the worker has not written yet. */
  readonly txRingUsed: number;
  /** Now: whether the worker sleeps in poll(), and whether for rx room rather than for the device. */
  readonly worker: 'running' | 'sleeping' | 'sleeping, rx full';
}

export interface TunStats {
  readonly queues: readonly QueueStats[];
  /** send() calls refused because the flow's queue was full (nothing was dropped). */
  readonly sendRefused: number;
  /** Packets given to send() that were longer than the MTU: dropped and counted here. */
  readonly sendOversize: number;
}

/**
 * A TUN device as the data plane sees it: batches in, packets out, with
 * readiness for both directions. Every method is synchronous except the two
 * readiness waits, so a data-plane loop can run in any thread.
 *
 * Ordering: each flow (by `flowHash`) is pinned to one queue — the one
 * the kernel read it from, else `flowHash % queueCount` — and each queue is
 * one FIFO served by one thread, so a flow's packets reach the kernel in
 * the order they were sent (see FlowQueues).
 */
export interface TunDevice {
  readonly name: string;
  readonly mtu: number;
  readonly queueCount: number;
  readonly offloads: TunOffloads;
  /** True once close() has begun; receive() then returns what is left, send() throws. */
  readonly closed: boolean;

  /**
   * Fills `batch` with packets read from the device, up to its capacity,
   * without blocking; returns how many. First releases what `batch` held:
   * packets stay valid, in place, until then. With several batches in
   * flight, release them in the order they were filled.
   */
  receive(batch: PacketBatch): number;
  /** Gives the batch's packets back to the device. */
  release(batch: PacketBatch): void;
  /** Resolves once receive() has packets to return, or the device is closed. */
  readable(): Promise<void>;

  /**
   * Queues one packet (copied) for writing on its flow's queue. Returns
   * false, taking nothing, when that queue is full: await writable() and
   * send the same packet again. Never drops, except packets longer than
   * the MTU, which are counted in `sendOversize`.
   */
  send(packet: Uint8Array, offset: number, length: number): boolean;
  /** Sends batch packets from index `from` on, in order; returns how many were taken. */
  sendBatch(batch: PacketBatch, from: number): number;
  /** Resolves once the queue that last refused a packet has room, or the device is closed. */
  writable(): Promise<void>;
  /** The queue a packet's flow is pinned to. */
  queueOf(packet: Uint8Array, offset: number, length: number): number;

  stats(): TunStats;
  /** Stops the workers and closes the device; pending readiness waits resolve. */
  close(): Promise<void>;
}
