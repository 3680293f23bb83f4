export { AllowedIps, AllowedIpsTable, NO_PEER, parsePrefix } from './allowed-ips.ts';
export type { SharedAllowedIpsTable } from './allowed-ips.ts';
export { DataPath } from './data-path.ts';
export type { DataPathOptions } from './data-path.ts';
export { DROP_REASONS, DropCounters } from './drop-counters.ts';
export type { DropCounts, DropReason } from './drop-counters.ts';
export { HandshakeControl } from './handshake-control.ts';
export type { ControlPeerConfig } from './handshake-control.ts';
