import { FlowQueues } from './flow-queues.ts';
import { flowHash } from './packet/flow.ts';
import {
  CLOSED_WORD,
  RX_EPOCH_WORD,
  RX_FULL_WORD,
  RX_HEAD_WORD,
  RX_TAIL_WORD,
  RX_WAITING_WORD,
  SLEEPING_WORD,
  STAT_RX_BYTES,
  STAT_RX_DROPPED,
  STAT_RX_PACKETS,
  STAT_RX_RING_FULL,
  STAT_RX_SUPERPACKETS,
  STAT_TX_BYTES,
  STAT_TX_PACKETS,
  STAT_TX_REJECTED,
  TX_EPOCH_WORD,
  TX_HEAD_WORD,
  TX_TAIL_WORD,
  TX_WAITING_WORD,
  deviceControlBase,
  queueControlBase,
  queueStatsBase,
  rxLengthBase,
  rxPacketBase,
  txLengthBase,
  txPacketBase,
} from './queue-layout.ts';
import type { QueueLayout } from './queue-layout.ts';
import type { PacketBatch, QueueStats, TunStats } from './tun-device.ts';

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

/**
 * The consumer's end of the queue rings: takes rx slots, fills tx slots,
 * waits for readiness with Atomics.waitAsync. One instance per consuming
 * thread; it may live in any thread that has the layout. `wake(queue)` must
 * make that queue's worker return from poll().
 */
export class QueueRings {
  readonly layout: QueueLayout;
  readonly memory: Uint8Array;
  private readonly control: Int32Array;
  private readonly lengths: Int32Array;
  private readonly counters: Float64Array;
  private readonly wake: (queue: number) => void;
  private readonly mask: number;
  private readonly deviceBase: number;
  /** Per queue: next rx position to hand out, released rx tail, our tx head, last seen tx tail. */
  private readonly rxNext: Int32Array;
  private readonly rxTail: Int32Array;
  private readonly txHead: Int32Array;
  private readonly txTailSeen: Int32Array;
  private readonly flows = new FlowQueues();
  private readonly drained = (queue: number, position: number): boolean =>
    ((Atomics.load(this.control, queueControlBase(queue) + TX_TAIL_WORD) - position) | 0) >= 0;
  private firstQueue = 0;
  private refusedQueue = -1;
  private sendRefused = 0;
  private sendOversize = 0;

  constructor(layout: QueueLayout, wake: (queue: number) => void) {
    this.layout = layout;
    this.memory = new Uint8Array(layout.memory);
    this.control = new Int32Array(layout.control);
    this.lengths = new Int32Array(layout.lengths);
    this.counters = new Float64Array(layout.stats);
    this.wake = wake;
    this.mask = layout.slots - 1;
    this.deviceBase = deviceControlBase(layout);
    this.rxNext = new Int32Array(layout.queueCount);
    this.rxTail = new Int32Array(layout.queueCount);
    this.txHead = new Int32Array(layout.queueCount);
    this.txTailSeen = new Int32Array(layout.queueCount);
  }

  get closed(): boolean {
    return Atomics.load(this.control, this.deviceBase + CLOSED_WORD) !== 0;
  }

  receive(batch: PacketBatch): number {
    this.release(batch);
    const { layout, control, lengths, memory, mask } = this;
    const queueCount = layout.queueCount;
    const stride = layout.slotStride;
    let count = 0;
    // Start at a different queue each call so that no queue can starve another.
    for (let k = 0; k < queueCount && count < batch.capacity; k++) {
      const queue = (this.firstQueue + k) % queueCount;
      const head = Atomics.load(control, queueControlBase(queue) + RX_HEAD_WORD);
      const packetBase = rxPacketBase(layout, queue);
      const lengthBase = rxLengthBase(layout, queue);
      let position = this.rxNext[queue]!;
      while (position !== head && count < batch.capacity) {
        const slot = position & mask;
        const offset = packetBase + slot * stride;
        const length = lengths[lengthBase + slot]!;
        this.flows.learn(flowHash(memory, offset, length), queue, this.drained);
        batch.buffers[count] = memory;
        batch.offsets[count] = offset;
        batch.lengths[count] = length;
        batch.queues[count] = queue;
        count++;
        position = (position + 1) | 0;
      }
      batch.held[queue]! += (position - this.rxNext[queue]!) | 0;
      this.rxNext[queue] = position;
    }
    this.firstQueue = (this.firstQueue + 1) % queueCount;
    batch.count = count;
    return count;
  }

  release(batch: PacketBatch): void {
    const { control, layout } = this;
    for (let queue = 0; queue < layout.queueCount; queue++) {
      const held = batch.held[queue]!;
      if (held === 0) continue;
      batch.held[queue] = 0;
      const base = queueControlBase(queue);
      const tail = (this.rxTail[queue]! + held) | 0;
      this.rxTail[queue] = tail;
      Atomics.store(control, base + RX_TAIL_WORD, tail);
      if (
        Atomics.load(control, base + SLEEPING_WORD) !== 0 &&
        Atomics.load(control, base + RX_FULL_WORD) !== 0
      ) {
        this.wake(queue);
      }
    }
    batch.count = 0;
  }

  async readable(): Promise<void> {
    const { control } = this;
    const waiting = this.deviceBase + RX_WAITING_WORD;
    const epochWord = this.deviceBase + RX_EPOCH_WORD;
    for (;;) {
      Atomics.store(control, waiting, 1);
      const epoch = Atomics.load(control, epochWord);
      if (this.hasReceivable() || this.closed) {
        Atomics.store(control, waiting, 0);
        return;
      }
      const result = Atomics.waitAsync(control, epochWord, epoch);
      if (result.async) await result.value;
    }
  }

  queueOf(packet: Uint8Array, offset: number, length: number): number {
    const hash = flowHash(packet, offset, length);
    const learned = this.flows.lookup(hash);
    return learned >= 0 ? learned : hash % this.layout.queueCount;
  }

  send(packet: Uint8Array, offset: number, length: number): boolean {
    if (this.closed) throw new Error('TUN device is closed');
    if (length > this.layout.mtu) {
      this.sendOversize++;
      return true;
    }
    const { layout, control, mask } = this;
    const hash = flowHash(packet, offset, length);
    const queue =
      hash === 0 ? 0 : this.flows.queueFor(hash, hash % layout.queueCount, this.drained);
    const base = queueControlBase(queue);
    const head = this.txHead[queue]!;
    if (((head - this.txTailSeen[queue]!) | 0) >= layout.slots) {
      const tail = Atomics.load(control, base + TX_TAIL_WORD);
      this.txTailSeen[queue] = tail;
      if (((head - tail) | 0) >= layout.slots) {
        this.refusedQueue = queue;
        this.sendRefused++;
        return false;
      }
    }
    const slot = head & mask;
    const at = txPacketBase(layout, queue) + slot * layout.slotStride;
    if (packet.buffer === this.memory.buffer) {
      // Forwarding from a slot of this device: a copy inside one buffer allocates nothing.
      const from = packet.byteOffset + offset;
      this.memory.copyWithin(at, from, from + length);
    } else {
      this.memory.set(packet.subarray(offset, offset + length), at);
    }
    this.lengths[txLengthBase(layout, queue) + slot] = length;
    this.txHead[queue] = (head + 1) | 0;
    if (hash !== 0) this.flows.wrote(hash, (head + 1) | 0);
    Atomics.store(control, base + TX_HEAD_WORD, (head + 1) | 0);
    if (Atomics.load(control, base + SLEEPING_WORD) !== 0) this.wake(queue);
    return true;
  }

  sendBatch(batch: PacketBatch, from: number): number {
    let index = from;
    while (index < batch.count) {
      if (!this.send(batch.buffers[index]!, batch.offsets[index]!, batch.lengths[index]!)) break;
      index++;
    }
    return index - from;
  }

  async writable(): Promise<void> {
    const queue = this.refusedQueue;
    if (queue < 0) return;
    const { control, layout } = this;
    const base = queueControlBase(queue);
    for (;;) {
      Atomics.store(control, base + TX_WAITING_WORD, 1);
      const epoch = Atomics.load(control, base + TX_EPOCH_WORD);
      const tail = Atomics.load(control, base + TX_TAIL_WORD);
      this.txTailSeen[queue] = tail;
      if (((this.txHead[queue]! - tail) | 0) < layout.slots || this.closed) {
        Atomics.store(control, base + TX_WAITING_WORD, 0);
        this.refusedQueue = -1;
        return;
      }
      const result = Atomics.waitAsync(control, base + TX_EPOCH_WORD, epoch);
      if (result.async) await result.value;
    }
  }

  /** Marks the device closed and wakes every readiness wait. */
  markClosed(): void {
    const { control, deviceBase } = this;
    Atomics.store(control, deviceBase + CLOSED_WORD, 1);
    Atomics.add(control, deviceBase + RX_EPOCH_WORD, 1);
    Atomics.notify(control, deviceBase + RX_EPOCH_WORD);
    for (let queue = 0; queue < this.layout.queueCount; queue++) {
      const word = queueControlBase(queue) + TX_EPOCH_WORD;
      Atomics.add(control, word, 1);
      Atomics.notify(control, word);
    }
  }

  stats(): TunStats {
    const queues: QueueStats[] = [];
    const { control } = this;
    for (let queue = 0; queue < this.layout.queueCount; queue++) {
      const base = queueStatsBase(queue);
      const words = queueControlBase(queue);
      const c = this.counters;
      const sleeping = Atomics.load(control, words + SLEEPING_WORD) !== 0;
      const rxFull = Atomics.load(control, words + RX_FULL_WORD) !== 0;
      queues.push({
        rxPackets: c[base + STAT_RX_PACKETS]!,
        rxBytes: c[base + STAT_RX_BYTES]!,
        txPackets: c[base + STAT_TX_PACKETS]!,
        txBytes: c[base + STAT_TX_BYTES]!,
        txRejected: c[base + STAT_TX_REJECTED]!,
        rxSuperpackets: c[base + STAT_RX_SUPERPACKETS]!,
        rxDropped: c[base + STAT_RX_DROPPED]!,
        rxRingFull: c[base + STAT_RX_RING_FULL]!,
        rxRingUsed:
          (Atomics.load(control, words + RX_HEAD_WORD) -
            Atomics.load(control, words + RX_TAIL_WORD)) |
          0,
        txRingUsed: (this.txHead[queue]! - Atomics.load(control, words + TX_TAIL_WORD)) | 0,
        worker: sleeping ? (rxFull ? 'sleeping, rx full' : 'sleeping') : 'running',
      });
    }
    return { queues, sendRefused: this.sendRefused, sendOversize: this.sendOversize };
  }

  private hasReceivable(): boolean {
    for (let queue = 0; queue < this.layout.queueCount; queue++) {
      const head = Atomics.load(this.control, queueControlBase(queue) + RX_HEAD_WORD);
      if (head !== this.rxNext[queue]) return true;
    }
    return false;
  }
}
