import type { TunOffloads } from './open-device.ts';
import type { QueueRings } from './queue-rings.ts';
import type { PacketBatch, TunDevice, TunStats } from './tun-device.ts';

/**
 * The part of a TunDevice that is only its queue rings: the batch
 * receive/release/send calls, readiness waits, flow-to-queue mapping and
 * stats. LinuxTun (worker threads play the kernel side) and MemoryTun (the
 * test does) differ only in who serves the other end of the rings and in
 * how they close.
 */
export abstract class RingTunDevice implements TunDevice {
  abstract readonly name: string;
  abstract readonly mtu: number;
  abstract readonly queueCount: number;
  abstract readonly offloads: TunOffloads;
  protected readonly rings: QueueRings;

  protected constructor(rings: QueueRings) {
    this.rings = rings;
  }

  get closed(): boolean {
    return this.rings.closed;
  }

  receive(batch: PacketBatch): number {
    return this.rings.receive(batch);
  }

  release(batch: PacketBatch): void {
    this.rings.release(batch);
  }

  readable(): Promise<void> {
    return this.rings.readable();
  }

  send(packet: Uint8Array, offset: number, length: number): boolean {
    return this.rings.send(packet, offset, length);
  }

  sendBatch(batch: PacketBatch, from: number): number {
    return this.rings.sendBatch(batch, from);
  }

  writable(): Promise<void> {
    return this.rings.writable();
  }

  queueOf(packet: Uint8Array, offset: number, length: number): number {
    return this.rings.queueOf(packet, offset, length);
  }

  stats(): TunStats {
    return this.rings.stats();
  }

  abstract close(): Promise<void>;
}
