/**
 * A Tunnel that configures nothing and moves no packets: what `up --dry-run`
 * runs, to check a configuration and exercise the control socket without
 * root network changes. Its status is the configuration with zero counters.
 */

import {
  DROP_REASONS,
  UNATTRIBUTED_DROP_REASONS,
  type DnsResourcesStatus,
  type DropCounters,
  type UnattributedDropCounters,
} from '@gatehouse/protocol';
import { encodeKey } from '@gatehouse/wireguard';
import { NO_DNS_RESOURCES, type Tunnel, type TunnelConfig, type TunnelReport } from './tunnel.ts';
import type { PeerEndpoint } from './wg-quick-config.ts';

export class DryRunTunnel implements Tunnel {
  #config: TunnelConfig | undefined;
  #dnsResources = NO_DNS_RESOURCES;

  async start(config: TunnelConfig): Promise<void> {
    this.#config = config;
  }

  async stop(): Promise<void> {
    this.#config = undefined;
  }

  /** Remembers the patterns; nothing runs in a dry run, not even the stub. */
  async setDnsResources(patterns: readonly string[]): Promise<DnsResourcesStatus> {
    this.#dnsResources = { ...NO_DNS_RESOURCES, patterns: [...patterns] };
    return this.#dnsResources;
  }

  status(): TunnelReport {
    const config = this.#config;
    if (config === undefined) throw new Error('the dry-run tunnel is not started');
    const noDrops = Object.fromEntries(DROP_REASONS.map((reason) => [reason, 0])) as DropCounters;
    return {
      state: 'running',
      workerRestarts: 0,
      interfaceName: config.interfaceName,
      listenPort: config.interface.listenPort ?? null,
      cryptoProvider: 'none (dry run)',
      peers: config.peers.map((peer) => ({
        publicKey: encodeKey(peer.publicKey),
        endpoint: peer.endpoint === undefined ? null : formatEndpoint(peer.endpoint),
        allowedIps: peer.allowedIps.map((network) => `${network.address}/${network.prefixLength}`),
        rxBytes: 0,
        txBytes: 0,
        rxPackets: 0,
        txPackets: 0,
        drops: { ...noDrops },
        lastHandshakeAt: null,
        persistentKeepalive: peer.persistentKeepalive ?? null,
      })),
      noRoute: 0,
      unattributedDrops: Object.fromEntries(
        UNATTRIBUTED_DROP_REASONS.map((reason) => [reason, 0]),
      ) as UnattributedDropCounters,
      dns: {
        servers: config.interface.dns.servers,
        searchDomains: config.interface.dns.searchDomains,
        reapplied: 0,
        checkFailures: 0,
        applied: false,
        reason: 'dry run: nothing is applied',
      },
      dnsResources: this.#dnsResources,
    };
  }
}

function formatEndpoint(endpoint: PeerEndpoint): string {
  return endpoint.host.includes(':')
    ? `[${endpoint.host}]:${endpoint.port}`
    : `${endpoint.host}:${endpoint.port}`;
}
