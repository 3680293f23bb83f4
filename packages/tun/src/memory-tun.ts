import { flowHash } from './packet/flow.ts';
import { NO_OFFLOADS } from './open-device.ts';
import {
  RX_EPOCH_WORD,
  RX_HEAD_WORD,
  RX_TAIL_WORD,
  RX_WAITING_WORD,
  TX_EPOCH_WORD,
  TX_HEAD_WORD,
  TX_TAIL_WORD,
  TX_WAITING_WORD,
  createQueueLayout,
  deviceControlBase,
  queueControlBase,
  rxLengthBase,
  rxPacketBase,
  txLengthBase,
  txPacketBase,
} from './queue-layout.ts';
import { QueueRings } from './queue-rings.ts';
import { RingTunDevice } from './ring-tun-device.ts';

export interface MemoryTunOptions {
  readonly name?: string;
  readonly queues?: number;
  readonly mtu?: number;
  /** Slots per ring and direction; small values make backpressure easy to reach. */
  readonly ringSlots?: number;
}

/**
 * An in-memory TunDevice for other packages' tests: the same rings, batch
 * API, flow pinning and backpressure as the Linux device, with the test
 * playing the kernel. `inject` is a packet the kernel routed into the
 * device, steered as the kernel does: to the queue that last wrote its
 * flow, else by a hash unlike ours; `takeWritten` hands over what the device wrote to the kernel,
 * queue by queue, each queue in order, and frees that room.
 */
export class MemoryTun extends RingTunDevice {
  readonly name: string;
  readonly mtu: number;
  readonly queueCount: number;
  readonly offloads = NO_OFFLOADS;
  /** Packets inject() could not place because the consumer held every rx slot of their queue. */
  injectDropped = 0;
  private readonly control: Int32Array;
  private readonly lengths: Int32Array;
  private readonly memory: Uint8Array;
  private readonly slots: number;
  private readonly stride: number;
  private readonly lastWriter = new Map<number, number>();

  constructor(options: MemoryTunOptions = {}) {
    const mtu = options.mtu ?? 1280;
    const queueCount = options.queues ?? 2;
    const layout = createQueueLayout(queueCount, options.ringSlots ?? 256, mtu, false);
    super(new QueueRings(layout, () => undefined));
    this.name = options.name ?? 'memory-tun';
    this.mtu = mtu;
    this.queueCount = queueCount;
    this.control = new Int32Array(layout.control);
    this.lengths = new Int32Array(layout.lengths);
    this.memory = this.rings.memory;
    this.slots = layout.slots;
    this.stride = layout.slotStride;
  }

  /** As if the kernel routed this packet into the device; false (and counted) when its queue is full. */
  inject(packet: Uint8Array, offset = 0, length = packet.length - offset): boolean {
    if (length > this.mtu)
      throw new RangeError(`packet of ${length} bytes exceeds MTU ${this.mtu}`);
    const layout = this.rings.layout;
    const hash = flowHash(packet, offset, length);
    // Like the kernel: the queue that last wrote the flow, else a hash of its own.
    const queue =
      this.lastWriter.get(hash) ?? (Math.imul(hash, 0x9e3779b1) >>> 0) % this.queueCount;
    const base = queueControlBase(queue);
    const head = Atomics.load(this.control, base + RX_HEAD_WORD);
    if (((head - Atomics.load(this.control, base + RX_TAIL_WORD)) | 0) >= this.slots) {
      this.injectDropped++;
      return false;
    }
    const slot = head & (this.slots - 1);
    this.memory.set(
      packet.subarray(offset, offset + length),
      rxPacketBase(layout, queue) + slot * this.stride,
    );
    this.lengths[rxLengthBase(layout, queue) + slot] = length;
    Atomics.store(this.control, base + RX_HEAD_WORD, (head + 1) | 0);
    const device = deviceControlBase(layout);
    if (Atomics.load(this.control, device + RX_WAITING_WORD) !== 0) {
      Atomics.add(this.control, device + RX_EPOCH_WORD, 1);
      Atomics.notify(this.control, device + RX_EPOCH_WORD);
    }
    return true;
  }

  /** Copies of the packets written since the last call, queue 0's first; frees their room. */
  takeWritten(): Uint8Array[] {
    const layout = this.rings.layout;
    const written: Uint8Array[] = [];
    for (let queue = 0; queue < this.queueCount; queue++) {
      const base = queueControlBase(queue);
      const head = Atomics.load(this.control, base + TX_HEAD_WORD);
      let tail = Atomics.load(this.control, base + TX_TAIL_WORD);
      if (tail === head) continue;
      while (tail !== head) {
        const slot = tail & (this.slots - 1);
        const at = txPacketBase(layout, queue) + slot * this.stride;
        const length = this.lengths[txLengthBase(layout, queue) + slot]!;
        this.lastWriter.set(flowHash(this.memory, at, length), queue);
        written.push(this.memory.slice(at, at + length));
        tail = (tail + 1) | 0;
      }
      Atomics.store(this.control, base + TX_TAIL_WORD, tail);
      if (Atomics.load(this.control, base + TX_WAITING_WORD) !== 0) {
        Atomics.add(this.control, base + TX_EPOCH_WORD, 1);
        Atomics.notify(this.control, base + TX_EPOCH_WORD);
      }
    }
    return written;
  }

  close(): Promise<void> {
    this.rings.markClosed();
    return Promise.resolve();
  }
}
