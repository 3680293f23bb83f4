/**
 * What the engine reports: its status and the peers' (counters, drops by
 * reason, endpoints), the shape the tunnel service maps into the protocol.
 */
import { formatEndpoint } from '@gatehouse/addresses';
import { DROP_REASONS as WIREGUARD_DROP_REASONS } from '@gatehouse/wireguard';

import { DROP_REASONS } from './drop-counters.ts';

export type EngineDropReason =
  (typeof DROP_REASONS)[number] | (typeof WIREGUARD_DROP_REASONS)[number];

/**
 * Unattributed reasons beyond the per-peer ones: handshake messages a full
 * ring refused, handshake messages whose handling threw (a bug, but one
 * datagram's, never the tunnel's), and what the kernel dropped on the TUN
 * interface — packets for the tunnel while our queue was full (tx_dropped),
 * packets we wrote (rx_dropped) — and STUN/TURN datagrams not handled.
 */
export const UNATTRIBUTED_ONLY_REASONS = [
  'handshake-ring-full',
  'handshake-handler-error',
  'kernel-tun-tx-dropped',
  'kernel-tun-rx-dropped',
  /** STUN and TURN datagrams a full ring refused. */
  'relay-ring-full',
  /** STUN and TURN datagrams nothing consumes yet (no relay client). */
  'relay-unclaimed',
  /** New route-miss destinations a full ring could not report (their packets stay held). */
  'route-miss-unreported',
  /** Events whose handler threw. */
  'event-handler-error',
] as const;
export type EngineUnattributedDropReason =
  EngineDropReason | (typeof UNATTRIBUTED_ONLY_REASONS)[number];

export interface EnginePeerStatus {
  /** Base64. */
  publicKey: string;
  /** `address:port` or `[v6]:port`; null until one is known. */
  endpoint: string | null;
  allowedIps: string[];
  rxBytes: number;
  txBytes: number;
  rxPackets: number;
  txPackets: number;
  /** Wall-clock ms of the last completed handshake; null before the first. */
  lastHandshake: number | null;
  /** Seconds; null when off. */
  persistentKeepalive: number | null;
  drops: Record<EngineDropReason, number>;
}

export interface EngineStatus {
  interfaceName: string;
  listenPort: number;
  cryptoProvider: string;
  peers: EnginePeerStatus[];
  /** Packets to destinations no peer's AllowedIPs cover. */
  noRoute: number;
  /** Data workers started again after they died. */
  workerRestarts: number;
  /** Why the engine failed (see EngineOptions.onFailed); null while it works. */
  failure: string | null;
  /** Drops no peer can be blamed for (unknown receiver index, failed sends, handshake ring full). */
  unattributedDrops: Record<EngineUnattributedDropReason, number>;
}

export function emptyDrops(): Record<EngineDropReason, number> {
  const drops = {} as Record<EngineDropReason, number>;
  for (const reason of [...WIREGUARD_DROP_REASONS, ...DROP_REASONS]) drops[reason] = 0;
  return drops;
}

export function formatEndpointText(address: Uint8Array, port: number): string {
  return formatEndpoint({ family: address.length === 4 ? 4 : 6, address, port });
}
