/**
 * The tunnel spec: everything a running tunnel is made of, in one value.
 * Translators build it (wg-quick files today, the portal session later);
 * the tunnel starts from one and applies the difference to the next, so a
 * change touches only what changed. Pure: no I/O.
 */

import { encodeKey } from '@gatehouse/wireguard';

export interface InterfaceAddress {
  family: 4 | 6;
  address: string;
  prefixLength: number;
}

export interface IpNetwork {
  family: 4 | 6;
  address: string;
  prefixLength: number;
}

export interface PeerEndpoint {
  /** An IPv4 address, an IPv6 address (without brackets) or a hostname. */
  host: string;
  port: number;
}

export interface DnsSettings {
  servers: string[];
  searchDomains: string[];
}

export interface PeerSpec {
  publicKey: Uint8Array;
  presharedKey: Uint8Array | undefined;
  /** A hostname stays unresolved here; the tunnel resolves it. */
  endpoint: PeerEndpoint | undefined;
  /** Network addresses (host bits cleared), canonical text, duplicates removed. */
  allowedIps: IpNetwork[];
  /** Seconds; undefined when off. */
  persistentKeepalive: number | undefined;
}

export interface TunnelSpec {
  /** The network interface to create. */
  interfaceName: string;
  privateKey: Uint8Array;
  /** Undefined: let the kernel pick a port. */
  listenPort: number | undefined;
  /** Undefined: Gatehouse's default mark. */
  fwMark: number | undefined;
  /** Each address with its prefix as written (host bits kept). */
  addresses: InterfaceAddress[];
  mtu: number;
  peers: PeerSpec[];
  /** Prefixes routed into the tunnel (canonical text). */
  routes: string[];
  dns: DnsSettings;
  /** Name patterns the DNS stub answers with proxy addresses (already checked). */
  dnsResources: string[];
  /** Where the DNS stub's proxy addresses come from (the account's ranges with a portal). */
  proxyRanges: { ipv4: string; ipv6: string };
  /** With a default route in the tunnel: the LAN's own routes stay outside it. */
  lanBypass: boolean;
}

/** What the running tunnel is built around: a change to any of these needs a new tunnel. */
export const FIXED_FIELDS = [
  'interfaceName',
  'privateKey',
  'listenPort',
  'fwMark',
  'lanBypass',
] as const;
export type FixedField = (typeof FIXED_FIELDS)[number];

export type TunnelSpecChange =
  | { kind: 'fixed'; fields: FixedField[] }
  /** Addresses or MTU. */
  | { kind: 'interface' }
  /** Peers by base64 public key; `changed` ones differ in PSK, endpoint, AllowedIPs or keepalive. */
  | { kind: 'peers'; added: string[]; removed: string[]; changed: string[] }
  | { kind: 'routes'; added: string[]; removed: string[] }
  | { kind: 'dns' }
  | { kind: 'dns-resources' };

/** The changes that turn `from` into `to`, in the order a tunnel applies them; empty when equal. */
export function diffTunnelSpecs(from: TunnelSpec, to: TunnelSpec): TunnelSpecChange[] {
  const changes: TunnelSpecChange[] = [];
  const fixed = FIXED_FIELDS.filter((field) => !sameValue(from[field], to[field]));
  if (fixed.length > 0) changes.push({ kind: 'fixed', fields: fixed });
  if (from.mtu !== to.mtu || !sameValue(from.addresses, to.addresses))
    changes.push({ kind: 'interface' });

  const before = new Map(from.peers.map((peer) => [encodeKey(peer.publicKey), peer]));
  const after = new Map(to.peers.map((peer) => [encodeKey(peer.publicKey), peer]));
  const added = [...after.keys()].filter((name) => !before.has(name));
  const removed = [...before.keys()].filter((name) => !after.has(name));
  const changed = [...after].flatMap(([name, peer]) => {
    const old = before.get(name);
    return old !== undefined && !sameValue(old, peer) ? [name] : [];
  });
  if (added.length + removed.length + changed.length > 0)
    changes.push({ kind: 'peers', added, removed, changed });

  const routesBefore = new Set(from.routes);
  const routesAfter = new Set(to.routes);
  const routesAdded = to.routes.filter((route) => !routesBefore.has(route));
  const routesRemoved = from.routes.filter((route) => !routesAfter.has(route));
  if (routesAdded.length + routesRemoved.length > 0)
    changes.push({ kind: 'routes', added: routesAdded, removed: routesRemoved });

  if (!sameValue(from.dns, to.dns)) changes.push({ kind: 'dns' });
  if (
    !sameValue(from.dnsResources, to.dnsResources) ||
    !sameValue(from.proxyRanges, to.proxyRanges)
  )
    changes.push({ kind: 'dns-resources' });
  return changes;
}

/** Refuses changes of what the running tunnel is built around, naming them. */
export function refuseFixedChanges(changes: readonly TunnelSpecChange[]): void {
  const fixed = changes.find((change) => change.kind === 'fixed');
  if (fixed !== undefined) {
    throw new Error(
      `${fixed.fields.join(', ')} cannot change while the tunnel runs: stop it and start the new one`,
    );
  }
}

export function prefixText(network: { address: string; prefixLength: number }): string {
  return `${network.address}/${network.prefixLength}`;
}

/** Structural equality of spec values: plain objects, arrays, byte arrays, primitives, undefined. */
function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a instanceof Uint8Array && b instanceof Uint8Array)
    return a.length === b.length && a.every((byte, index) => byte === b[index]);
  if (Array.isArray(a) && Array.isArray(b))
    return a.length === b.length && a.every((item, index) => sameValue(item, b[index]));
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b) || a instanceof Uint8Array || b instanceof Uint8Array)
    return false;
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].every((key) =>
    sameValue((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]),
  );
}
