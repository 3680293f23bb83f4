/**
 * Which resource a route-missed destination belongs to (pure): the most specific CIDR resource
 * containing it; else the DNS resource whose pattern matches the name the DNS stub gave that
 * proxy address; else the Internet resource, when it is offered and in use.
 */

import { parseAddress, parsePrefix, prefixContains } from '@gatehouse/addresses';
import type { Address, Prefix } from '@gatehouse/addresses';
import { mostSpecificMatch } from '@gatehouse/dns-stub';
import type { DomainPattern } from '@gatehouse/dns-stub';
import {
  MAX_PROXY_IPS,
  ResolvedDomainSchema,
  normalizeDomainName,
  type AddressRanges,
} from '@gatehouse/protocol';
import { canonicalAddress } from './portal-session-spec.ts';
import type { StoredResource } from './portal-session-spec.ts';
import type { ProxyAddressLookup } from './portal-session.ts';

export const UNROUTABLE_REASONS = [
  'not_an_address',
  'no_resource',
  'unknown_proxy_address',
  'unmatched_name',
  'lookup_failed',
] as const;
export type UnroutableReason = (typeof UNROUTABLE_REASONS)[number];

export type RouteTarget =
  | {
      ok: true;
      destination: string;
      resourceId: string;
      domain: { name: string; proxyAddresses: string[] } | undefined;
    }
  | { ok: false; reason: UnroutableReason };

export interface RouteQuery {
  resources: ReadonlyMap<string, StoredResource>;
  addressRanges: AddressRanges;
  internetResource: boolean;
  lookupProxyAddress: ProxyAddressLookup;
}

export function routeTarget(query: RouteQuery, destination: string): RouteTarget {
  let address: Address;
  let canonical: string;
  try {
    address = parseAddress(destination);
    canonical = canonicalAddress(destination);
  } catch {
    return { ok: false, reason: 'not_an_address' };
  }

  let best: { id: string; length: number } | undefined;
  let internetId: string | undefined;
  const dns: { id: string; pattern: DomainPattern }[] = [];
  for (const [id, stored] of query.resources) {
    const prefix = stored.prefix;
    if (prefix !== undefined) {
      if (contains(prefix, address) && (best === undefined || prefix.length > best.length))
        best = { id, length: prefix.length };
    } else if (stored.pattern !== undefined) {
      dns.push({ id, pattern: stored.pattern });
    } else if (stored.resource.type === 'internet' && internetId === undefined) {
      internetId = id;
    }
  }
  if (best !== undefined)
    return { ok: true, destination: canonical, resourceId: best.id, domain: undefined };

  const proxy = proxyName(query.lookupProxyAddress, canonical);
  if (proxy === 'failed') return { ok: false, reason: 'lookup_failed' };
  if (proxy !== undefined) {
    const match = mostSpecificMatch(dns, proxy.name);
    if (match === undefined) return { ok: false, reason: 'unmatched_name' };
    return { ok: true, destination: canonical, resourceId: match.id, domain: proxy };
  }
  if (inProxyRanges(query.addressRanges, address))
    return { ok: false, reason: 'unknown_proxy_address' };
  if (query.internetResource && internetId !== undefined)
    return { ok: true, destination: canonical, resourceId: internetId, domain: undefined };
  return { ok: false, reason: 'no_resource' };
}

/**
 * Whether the stub still gives `address` to `name` (normalized); 'failed' when the lookup threw
 * or answered what no stub would, so that nothing is let go on a broken answer. Never throws.
 */
export function stubNames(
  lookup: ProxyAddressLookup,
  address: string,
  name: string,
): boolean | 'failed' {
  const found = proxyName(lookup, address);
  if (found === 'failed') return 'failed';
  return found !== undefined && found.name === name;
}

/** The stub's name for a proxy address, checked as the portal will check it; never throws. */
function proxyName(
  lookup: ProxyAddressLookup,
  address: string,
): { name: string; proxyAddresses: string[] } | undefined | 'failed' {
  let found: ReturnType<ProxyAddressLookup>;
  try {
    found = lookup(address);
  } catch {
    return 'failed';
  }
  if (found === undefined) return undefined;
  try {
    const proxyAddresses = [...new Set(found.proxyAddresses.map(canonicalAddress))];
    if (!proxyAddresses.includes(address) || proxyAddresses.length > MAX_PROXY_IPS) return 'failed';
    const name = normalizeDomainName(found.name);
    if (!ResolvedDomainSchema.safeParse({ name, proxy_ips: proxyAddresses }).success)
      return 'failed';
    return { name, proxyAddresses };
  } catch {
    return 'failed';
  }
}

function contains(prefix: Prefix, address: Address): boolean {
  return prefix.family === address.family && prefixContains(prefix, address.address);
}

function inProxyRanges(ranges: AddressRanges, address: Address): boolean {
  try {
    const range = parsePrefix(address.family === 4 ? ranges.proxy_ipv4 : ranges.proxy_ipv6);
    return contains(range, address);
  } catch {
    return false;
  }
}
