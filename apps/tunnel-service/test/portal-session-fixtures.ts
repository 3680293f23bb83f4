/**
 * Builders of the portal's client-channel pushes for the portal session's tests. Each builder
 * returns the wire form (what the channel hands the session) after checking it with the
 * protocol's own parser, so a schema change breaks the fixtures here rather than letting the
 * tests drift from the portal.
 */

import assert from 'node:assert/strict';
import { parseClientToPortal, parsePortalToClient } from '@gatehouse/protocol';
import { encodeKey } from '@gatehouse/wireguard';
import {
  PortalSession,
  type PortalSessionEffect,
  type PortalSessionOptions,
} from '../src/portal-session.ts';

/** An epoch instant the tests start from. */
export const T0 = 1_800_000_000_000;

/** A UUID numbered `n` (z.guid accepts any 8-4-4-4-12 hex). */
export function id(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

/** 32 bytes of `fill`, as the portal writes keys. */
export function keyText(fill: number): string {
  return encodeKey(keyBytes(fill));
}

export function keyBytes(fill: number): Uint8Array {
  return new Uint8Array(32).fill(fill);
}

export const SITE_A = { id: id(0xa), name: 'hq' };
export const SITE_B = { id: id(0xb), name: 'lab' };

export const RANGES = {
  tunnel_ipv4: '100.64.0.0/11',
  tunnel_ipv6: 'fd00:2021:1111::/107',
  proxy_ipv4: '100.96.0.0/11',
  proxy_ipv6: 'fd00:2021:1111:8000::/107',
};

export const INTERFACE = {
  ipv4: '100.64.0.2',
  ipv6: 'fd00:2021:1111::2',
  upstream_dns: [
    { protocol: 'ip_port', address: '1.1.1.1:53' },
    { protocol: 'ip_port', address: '[2606:4700:4700::1111]:53' },
  ],
  search_domain: 'corp.example',
};

export const CIDR_ID = id(1);
export const CIDR2_ID = id(2);
export const DNS_ID = id(3);
export const INTERNET_ID = id(4);

type Wire = Record<string, unknown>;

export function cidrResource(overrides: Wire = {}): Wire {
  return valid('resource_created_or_updated', {
    id: CIDR_ID,
    type: 'cidr',
    name: 'lab net',
    address: '10.50.0.0/24',
    address_description: null,
    sites: [SITE_A],
    filters: [],
    status: 'online',
    ...overrides,
  });
}

export function dnsResource(overrides: Wire = {}): Wire {
  return valid('resource_created_or_updated', {
    id: DNS_ID,
    type: 'dns',
    name: 'wiki',
    address: '*.corp.example',
    address_description: null,
    sites: [SITE_A],
    filters: [{ protocol: 'tcp', port_range_start: 443, port_range_end: 443 }],
    status: 'offline',
    ...overrides,
  });
}

export function internetResource(overrides: Wire = {}): Wire {
  return valid('resource_created_or_updated', {
    id: INTERNET_ID,
    type: 'internet',
    name: 'Internet',
    sites: [SITE_B],
    filters: [],
    status: 'unknown',
    ...overrides,
  });
}

export function init(overrides: Wire = {}): Wire {
  return valid('init', {
    interface: INTERFACE,
    address_ranges: RANGES,
    resources: [cidrResource()],
    relays: [],
    identity: { account_slug: 'acme', actor_name: 'Alice Example' },
    ...overrides,
  });
}

export interface GatewayFixture {
  id: string;
  keyFill: number;
  pskFill: number;
  endpoint: string;
  ipv4: string;
  ipv6: string;
}

export const GATEWAY_A: GatewayFixture = {
  id: id(0x100),
  keyFill: 0x11,
  pskFill: 0x21,
  endpoint: '203.0.113.7:51820',
  ipv4: '100.64.0.10',
  ipv6: 'fd00:2021:1111::10',
};

export const GATEWAY_B: GatewayFixture = {
  id: id(0x200),
  keyFill: 0x12,
  pskFill: 0x22,
  endpoint: '[2001:db8::8]:51821',
  ipv4: '100.64.0.11',
  ipv6: 'fd00:2021:1111::11',
};

export function authorizationCreated(
  resourceId: string,
  gateway: GatewayFixture = GATEWAY_A,
  overrides: Wire = {},
): Wire {
  return valid('authorization_created', {
    resource_id: resourceId,
    gateway_id: gateway.id,
    site_id: SITE_A.id,
    gateway_public_key: keyText(gateway.keyFill),
    gateway_endpoints: [gateway.endpoint],
    gateway_ipv4: gateway.ipv4,
    gateway_ipv6: gateway.ipv6,
    preshared_key: keyText(gateway.pskFill),
    expires_at: null,
    ...overrides,
  });
}

export function authorizationFailed(resourceId: string, reason = 'offline'): Wire {
  return valid('authorization_creation_failed', { resource_id: resourceId, reason });
}

export function resourceDeleted(resourceId: string): Wire {
  return valid('resource_deleted', { id: resourceId });
}

/** `payload` after checking that the protocol's parser takes it as `event`. */
export function valid(event: string, payload: Wire): Wire {
  const parsed = parsePortalToClient(event, payload);
  assert.ok(parsed.ok, `fixture ${event}: ${parsed.ok ? '' : parsed.problem}`);
  return payload;
}

/** The DNS stub as the session sees it: proxy address → its name and all of that name's addresses. */
export class FakeStub {
  readonly #names = new Map<string, { name: string; proxyAddresses: string[] }>();
  lookups = 0;

  add(name: string, proxyAddresses: string[]): void {
    for (const address of proxyAddresses) this.#names.set(address, { name, proxyAddresses });
  }

  /** The stub took `address` back. */
  remove(address: string): void {
    this.#names.delete(address);
  }

  /** Any answer for `address`, even one a real stub would not give. */
  set(address: string, answer: { name: string; proxyAddresses: string[] }): void {
    this.#names.set(address, answer);
  }

  readonly lookup = (address: string): { name: string; proxyAddresses: string[] } | undefined => {
    this.lookups += 1;
    return this.#names.get(address);
  };
}

export interface Harness {
  session: PortalSession;
  stub: FakeStub;
}

export function newSession(options: Partial<PortalSessionOptions> = {}): Harness {
  const stub = new FakeStub();
  const session = new PortalSession({
    interfaceName: 'gh-portal0',
    privateKey: keyBytes(0x01),
    internetResource: true,
    lanBypass: true,
    lookupProxyAddress: stub.lookup,
    ...options,
  });
  return { session, stub };
}

/** A session that has had `initPayload` (and whose effects were taken). */
export function initialized(
  initPayload: Wire = init(),
  options: Partial<PortalSessionOptions> = {},
): Harness {
  const harness = newSession(options);
  harness.session.handleMessage('init', initPayload, T0);
  drain(harness.session);
  return harness;
}

export function drain(session: PortalSession): PortalSessionEffect[] {
  const effects: PortalSessionEffect[] = [];
  for (let effect = session.pollEffect(); effect !== undefined; effect = session.pollEffect())
    effects.push(effect);
  return effects;
}

/** The effects other than log lines. */
export function actions(session: PortalSession): PortalSessionEffect[] {
  return drain(session).filter((effect) => effect.type !== 'log');
}

/** The request_authorization pushes among `effects`, each checked by the portal's parser. */
export function requests(effects: readonly PortalSessionEffect[]): Wire[] {
  return effects.flatMap((effect) => {
    if (effect.type !== 'push') return [];
    assert.equal(effect.event, 'request_authorization');
    const parsed = parseClientToPortal(effect.event, effect.payload);
    assert.ok(parsed.ok, parsed.ok ? '' : parsed.problem);
    return [effect.payload as Wire];
  });
}

/** A route miss and the request_authorization pushes it caused. */
export function miss(session: PortalSession, destination: string, now: number): Wire[] {
  session.handleRouteMiss(destination, now);
  return requests(drain(session));
}

/** A resource requested by a route miss and then authorized through `gateway`. */
export function authorize(
  harness: Harness,
  destination: string,
  resourceId: string,
  now: number,
  gateway: GatewayFixture = GATEWAY_A,
  overrides: Wire = {},
): void {
  const sent = miss(harness.session, destination, now);
  assert.equal(sent.length, 1, `a request for ${destination}`);
  harness.session.handleMessage(
    'authorization_created',
    authorizationCreated(resourceId, gateway, overrides),
    now,
  );
  drain(harness.session);
}
