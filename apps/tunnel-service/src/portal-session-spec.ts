/**
 * The portal session's state as a tunnel spec (pure): the resources the portal offers become
 * routes and DNS resource patterns, the authorizations become one peer per gateway. Also the
 * shapes of that state, shared with portal-session.ts.
 */

import { formatAddress, parseAddress, parsePrefix } from '@gatehouse/addresses';
import type { Prefix } from '@gatehouse/addresses';
import type { DomainPattern } from '@gatehouse/dns-stub';
import type { AddressRanges, ClientInterface, PortalResource } from '@gatehouse/protocol';
import { internetNetworks } from './portal-session-internet.ts';
import {
  prefixText,
  type IpNetwork,
  type PeerEndpoint,
  type PeerSpec,
  type TunnelSpec,
} from './tunnel-spec.ts';

export interface SpecInput {
  interfaceName: string;
  privateKey: Uint8Array;
  mtu: number;
  internetResource: boolean;
  lanBypass: boolean;
  config: SessionConfig;
  resources: ReadonlyMap<string, StoredResource>;
  gateways: ReadonlyMap<string, GatewayInfo>;
  authorizations: ReadonlyMap<string, Authorization>;
}

/** What init and config_changed say about the tunnel itself. */
export interface SessionConfig {
  interface: ClientInterface;
  addressRanges: AddressRanges;
}

/** A resource as the portal sent it, with its address parsed once. */
export interface StoredResource {
  resource: PortalResource;
  /** CIDR resources: the network. */
  prefix: Prefix | undefined;
  /** DNS resources: the pattern. */
  pattern: DomainPattern | undefined;
}

/** How to reach one gateway, from its latest authorization_created. */
export interface GatewayInfo {
  id: string;
  publicKey: Uint8Array;
  /** Base64, as the engine names peers. */
  publicKeyText: string;
  presharedKey: Uint8Array;
  endpoint: PeerEndpoint | undefined;
  ipv4: string;
  ipv6: string;
}

/** One resource authorized through one gateway. */
export interface Authorization {
  resourceId: string;
  type: 'cidr' | 'dns' | 'internet';
  gatewayId: string;
  siteId: string;
  /** CIDR and Internet resources: when it ends (epoch ms), or null for never. */
  expiresAt: number | null;
  /** DNS resources: the names authorized, oldest first. */
  names: Map<string, AuthorizedName>;
}

export interface AuthorizedName {
  /** Canonical text, as the DNS stub handed them out. */
  proxyAddresses: string[];
  expiresAt: number | null;
  /** When it was authorized (epoch ms): the oldest names go first past the limit. */
  authorizedAt: number;
}

export const PERSISTENT_KEEPALIVE_SECONDS = 25;
const DEFAULT_ROUTES = ['0.0.0.0/0', '::/0'];

export function buildTunnelSpec(input: SpecInput): TunnelSpec {
  const { config } = input;
  const iface = config.interface;
  const resources = [...input.resources.values()].map((stored) => stored.resource);
  const hasDns = resources.some((resource) => resource.type === 'dns');
  const internet = input.internetResource && resources.some((r) => r.type === 'internet');

  const routes = new Set<string>();
  for (const stored of input.resources.values()) {
    if (stored.prefix !== undefined) routes.add(prefixString(stored.prefix));
  }
  const proxyRanges = {
    ipv4: prefixString(parsePrefix(config.addressRanges.proxy_ipv4)),
    ipv6: prefixString(parsePrefix(config.addressRanges.proxy_ipv6)),
  };
  if (hasDns) {
    routes.add(proxyRanges.ipv4);
    routes.add(proxyRanges.ipv6);
  }
  if (internet) for (const route of DEFAULT_ROUTES) routes.add(route);

  return {
    interfaceName: input.interfaceName,
    privateKey: input.privateKey,
    listenPort: undefined,
    fwMark: undefined,
    addresses: [
      { family: 4, address: canonicalAddress(iface.ipv4), prefixLength: 32 },
      { family: 6, address: canonicalAddress(iface.ipv6), prefixLength: 128 },
    ],
    mtu: input.mtu,
    peers: buildPeers(input),
    routes: [...routes].sort(),
    dns: {
      servers: upstreamServers(iface).servers,
      searchDomains: searchDomains(iface),
    },
    dnsResources: [
      ...new Set(resources.flatMap((r) => (r.type === 'dns' ? [r.address] : []))),
    ].sort(),
    proxyRanges,
    lanBypass: input.lanBypass,
  };
}

/** Whether the DNS settings and proxy ranges a spec gets from `a` and `b` (what the stub runs on) are the same. */
export function sameStubSettings(a: SessionConfig, b: SessionConfig): boolean {
  return stubSettings(a) === stubSettings(b);
}

function stubSettings(config: SessionConfig): string {
  const iface = config.interface;
  return JSON.stringify([
    upstreamServers(iface).servers,
    searchDomains(iface),
    config.addressRanges.proxy_ipv4,
    config.addressRanges.proxy_ipv6,
  ]);
}

function searchDomains(iface: ClientInterface): string[] {
  return iface.search_domain === null ? [] : [iface.search_domain.replace(/\.$/, '')];
}

/** The upstream DNS servers the tunnel can use (an IP on port 53), and how many were not. */
export function upstreamServers(iface: ClientInterface): { servers: string[]; skipped: number } {
  const servers = new Set<string>();
  let skipped = 0;
  for (const upstream of iface.upstream_dns) {
    const endpoint = peerEndpoint(upstream.address);
    if (endpoint === undefined || endpoint.port !== 53 || !endpoint.isAddress) skipped += 1;
    else servers.add(endpoint.host);
  }
  return { servers: [...servers], skipped };
}

/** `host:port` or `[ipv6]:port` (already checked by the protocol's schema) as a peer endpoint. */
export function peerEndpoint(text: string): (PeerEndpoint & { isAddress: boolean }) | undefined {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (match === null) return undefined;
  const port = Number(match[3]);
  const host = match[1] ?? match[2] ?? '';
  try {
    return { host: canonicalAddress(host), port, isAddress: true };
  } catch {
    return match[1] === undefined ? { host, port, isAddress: false } : undefined;
  }
}

export function canonicalAddress(text: string): string {
  const { family, address } = parseAddress(text);
  return formatAddress(family, address);
}

export function prefixString(prefix: Prefix): string {
  return `${formatAddress(prefix.family, prefix.address)}/${prefix.length}`;
}

/** The networks one authorization routes to its gateway (the Internet's: `internet()`). */
export function authorizationNetworks(
  authorization: Authorization,
  stored: StoredResource,
  internet: () => IpNetwork[],
): IpNetwork[] {
  const resource = stored.resource;
  if (resource.type === 'internet') return internet();
  if (resource.type === 'cidr') {
    const prefix = stored.prefix;
    return prefix === undefined
      ? []
      : [
          {
            family: prefix.family,
            address: formatAddress(prefix.family, prefix.address),
            prefixLength: prefix.length,
          },
        ];
  }
  // The names' proxy addresses are canonical already (routeTarget made them so).
  return [...authorization.names.values()].flatMap((name) => name.proxyAddresses.map(hostNetwork));
}

function buildPeers(input: SpecInput): PeerSpec[] {
  // By gateway, the networks by their text (which orders them).
  const byGateway = new Map<string, Map<string, IpNetwork>>();
  let internet: IpNetwork[] | undefined;
  const internetOnce = (): IpNetwork[] => (internet ??= internetNetworks(excluded(input)).networks);
  for (const authorization of input.authorizations.values()) {
    const stored = input.resources.get(authorization.resourceId);
    if (stored === undefined) continue;
    const networks = byGateway.get(authorization.gatewayId) ?? new Map<string, IpNetwork>();
    for (const network of authorizationNetworks(authorization, stored, internetOnce))
      networks.set(prefixText(network), network);
    byGateway.set(authorization.gatewayId, networks);
  }
  const peers: PeerSpec[] = [];
  for (const [gatewayId, networks] of [...byGateway].sort(([a], [b]) => compare(a, b))) {
    const gateway = input.gateways.get(gatewayId);
    if (gateway === undefined || networks.size === 0) continue;
    const own = [
      hostNetwork(canonicalAddress(gateway.ipv4)),
      hostNetwork(canonicalAddress(gateway.ipv6)),
    ];
    for (const network of own) networks.delete(prefixText(network));
    const rest = [...networks].sort(([a], [b]) => compare(a, b)).map(([, network]) => network);
    peers.push({
      publicKey: gateway.publicKey,
      presharedKey: gateway.presharedKey,
      endpoint:
        gateway.endpoint === undefined
          ? undefined
          : { host: gateway.endpoint.host, port: gateway.endpoint.port },
      allowedIps: [...own, ...rest].map((network) => ({ ...network })),
      persistentKeepalive: PERSISTENT_KEEPALIVE_SECONDS,
    });
  }
  return peers;
}

/** The other resources' networks, which the Internet resource leaves to them. */
function excluded(input: SpecInput): Prefix[] {
  const prefixes: Prefix[] = [];
  let hasDns = false;
  for (const stored of input.resources.values()) {
    if (stored.prefix !== undefined) prefixes.push(stored.prefix);
    if (stored.resource.type === 'dns') hasDns = true;
  }
  if (hasDns) {
    prefixes.push(parsePrefix(input.config.addressRanges.proxy_ipv4));
    prefixes.push(parsePrefix(input.config.addressRanges.proxy_ipv6));
  }
  return prefixes;
}

/** A canonical address as its /32 or /128. */
function hostNetwork(address: string): IpNetwork {
  return address.includes(':')
    ? { family: 6, address, prefixLength: 128 }
    : { family: 4, address, prefixLength: 32 };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
