/**
 * The TUN device as a data plane owns it: `openTunQueues` opens the device
 * on the controlling thread and hands out one plain fd number per queue;
 * the thread that owns a queue wraps its fd in a `TunQueue` and reads and
 * writes batches straight between the kernel and its own packet slots.
 * `MemoryTunQueues` fakes the same `TunQueueIo` seam for tests.
 *
 * Batches have the shape of `gsoSplit` and `GroCoalescer.coalesce`: packet
 * i lives in `packets[i]` at `offsets[i]`, and the view's end bounds it (a
 * read uses at most `mtu` bytes of it).
 */
import * as libc from '@gatehouse/libc';
import {
  addressOf,
  EAGAIN,
  EINTR,
  EINVAL,
  EIO,
  EMSGSIZE,
  POLLFD_SIZE,
  POLLOUT,
} from '@gatehouse/libc';
import { closeFds, openTunDevice } from './open-device.ts';
import type { TunOffloads } from './open-device.ts';
import { GroCoalescer } from './packet/gro-coalesce.ts';
import type { WritableLengths } from './packet/gso-split.ts';
import { gsoSplit } from './packet/gso-split.ts';
import { readUint16 } from './packet/byte-order.ts';
import {
  IPV4_TOTAL_LENGTH,
  IPV6_HEADER_LENGTH,
  IPV6_PAYLOAD_LENGTH,
} from './packet/header-layout.ts';
import { VIRTIO_NET_HDR_LEN } from './packet/virtio-net-header.ts';

/**
 * Packets a queue owner moves per step in each direction. `npm run
 * bench:tun` compares 16, 64 and 256 (figures in README.md): on a 2-vCPU
 * machine they differ by less than run-to-run noise, so 64 keeps steps
 * short (~64 µs of syscalls) with Firezone's measured 100 in reach.
 */
export const TUN_BATCH_SIZE = 64;

/** One queue of a TUN device as its owning thread sees it; `MemoryTunQueues` fakes it. */
export interface TunQueueIo {
  readonly mtu: number;
  /** Packets one read may need: `read` only reads while this many of its slots are left. */
  readonly readBudget: number;
  /** Bytes a write slot needs after its packet's offset: writes may coalesce later packets into it. */
  readonly writeRoom: number;
  /** Reads dropped so far: super-packets that could not be split, or oversize packets. */
  readonly rxDropped: number;
  /** Writes refused so far as malformed (counted in what `write` did not take). */
  readonly txRejected: number;
  /**
   * Reads waiting packets without blocking into packets[i] at offsets[i]
   * for i < count (each slot holds `mtu` bytes after its offset), their
   * lengths into lengths[i], in the order the kernel sent them. Returns how
   * many (0: none).
   */
  read(
    packets: readonly Uint8Array[],
    offsets: ArrayLike<number>,
    lengths: WritableLengths,
    count: number,
  ): number;
  /**
   * Writes packets 0..count-1 (at most MAX_TUN_WRITE_BATCH); each needs
   * TUN_WRITE_HEADROOM bytes before its offset and may be rewritten in
   * place. Returns how many the kernel took; a refused coalesced write
   * counts once.
   */
  write(
    packets: readonly Uint8Array[],
    offsets: ArrayLike<number>,
    lengths: ArrayLike<number>,
    count: number,
  ): number;
  /** Idempotent; reading or writing afterwards throws. */
  close(): void;
}

/** Headroom a written packet needs: the virtio-net header goes there. */
export const TUN_WRITE_HEADROOM = VIRTIO_NET_HDR_LEN;
export const MAX_TUN_WRITE_BATCH = 256;
/** The kernel's default txqueuelen for TUN is 500: too few for a burst of a fast sender. */
const DEFAULT_TX_QUEUE_LENGTH = 5000;
/** A virtio-net header plus the largest IP packet. */
const SUPERPACKET_BUFFER_SIZE = 65536 + 64;

/**
 * Free read slots a queue wants before it reads a possible GSO
 * super-packet: enough for 64 KiB cut at the MSS this MTU gives TCP over
 * IPv6 with full options. Super-packets cut finer are dropped and counted.
 */
function superpacketSegmentBudget(mtu: number): number {
  return Math.ceil(65535 / Math.max(1, mtu - 100)) + 1;
}

export interface TunQueuesOptions {
  readonly name: string;
  readonly queues: number;
  readonly mtu: number;
  readonly offload: boolean;
  /** Default DEFAULT_TX_QUEUE_LENGTH. */
  readonly txQueueLength?: number;
}

/** Structured-cloneable: post `fds[i]` with `mtu` and `offloads` to the thread that owns queue i. */
export interface OpenedTunQueues {
  readonly name: string;
  readonly mtu: number;
  readonly offloads: TunOffloads;
  readonly fds: readonly number[];
}

/** Creates the device (exclusively) and opens its queues; every fd is non-blocking. */
export function openTunQueues(options: TunQueuesOptions): OpenedTunQueues {
  const opened = openTunDevice({
    name: options.name,
    queues: options.queues,
    mtu: options.mtu,
    txQueueLength: options.txQueueLength ?? DEFAULT_TX_QUEUE_LENGTH,
    offload: options.offload,
  });
  return { name: opened.name, mtu: options.mtu, offloads: opened.offloads, fds: opened.fds };
}

/** Closes queue fds that no TunQueue owns (e.g. when starting the owners failed). */
export function closeTunQueueFds(fds: readonly number[]): void {
  closeFds(fds);
}

const WRITE_STALL_LIMIT_MS = 50;

/** The length an IP packet's header gives; more than was read when the read cut it. */
function claimedIpLength(packet: Uint8Array, offset: number): number {
  const version = packet[offset]! >> 4;
  if (version === 4) return readUint16(packet, offset + IPV4_TOTAL_LENGTH);
  if (version === 6) return IPV6_HEADER_LENGTH + readUint16(packet, offset + IPV6_PAYLOAD_LENGTH);
  return 0;
}

export class TunQueue implements TunQueueIo {
  readonly fd: number;
  readonly mtu: number;
  readonly readBudget: number;
  readonly writeRoom: number;
  /** Reads dropped: super-packets that could not be split, or oversize packets. */
  rxDropped = 0;
  /** Writes the kernel refused as malformed (EINVAL, EIO, EMSGSIZE). */
  txRejected = 0;

  readonly #header: boolean;
  readonly #coalescer: GroCoalescer | undefined;
  readonly #writeLengths: Int32Array;
  readonly #superpacket: Uint8Array;
  readonly #superpacketAddress: number;
  readonly #splitOutputs: Uint8Array[];
  readonly #splitLengths: Int32Array;
  /** Per read slot, the view gsoSplit writes into, rebuilt only when the caller's slot changes. */
  #splitViews: Uint8Array[] = [];
  #splitViewSources: (Uint8Array | undefined)[] = [];
  #splitViewOffsets = new Int32Array(0);
  readonly #pollfd = new Int32Array(POLLFD_SIZE / 4);
  readonly #pollAddress = addressOf(this.#pollfd);
  #closed = false;

  constructor(fd: number, mtu: number, offloads: TunOffloads) {
    this.fd = fd;
    this.mtu = mtu;
    this.#header = offloads.virtioHeader;
    const segmentation = offloads.tso4 || offloads.tso6;
    this.#coalescer =
      segmentation && offloads.checksum
        ? new GroCoalescer({ maxPackets: MAX_TUN_WRITE_BATCH, udp: offloads.uso4 && offloads.uso6 })
        : undefined;
    this.readBudget = this.#header ? superpacketSegmentBudget(mtu) : 1;
    this.writeRoom = this.#coalescer === undefined ? mtu : 65_535;
    this.#writeLengths = new Int32Array(MAX_TUN_WRITE_BATCH);
    this.#superpacket = new Uint8Array(this.#header ? SUPERPACKET_BUFFER_SIZE : 0);
    this.#superpacketAddress = this.#header ? addressOf(this.#superpacket) : 0;
    this.#splitOutputs = new Array<Uint8Array>(this.readBudget).fill(this.#superpacket);
    this.#splitLengths = new Int32Array(this.readBudget);
    this.#pollfd[0] = fd;
  }

  read(
    packets: readonly Uint8Array[],
    offsets: ArrayLike<number>,
    lengths: WritableLengths,
    count: number,
  ): number {
    this.#assertOpen();
    if (this.#header) return this.#readSplit(packets, offsets, lengths, count);
    let read = 0;
    while (read < count) {
      const packet = packets[read]!;
      const offset = offsets[read]!;
      const room = Math.min(packet.length - offset, this.mtu);
      const n = this.#readInto(addressOf(packet) + offset, room);
      if (n < 0) break;
      // The kernel cuts a longer packet (the interface's MTU was raised) to the room it is given.
      if (n === room && claimedIpLength(packet, offset) > n) {
        this.rxDropped++;
        continue;
      }
      lengths[read++] = n;
    }
    return read;
  }

  #readSplit(
    packets: readonly Uint8Array[],
    offsets: ArrayLike<number>,
    lengths: WritableLengths,
    count: number,
  ): number {
    if (count > this.#splitViews.length) this.#growSplitViews(count);
    const budget = this.readBudget;
    let read = 0;
    while (count - read >= budget) {
      const n = this.#readInto(this.#superpacketAddress, this.#superpacket.length);
      if (n < 0) break;
      for (let i = 0; i < budget; i++) {
        this.#splitOutputs[i] = this.#splitView(packets, offsets, read + i);
      }
      const split = gsoSplit(this.#superpacket, 0, n, this.#splitOutputs, 0, this.#splitLengths);
      if (typeof split === 'string') {
        this.rxDropped++;
        continue;
      }
      for (let i = 0; i < split; i++) lengths[read + i] = this.#splitLengths[i]!;
      read += split;
    }
    return read;
  }

  #splitView(packets: readonly Uint8Array[], offsets: ArrayLike<number>, slot: number): Uint8Array {
    const packet = packets[slot]!;
    const offset = offsets[slot]!;
    if (this.#splitViewSources[slot] !== packet || this.#splitViewOffsets[slot] !== offset) {
      this.#splitViews[slot] = packet.subarray(offset, offset + this.mtu);
      this.#splitViewSources[slot] = packet;
      this.#splitViewOffsets[slot] = offset;
    }
    return this.#splitViews[slot]!;
  }

  #growSplitViews(count: number): void {
    const offsets = new Int32Array(count);
    offsets.set(this.#splitViewOffsets);
    this.#splitViewOffsets = offsets;
    this.#splitViews.length = count;
    this.#splitViewSources.length = count;
  }

  /** One read(); -1 when nothing is waiting. */
  #readInto(address: number, capacity: number): number {
    for (;;) {
      const n = libc.read(this.fd, address, capacity);
      if (n >= 0) return n;
      const errno = libc.errno();
      if (errno === EAGAIN) return -1;
      if (errno !== EINTR) throw new libc.SystemCallError('TUN read', errno);
    }
  }

  write(
    packets: readonly Uint8Array[],
    offsets: ArrayLike<number>,
    lengths: ArrayLike<number>,
    count: number,
  ): number {
    this.#assertOpen();
    const coalescer = this.#coalescer;
    if (coalescer !== undefined && count > 1) {
      const writeLengths = this.#writeLengths;
      const writes = coalescer.coalesce(packets, offsets, lengths, count, writeLengths);
      if (typeof writes === 'string') throw new RangeError(`TUN write: ${writes}`);
      let refused = 0;
      for (let i = 0; i < count; i++) {
        const length = writeLengths[i]!;
        if (length === 0) continue;
        const packet = packets[i]!;
        const start = offsets[i]! - VIRTIO_NET_HDR_LEN;
        if (!this.#writeOne(addressOf(packet) + start, length)) refused++;
      }
      return count - refused;
    }
    const header = this.#header ? VIRTIO_NET_HDR_LEN : 0;
    let written = 0;
    for (let i = 0; i < count; i++) {
      const packet = packets[i]!;
      const start = offsets[i]! - header;
      // A zeroed virtio-net header: no offload asked of the kernel.
      if (header !== 0) packet.fill(0, start, start + header);
      if (this.#writeOne(addressOf(packet) + start, lengths[i]! + header)) written++;
    }
    return written;
  }

  /** One write(); false when the kernel refused this packet or stayed full too long. */
  #writeOne(address: number, length: number): boolean {
    let stalledSince = 0;
    for (;;) {
      const n = libc.write(this.fd, address, length);
      if (n >= 0) return true;
      const errno = libc.errno();
      if (errno === EINTR) continue;
      if (errno === EAGAIN) {
        const now = performance.now();
        if (stalledSince === 0) stalledSince = now;
        else if (now - stalledSince > WRITE_STALL_LIMIT_MS) return false;
        this.#pollfd[1] = POLLOUT;
        libc.poll(this.#pollAddress, 1, 5);
        continue;
      }
      if (errno === EINVAL || errno === EIO || errno === EMSGSIZE) {
        this.txRejected++;
        return false;
      }
      throw new libc.SystemCallError('TUN write', errno);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc.close(this.fd);
  }

  /** A closed queue's fd number may already belong to another file. */
  #assertOpen(): void {
    if (this.#closed) throw new Error('TUN queue is closed');
  }
}
