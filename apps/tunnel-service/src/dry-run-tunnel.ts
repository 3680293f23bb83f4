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
import {
  NO_DNS_RESOURCES,
  type ProxyAddressName,
  type Tunnel,
  type TunnelReport,
} from './tunnel.ts';
import {
  diffTunnelSpecs,
  prefixText,
  refuseFixedChanges,
  type PeerEndpoint,
  type TunnelSpec,
} from './tunnel-spec.ts';

export class DryRunTunnel implements Tunnel {
  #spec: TunnelSpec | undefined;

  async start(spec: TunnelSpec): Promise<void> {
    this.#spec = spec;
  }

  async apply(spec: TunnelSpec): Promise<void> {
    if (this.#spec === undefined) throw new Error('the dry-run tunnel is not started');
    refuseFixedChanges(diffTunnelSpecs(this.#spec, spec));
    this.#spec = spec;
  }

  async stop(): Promise<void> {
    this.#spec = undefined;
  }

  /** Remembers the patterns; nothing runs in a dry run, not even the stub. */
  async setDnsResources(patterns: readonly string[]): Promise<DnsResourcesStatus> {
    if (this.#spec === undefined) throw new Error('the dry-run tunnel is not started');
    await this.apply({ ...this.#spec, dnsResources: [...patterns] });
    return this.#dnsResourcesStatus(this.#spec);
  }

  /** No stub runs, so no proxy address was handed out. */
  lookupProxyAddress(_address: string): ProxyAddressName | undefined {
    return undefined;
  }

  #dnsResourcesStatus(spec: TunnelSpec): DnsResourcesStatus {
    return { ...NO_DNS_RESOURCES, patterns: [...spec.dnsResources] };
  }

  status(): TunnelReport {
    const spec = this.#spec;
    if (spec === undefined) throw new Error('the dry-run tunnel is not started');
    const noDrops = Object.fromEntries(DROP_REASONS.map((reason) => [reason, 0])) as DropCounters;
    return {
      workerRestarts: 0,
      interfaceName: spec.interfaceName,
      listenPort: spec.listenPort ?? null,
      cryptoProvider: 'none (dry run)',
      peers: spec.peers.map((peer) => ({
        publicKey: encodeKey(peer.publicKey),
        endpoint: peer.endpoint === undefined ? null : formatEndpoint(peer.endpoint),
        allowedIps: peer.allowedIps.map(prefixText),
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
        servers: spec.dns.servers,
        searchDomains: spec.dns.searchDomains,
        reapplied: 0,
        checkFailures: 0,
        applied: false,
        reason: 'dry run: nothing is applied',
      },
      dnsResources: this.#dnsResourcesStatus(spec),
    };
  }
}

function formatEndpoint(endpoint: PeerEndpoint): string {
  return endpoint.host.includes(':')
    ? `[${endpoint.host}]:${endpoint.port}`
    : `${endpoint.host}:${endpoint.port}`;
}
