export * from './packet/index.ts';
export {
  MAX_TUN_WRITE_BATCH,
  TUN_BATCH_SIZE,
  TUN_WRITE_HEADROOM,
  TunQueue,
  closeTunQueueFds,
  openTunQueues,
} from './tun-queue.ts';
export type { OpenedTunQueues, TunQueueIo, TunQueuesOptions } from './tun-queue.ts';
export type { TunOffloads } from './open-device.ts';
export { MemoryTunQueues } from './memory-tun-queues.ts';
export type { MemoryTunQueuesOptions, SharedMemoryTunQueues } from './memory-tun-queues.ts';
export { readTunKernelDrops } from './kernel-drops.ts';
export type { TunKernelDrops } from './kernel-drops.ts';
