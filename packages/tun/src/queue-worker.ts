/**
 * One queue's thread: the only thread that reads or writes that queue's
 * file descriptor. It alternates between writing what the consumer put in
 * the tx ring and reading into free rx slots, up to TUN_BATCH_SIZE packets
 * each, and sleeps in poll() on the queue fd plus its wake-up eventfd when
 * neither has work, so a stop request always gets through.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { addressOf, libc } from './libc.ts';
import {
  EAGAIN,
  EINTR,
  EINVAL,
  EIO,
  EMSGSIZE,
  POLLERR,
  POLLFD_SIZE,
  POLLHUP,
  POLLIN,
  POLLOUT,
} from './linux-constants.ts';
import { gsoSplit } from './packet/gso-split.ts';
import { VIRTIO_NET_HDR_LEN } from './packet/virtio-net-header.ts';
import {
  RX_EPOCH_WORD,
  RX_FULL_WORD,
  RX_HEAD_WORD,
  RX_TAIL_WORD,
  RX_WAITING_WORD,
  SLEEPING_WORD,
  SLOT_HEADROOM,
  SLOT_TAILROOM,
  STAT_RX_BYTES,
  STAT_RX_DROPPED,
  STAT_RX_PACKETS,
  STAT_RX_RING_FULL,
  STAT_RX_SUPERPACKETS,
  SUPERPACKET_BUFFER_SIZE,
  STAT_TX_BYTES,
  STAT_TX_PACKETS,
  STAT_TX_REJECTED,
  STOP_WORD,
  TX_EPOCH_WORD,
  TX_HEAD_WORD,
  TX_TAIL_WORD,
  TX_WAITING_WORD,
  deviceControlBase,
  queueControlBase,
  queueStatsBase,
  rxLengthBase,
  rxPacketBase,
  superpacketBufferBase,
  superpacketSegmentBudget,
  txLengthBase,
  txPacketBase,
} from './queue-layout.ts';
import type { QueueLayout } from './queue-layout.ts';
import type { TunOffloads } from './open-device.ts';
import { TUN_BATCH_SIZE } from './tun-device.ts';

export interface QueueWorkerData {
  readonly layout: QueueLayout;
  readonly queue: number;
  readonly fd: number;
  readonly wakeFd: number;
  readonly offloads: TunOffloads;
  /** Packets per read or write step; TUN_BATCH_SIZE unless a benchmark varies it. */
  readonly batchSize?: number;
}

/**
 * `ready` once, as the loop starts: 'online' comes before this module and
 * koffi have loaded, a few hundred ms earlier on a loaded machine. `failed`
 * once, when the loop ends for a reason other than a stop request.
 */
export type QueueWorkerMessage = { readonly ready: true } | { readonly failed: string };

const { layout, queue, fd, wakeFd, offloads, batchSize } = workerData as QueueWorkerData;
const c = libc();
const batch = batchSize ?? TUN_BATCH_SIZE;
const control = new Int32Array(layout.control);
const lengths = new Int32Array(layout.lengths);
const stats = new Float64Array(layout.stats);
const memory = new Uint8Array(layout.memory);
const memoryAddress = addressOf(layout.memory);
const base = queueControlBase(queue);
const deviceBase = deviceControlBase(layout);
const statsBase = queueStatsBase(queue);
const slots = layout.slots;
const mask = slots - 1;
const stride = layout.slotStride;
const rxPackets = rxPacketBase(layout, queue);
const txPackets = txPacketBase(layout, queue);
const rxLengths = rxLengthBase(layout, queue);
const txLengths = txLengthBase(layout, queue);
const header = offloads.virtioHeader ? VIRTIO_NET_HDR_LEN : 0;
const packetCapacity = stride - SLOT_HEADROOM - SLOT_TAILROOM;

// With offloads, reads land in the super-packet buffer and gsoSplit copies
// them, segmented and with complete checksums, into these rx slot views.
const superpacketAt = offloads.virtioHeader ? superpacketBufferBase(layout, queue) : 0;
const segmentBudget = offloads.virtioHeader ? superpacketSegmentBudget(layout.mtu) : 1;
const slotViews: Uint8Array[] = [];
const segmentViews: Uint8Array[] = [];
const segmentLengths = new Int32Array(segmentBudget);
if (offloads.virtioHeader) {
  for (let slot = 0; slot < slots; slot++) {
    const at = rxPacketBase(layout, queue) + slot * stride;
    slotViews.push(memory.subarray(at, at + packetCapacity));
  }
  for (let i = 0; i < segmentBudget; i++) segmentViews.push(slotViews[i]!);
}

const pollBuffer = new ArrayBuffer(2 * POLLFD_SIZE + 8);
const pollWords = new Int32Array(pollBuffer);
const pollEvents = new Int16Array(pollBuffer);
const pollAddress = addressOf(pollBuffer);
const wakeValueAddress = pollAddress + 2 * POLLFD_SIZE;
pollWords[0] = fd;
pollWords[2] = wakeFd;
pollEvents[6] = POLLIN;

let rxHead = 0;
let txTail = 0;
let txBlocked = false;
let rxDry = false;

try {
  parentPort?.postMessage({ ready: true } satisfies QueueWorkerMessage);
  run();
} catch (error) {
  parentPort?.postMessage({ failed: String(error) } satisfies QueueWorkerMessage);
}

function run(): void {
  for (;;) {
    if (Atomics.load(control, base + STOP_WORD) !== 0) return;
    const written = txBlocked ? 0 : writeBatch();
    const read = readBatch();
    if (written > 0 || read > 0) continue;
    sleep();
  }
}

function writeBatch(): number {
  const head = Atomics.load(control, base + TX_HEAD_WORD);
  let count = 0;
  while (txTail !== head && count < batch) {
    const slot = txTail & mask;
    const at = txPackets + slot * stride;
    const length = lengths[txLengths + slot]!;
    // A zero virtio-net header (no offload asked) sits in the slot's headroom.
    if (header !== 0) memory.fill(0, at - header, at);
    const n = c.write(fd, memoryAddress + at - header, length + header);
    if (n < 0) {
      const errno = c.errno();
      if (errno === EINTR) continue;
      if (errno === EAGAIN) {
        txBlocked = true;
        break;
      }
      if (!isPacketError(errno)) throw new Error(`write: ${c.strerror(errno)} (errno ${errno})`);
      stats[statsBase + STAT_TX_REJECTED]!++;
    } else {
      stats[statsBase + STAT_TX_PACKETS]!++;
      stats[statsBase + STAT_TX_BYTES]! += length;
    }
    txTail = (txTail + 1) | 0;
    count++;
  }
  if (count > 0) {
    Atomics.store(control, base + TX_TAIL_WORD, txTail);
    if (Atomics.load(control, base + TX_WAITING_WORD) !== 0) {
      Atomics.add(control, base + TX_EPOCH_WORD, 1);
      Atomics.notify(control, base + TX_EPOCH_WORD);
    }
  }
  return count;
}

function rxRoom(): number {
  return slots - ((rxHead - Atomics.load(control, base + RX_TAIL_WORD)) | 0);
}

function readBatch(): number {
  const room = rxRoom();
  let count = 0;
  rxDry = false;
  while (count + segmentBudget <= room && count < batch) {
    const read = header === 0 ? readPacket() : readSuperpacket();
    if (read < 0) {
      rxDry = true;
      break;
    }
    count += read;
  }
  if (count > 0) {
    Atomics.store(control, base + RX_HEAD_WORD, rxHead);
    if (Atomics.load(control, deviceBase + RX_WAITING_WORD) !== 0) {
      Atomics.add(control, deviceBase + RX_EPOCH_WORD, 1);
      Atomics.notify(control, deviceBase + RX_EPOCH_WORD);
    }
  }
  return count;
}

/** Reads one packet straight into the next rx slot; the packets delivered, or -1 when dry. */
function readPacket(): number {
  const slot = rxHead & mask;
  const n = readOrDry(memoryAddress + rxPackets + slot * stride, packetCapacity);
  if (n < 0) return -1;
  if (n > layout.mtu) {
    stats[statsBase + STAT_RX_DROPPED]!++;
    return 0;
  }
  deliver(slot, n);
  return 1;
}

/** Reads one virtio-net framed packet and splits it into rx slots; as readPacket. */
function readSuperpacket(): number {
  const n = readOrDry(memoryAddress + superpacketAt, SUPERPACKET_BUFFER_SIZE);
  if (n < 0) return -1;
  for (let i = 0; i < segmentBudget; i++) segmentViews[i] = slotViews[(rxHead + i) & mask]!;
  const split = gsoSplit(memory, superpacketAt, n, segmentViews, 0, segmentLengths);
  if (typeof split === 'string') {
    stats[statsBase + STAT_RX_DROPPED]!++;
    return 0;
  }
  if (memory[superpacketAt + 1] !== 0) stats[statsBase + STAT_RX_SUPERPACKETS]!++;
  for (let i = 0; i < split; i++) deliver(rxHead & mask, segmentLengths[i]!);
  return split;
}

function readOrDry(address: number, capacity: number): number {
  for (;;) {
    const n = c.read(fd, address, capacity);
    if (n >= 0) return n;
    const errno = c.errno();
    if (errno === EAGAIN) return -1;
    if (errno !== EINTR) throw new Error(`read: ${c.strerror(errno)} (errno ${errno})`);
  }
}

function deliver(slot: number, length: number): void {
  lengths[rxLengths + slot] = length;
  stats[statsBase + STAT_RX_PACKETS]!++;
  stats[statsBase + STAT_RX_BYTES]! += length;
  rxHead = (rxHead + 1) | 0;
}

function sleep(): void {
  // Full means too little room for one read (a whole split super-packet with
  // offloads): polling the readable device then would return at once, forever.
  const rxFull = !rxDry && rxRoom() < segmentBudget;
  Atomics.store(control, base + RX_FULL_WORD, rxFull ? 1 : 0);
  Atomics.store(control, base + SLEEPING_WORD, 1);
  // Re-check after raising the flag: the consumer checks the flag after publishing.
  const txPending = !txBlocked && Atomics.load(control, base + TX_HEAD_WORD) !== txTail;
  const rxFreed = rxFull && rxRoom() >= segmentBudget;
  if (txPending || rxFreed || Atomics.load(control, base + STOP_WORD) !== 0) {
    Atomics.store(control, base + SLEEPING_WORD, 0);
    return;
  }
  if (rxFull) stats[statsBase + STAT_RX_RING_FULL]!++;
  pollEvents[2] = (rxFull ? 0 : POLLIN) | (txBlocked ? POLLOUT : 0);
  pollEvents[3] = 0;
  pollEvents[7] = 0;
  const ready = c.poll(pollAddress, 2, -1);
  Atomics.store(control, base + SLEEPING_WORD, 0);
  if (ready < 0) {
    const errno = c.errno();
    if (errno === EINTR) return;
    throw new Error(`poll: ${c.strerror(errno)} (errno ${errno})`);
  }
  const deviceEvents = pollEvents[3]!;
  if ((deviceEvents & POLLOUT) !== 0) txBlocked = false;
  if ((deviceEvents & (POLLERR | POLLHUP)) !== 0) throw new Error('the TUN queue was hung up');
  if ((pollEvents[7]! & POLLIN) !== 0) c.read(wakeFd, wakeValueAddress, 8);
}

/** errno values that mean "this packet", not "this device": count and carry on. */
function isPacketError(errno: number): boolean {
  return errno === EINVAL || errno === EIO || errno === EMSGSIZE;
}
