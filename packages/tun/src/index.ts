export {
  openTun,
  DEFAULT_MTU,
  DEFAULT_QUEUES,
  DEFAULT_RING_SLOTS,
  DEFAULT_TX_QUEUE_LENGTH,
} from './linux-tun.ts';
export type { TunOptions } from './linux-tun.ts';
export { MemoryTun } from './memory-tun.ts';
export type { MemoryTunOptions } from './memory-tun.ts';
export { PacketBatch, TUN_BATCH_SIZE } from './tun-device.ts';
export type { QueueStats, TunDevice, TunStats } from './tun-device.ts';
export type { TunOffloads } from './open-device.ts';
export { QueueRings } from './queue-rings.ts';
export { SLOT_HEADROOM, SLOT_TAILROOM } from './queue-layout.ts';
export type { QueueLayout } from './queue-layout.ts';
export * from './packet/index.ts';
export {
  MAX_TUN_WRITE_BATCH,
  TUN_WRITE_HEADROOM,
  TunQueue,
  closeTunQueueFds,
  openTunQueues,
} from './tun-queue.ts';
export type { OpenedTunQueues, TunQueueIo, TunQueuesOptions } from './tun-queue.ts';
export { MemoryTunQueues } from './memory-tun-queues.ts';
export type { MemoryTunQueuesOptions, SharedMemoryTunQueues } from './memory-tun-queues.ts';
export { readTunKernelDrops } from './kernel-drops.ts';
export type { TunKernelDrops } from './kernel-drops.ts';
