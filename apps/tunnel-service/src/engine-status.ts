/**
 * The engine's status in the control protocol's shape. The protocol carries
 * exactly the engine's drop reasons (see its DROP_REASONS).
 */

import type { EngineDropReason, EngineStatus } from '@gatehouse/engine';
import {
  DROP_REASONS,
  type DnsResourcesStatus,
  type DnsStatus,
  type DropCounters,
  type TunnelStatus,
} from '@gatehouse/protocol';

export type EngineStatusView = Pick<
  EngineStatus,
  'interfaceName' | 'listenPort' | 'cryptoProvider' | 'peers'
>;

export function tunnelStatusFromEngine(
  engine: EngineStatusView,
  dns: DnsStatus,
  dnsResources: DnsResourcesStatus,
): TunnelStatus {
  return {
    state: 'running',
    interfaceName: engine.interfaceName,
    listenPort: engine.listenPort,
    cryptoProvider: engine.cryptoProvider,
    peers: engine.peers.map((peer) => ({
      publicKey: peer.publicKey,
      endpoint: peer.endpoint,
      allowedIps: peer.allowedIps,
      rxBytes: peer.rxBytes,
      txBytes: peer.txBytes,
      rxPackets: peer.rxPackets,
      txPackets: peer.txPackets,
      drops: dropCountersFromEngine(peer.drops),
      lastHandshakeAt: peer.lastHandshake,
      persistentKeepalive: peer.persistentKeepalive,
    })),
    dns,
    dnsResources,
  };
}

export function dropCountersFromEngine(drops: Record<EngineDropReason, number>): DropCounters {
  const counters = {} as DropCounters;
  for (const reason of DROP_REASONS) counters[reason] = drops[reason];
  return counters;
}
