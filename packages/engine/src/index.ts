export { AllowedIps, AllowedIpsTable, NO_PEER, parsePrefix } from './allowed-ips.ts';
export type { SharedAllowedIpsTable } from './allowed-ips.ts';
export { DataPath, monotonicMs } from './data-path.ts';
export type { DataPathOptions } from './data-path.ts';
export { DROP_REASONS, DropCounters } from './drop-counters.ts';
export type { DropCounts, DropReason } from './drop-counters.ts';
export { Engine, UNATTRIBUTED_ONLY_REASONS } from './engine.ts';
export type {
  EngineDropReason,
  EngineLogLevel,
  EngineMemoryDevices,
  EngineOptions,
  EnginePeer,
  EnginePeerStatus,
  EngineStatus,
  EngineUnattributedDropReason,
} from './engine.ts';
export { DatagramRing, HANDSHAKE_RING, RELAY_RING } from './datagram-ring.ts';
