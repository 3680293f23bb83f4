/**
 * The shared memory between the queue workers and the thread that consumes
 * the device: everything a thread needs to attach, as structured-clonable
 * SharedArrayBuffers plus sizes.
 *
 * Per queue there are two single-producer single-consumer rings of fixed
 * slots: rx (worker → consumer) and tx (consumer → worker). Ring position p
 * *is* slot p & (slots - 1), so there are no free lists: the producer fills
 * the slot at its head and publishes by advancing head; the consumer works
 * on slots in place between tail and head and gives them back, in order, by
 * advancing tail. Heads and tails are free-running 32-bit counters.
 *
 * A slot is `headroom | packet (≤ mtu) | tailroom`. The headroom takes the
 * 10-byte virtio-net header so a worker writes header and packet in one
 * write(), or the 16-byte WireGuard data header, and the tailroom the
 * 16-byte tag plus padding, so a data-plane engine can seal and open
 * packets inside their slots.
 */
export interface QueueLayout {
  readonly queueCount: number;
  /** Slots per ring, a power of two. */
  readonly slots: number;
  readonly slotStride: number;
  readonly mtu: number;
  readonly offload: boolean;
  /** Int32 words: heads, tails, sleep flags, wake-up epochs (see the *_WORD constants). */
  readonly control: SharedArrayBuffer;
  /** Int32 per slot: the packet length. Queue q's rx ring first, then its tx ring. */
  readonly lengths: SharedArrayBuffer;
  /**
   * The slots: queue q's rx ring, then its tx ring; with offloads, then one
   * read buffer per queue for GSO super-packets (split into rx slots).
   */
  readonly memory: SharedArrayBuffer;
  /** Float64 counters per queue, each written by its worker only (see the STAT_* constants). */
  readonly stats: SharedArrayBuffer;
}

export const SLOT_HEADROOM = 32;
/** A virtio-net header plus the largest IP packet. */
export const SUPERPACKET_BUFFER_SIZE = 65536 + 64;
export const SLOT_TAILROOM = 32;
const CACHE_LINE_WORDS = 16;

// Words of a queue's control block, one cache line per writer.
export const RX_HEAD_WORD = 0;
export const RX_TAIL_WORD = CACHE_LINE_WORDS;
export const TX_HEAD_WORD = 2 * CACHE_LINE_WORDS;
export const TX_TAIL_WORD = 3 * CACHE_LINE_WORDS;
/** 1 while the worker blocks in poll(); whoever then gives it work writes its wake-up fd. */
export const SLEEPING_WORD = 4 * CACHE_LINE_WORDS;
/** 1 while the worker sleeps because its rx ring has no room for one more read. */
export const RX_FULL_WORD = SLEEPING_WORD + 1;
export const STOP_WORD = SLEEPING_WORD + 2;
/** 1 while the consumer waits for room in this queue's tx ring. */
export const TX_WAITING_WORD = 5 * CACHE_LINE_WORDS;
export const TX_EPOCH_WORD = TX_WAITING_WORD + 1;
const QUEUE_CONTROL_WORDS = 6 * CACHE_LINE_WORDS;

// Words of the device-wide block after the queues' blocks.
/** 1 while the consumer waits for any rx ring to fill. */
export const RX_WAITING_WORD = 0;
export const RX_EPOCH_WORD = 1;
export const CLOSED_WORD = 2;

export const STAT_RX_PACKETS = 0;
export const STAT_RX_BYTES = 1;
export const STAT_TX_PACKETS = 2;
export const STAT_TX_BYTES = 3;
/** Packets the kernel refused to take from a write (malformed, unsupported). */
export const STAT_TX_REJECTED = 4;
/** GSO super-packets read and split into segments. */
export const STAT_RX_SUPERPACKETS = 5;
/** Packets read that could not be delivered (larger than a slot, bad offload metadata). */
export const STAT_RX_DROPPED = 6;
/** Times the worker stopped reading because the consumer had not released rx slots. */
export const STAT_RX_RING_FULL = 7;
const STATS_PER_QUEUE = 8;

/**
 * Free rx slots a worker wants before it reads a possible GSO super-packet:
 * enough for 64 KiB cut at the MSS this MTU gives TCP over IPv6 with full
 * options. Super-packets cut finer than that are dropped and counted.
 */
export function superpacketSegmentBudget(mtu: number): number {
  return Math.ceil(65535 / Math.max(1, mtu - 100)) + 1;
}

export function createQueueLayout(
  queueCount: number,
  slots: number,
  mtu: number,
  offload: boolean,
): QueueLayout {
  if (!Number.isInteger(slots) || slots < 2 || (slots & (slots - 1)) !== 0) {
    throw new RangeError(`ring slots must be a power of two ≥ 2, got ${slots}`);
  }
  if (offload && slots < superpacketSegmentBudget(mtu)) {
    throw new RangeError(
      `with offloads, ring slots must hold a split super-packet: ≥ ${superpacketSegmentBudget(mtu)}`,
    );
  }
  const slotStride = Math.ceil((SLOT_HEADROOM + mtu + SLOT_TAILROOM) / 64) * 64;
  return {
    queueCount,
    slots,
    slotStride,
    mtu,
    offload,
    control: new SharedArrayBuffer((queueCount * QUEUE_CONTROL_WORDS + CACHE_LINE_WORDS) * 4),
    lengths: new SharedArrayBuffer(queueCount * 2 * slots * 4),
    memory: new SharedArrayBuffer(
      queueCount * (2 * slots * slotStride + (offload ? SUPERPACKET_BUFFER_SIZE : 0)),
    ),
    stats: new SharedArrayBuffer(queueCount * STATS_PER_QUEUE * 8),
  };
}

export function queueControlBase(queue: number): number {
  return queue * QUEUE_CONTROL_WORDS;
}

export function deviceControlBase(layout: QueueLayout): number {
  return layout.queueCount * QUEUE_CONTROL_WORDS;
}

export function queueStatsBase(queue: number): number {
  return queue * STATS_PER_QUEUE;
}

/** Index into `lengths` of slot 0 of queue q's rx ring; its tx ring follows `slots` later. */
export function rxLengthBase(layout: QueueLayout, queue: number): number {
  return queue * 2 * layout.slots;
}

export function txLengthBase(layout: QueueLayout, queue: number): number {
  return rxLengthBase(layout, queue) + layout.slots;
}

/** Byte offset in `memory` of the packet in rx slot 0 of queue q (headroom skipped). */
export function rxPacketBase(layout: QueueLayout, queue: number): number {
  return queue * 2 * layout.slots * layout.slotStride + SLOT_HEADROOM;
}

export function txPacketBase(layout: QueueLayout, queue: number): number {
  return rxPacketBase(layout, queue) + layout.slots * layout.slotStride;
}

/** Byte offset in `memory` of queue q's super-packet read buffer (layouts with offload only). */
export function superpacketBufferBase(layout: QueueLayout, queue: number): number {
  return layout.queueCount * 2 * layout.slots * layout.slotStride + queue * SUPERPACKET_BUFFER_SIZE;
}
