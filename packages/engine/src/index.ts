export { AllowedIps, NO_PEER } from './allowed-ips.ts';
export { DROP_REASONS } from './drop-counters.ts';
export { Engine } from './engine.ts';
export { UNATTRIBUTED_ONLY_REASONS } from './engine-status.ts';
export type { EngineEvent } from './engine-events.ts';
export { PEER_IDLE_AFTER_MS } from './peer-idle.ts';
export { POLICY_PROTOCOLS } from './policy.ts';
export type { PolicyProtocol, PolicyRule, PortRange } from './policy.ts';
export {
  ROUTE_MISS_DESTINATIONS,
  ROUTE_MISS_HOLD_MS,
  ROUTE_MISS_PACKETS_PER_DESTINATION,
} from './route-miss.ts';
export type { EngineMemoryDevices, EngineOptions } from './engine.ts';
export type { EnginePeer } from './peer-config.ts';
export type {
  EngineDropReason,
  EnginePeerStatus,
  EngineStatus,
  EngineUnattributedDropReason,
} from './engine-status.ts';
