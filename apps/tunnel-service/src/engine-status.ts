/**
 * The engine's status in the control protocol's shape. The protocol carries
 * exactly the engine's drop reasons (see its DROP_REASONS and
 * UNATTRIBUTED_DROP_REASONS).
 */

import type { EngineDropReason, EngineStatus } from '@gatehouse/engine';
import {
  DROP_REASONS,
  UNATTRIBUTED_DROP_REASONS,
  type DnsResourcesStatus,
  type DnsStatus,
  type DropCounters,
  type UnattributedDropCounters,
} from '@gatehouse/protocol';
import type { TunnelReport } from './tunnel.ts';

export type EngineStatusView = Pick<
  EngineStatus,
  | 'interfaceName'
  | 'listenPort'
  | 'cryptoProvider'
  | 'peers'
  | 'noRoute'
  | 'unattributedDrops'
  | 'workerRestarts'
>;

export function tunnelStatusFromEngine(
  engine: EngineStatusView,
  dns: DnsStatus,
  dnsResources: DnsResourcesStatus,
): TunnelReport {
  return {
    workerRestarts: engine.workerRestarts,
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
    noRoute: engine.noRoute,
    unattributedDrops: unattributedDropsFromEngine(engine.unattributedDrops),
    dns,
    dnsResources,
  };
}

export function dropCountersFromEngine(drops: Record<EngineDropReason, number>): DropCounters {
  const counters = {} as DropCounters;
  for (const reason of DROP_REASONS) counters[reason] = drops[reason];
  return counters;
}

export function unattributedDropsFromEngine(
  drops: EngineStatus['unattributedDrops'],
): UnattributedDropCounters {
  const counters = {} as UnattributedDropCounters;
  for (const reason of UNATTRIBUTED_DROP_REASONS) counters[reason] = drops[reason];
  return counters;
}
