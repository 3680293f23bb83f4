export { DatagramBatch, DEFAULT_BATCH_SIZE, MAX_DATAGRAM_BYTES } from './datagram-batch.ts';
export type { DatagramSocket } from './datagram-socket.ts';
export { DualStackSocket } from './linux/dual-stack-socket.ts';
export { FdPoller, Waker } from './linux/fd-poller.ts';
export { openMarkedSocket } from './linux/marked-socket.ts';
export { LinuxUdpSocket } from './linux/linux-udp-socket.ts';
export type { LinuxUdpSocketOptions, SharedLinuxUdpSocket } from './linux/linux-udp-socket.ts';
export { Doorbell } from './memory/doorbell.ts';
export { MemoryUdpNetwork, MemoryUdpSocket } from './memory/memory-udp-network.ts';
export type {
  MemoryUdpNetworkOptions,
  SharedMemoryUdpNetwork,
} from './memory/memory-udp-network.ts';
