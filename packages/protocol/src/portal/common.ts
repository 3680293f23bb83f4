/**
 * What the client channel and the gateway channel share: identifiers, WireGuard keys, addresses
 * and endpoints, resources with their filters, relays, the tunnel interface, and the result
 * every portal message parse returns.
 *
 * The shapes follow Firezone's portal messages (connlib's tunnel-proto messages and the portal's
 * views): keys in snake_case, resources tagged by `type`, filters one entry per port range as
 * `{protocol, port_range_start, port_range_end}`, relays tagged by `type`. Objects are parsed
 * with zod's default object mode everywhere: unknown fields are tolerated and stripped, so a
 * newer portal can add a field without breaking an older node. Every string and list is
 * bounded, so a hostile peer cannot make a parse allocate without limit.
 */

import { z } from 'zod';
import { dnsResourcePatternProblem } from '../dns-resource-pattern.ts';

// ---------------------------------------------------------------------------------------------
// Limits

/** The largest Phoenix frame either side accepts, in UTF-16 code units of its text. */
export const MAX_PORTAL_FRAME_CHARS = 4 * 1024 * 1024;
/** Resources in one list (an init); more than any account should have. */
export const MAX_PORTAL_RESOURCES = 10_000;
/** Authorizations a gateway's init carries. */
export const MAX_PORTAL_AUTHORIZATIONS = 50_000;
export const MAX_PORTAL_RELAYS = 64;
export const MAX_ICE_CANDIDATES = 64;
export const MAX_ICE_CANDIDATE_CHARS = 512;
/** Peers one ICE broadcast names. */
export const MAX_ICE_PEERS = 1024;
export const MAX_NAME_CHARS = 255;
export const MAX_DESCRIPTION_CHARS = 1024;
export const MAX_REASON_CHARS = 128;
/** Endpoints a gateway advertises (IPv4, IPv6, a public and a private address…). */
export const MAX_GATEWAY_ENDPOINTS = 8;
/** Proxy addresses the client's DNS stub gave one name (Firezone gives up to 4 per family). */
export const MAX_PROXY_IPS = 16;
export const MAX_UPSTREAM_DNS = 8;

// ---------------------------------------------------------------------------------------------
// Scalars

/** A random UUID as the portal makes them (crypto.randomUUID); any 8-4-4-4-12 hex accepted. */
export const PortalIdSchema = z.guid('a UUID');
export type PortalId = z.infer<typeof PortalIdSchema>;

/** A WireGuard public or preshared key: 32 bytes in standard base64 (44 characters). */
export const WireGuardKeySchema = z
  .string()
  .regex(/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/, 'a WireGuard key: 32 bytes of standard base64');
export type WireGuardKey = z.infer<typeof WireGuardKeySchema>;

export const Ipv4Schema = z.ipv4('an IPv4 address');
export const Ipv6Schema = z.ipv6('an IPv6 address');
export const IpAddressSchema = z.union([Ipv4Schema, Ipv6Schema], 'an IP address');

/** An address prefix (`10.0.0.0/24`, `fd00::/64`). */
export const CidrSchema = z.union(
  [z.cidrv4(), z.cidrv6()],
  'an address prefix such as 10.0.0.0/24 or fd00::/64',
);
export const Cidrv4Schema = z.cidrv4('an IPv4 prefix such as 100.64.0.0/10');
export const Cidrv6Schema = z.cidrv6('an IPv6 prefix such as fd00:2021:1111::/107');

const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** Why `text` is not `ipv4:port`, `[ipv6]:port` or `hostname:port`, or undefined. */
export function endpointProblem(text: string): string | undefined {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (match === null) return 'an endpoint is host:port, with an IPv6 address in brackets';
  const port = Number(match[3]);
  if (port < 1 || port > 65535) return `port ${match[3]} is outside 1-65535`;
  if (match[1] !== undefined) {
    return Ipv6Schema.safeParse(match[1]).success
      ? undefined
      : `${JSON.stringify(match[1])} is not an IPv6 address`;
  }
  const host = match[2] ?? '';
  if (/^[0-9.]+$/.test(host)) {
    return Ipv4Schema.safeParse(host).success
      ? undefined
      : `${JSON.stringify(host)} is not an IPv4 address`;
  }
  return HOSTNAME.test(host) ? undefined : `${JSON.stringify(host)} is not a host name`;
}

/** Where a WireGuard peer listens: `203.0.113.7:51820`, `[2001:db8::7]:51820`, `gw.example.com:51820`. */
export const EndpointSchema = z
  .string()
  .max(262)
  .superRefine((text, context) => {
    const problem = endpointProblem(text);
    if (problem !== undefined) context.addIssue({ code: 'custom', message: problem });
  });

/** A DNS resource's name or the DNS stub's wildcard pattern (`*.example.com`, `**.corp`, `?.app`). */
export const DnsPatternSchema = z
  .string()
  .min(1)
  .max(253)
  .superRefine((text, context) => {
    const problem = dnsResourcePatternProblem([text]);
    if (problem !== undefined) context.addIssue({ code: 'custom', message: problem });
  });

/** One concrete DNS name a client resolved (no wildcards). */
export const DomainNameSchema = z
  .string()
  .min(1)
  .max(253)
  .regex(
    /^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$/,
    'a DNS name',
  );

/** Instants are Unix epoch milliseconds (integers), like every timestamp in the portal. */
export const EpochMsSchema = z.number().int().min(0).max(8_640_000_000_000_000);

const NameSchema = z.string().min(1).max(MAX_NAME_CHARS);
export const ReasonSchema = z.string().min(1).max(MAX_REASON_CHARS);

// ---------------------------------------------------------------------------------------------
// Filters and resources

/**
 * One filter entry, as Firezone puts it on the wire: tcp or udp with a port range (both ends
 * inclusive; a missing end means 0 or 65535, so `{protocol: "tcp"}` is every TCP port), or icmp.
 * A resource's filters allow the union of their entries; no filters at all allows everything.
 * The storage's `{protocol, ports: [{from, to}]}` becomes one entry per range.
 */
export const PortalFilterSchema = z
  .discriminatedUnion(
    'protocol',
    [
      z.object({
        protocol: z.enum(['tcp', 'udp']),
        port_range_start: z.number().int().min(0).max(65535).optional(),
        port_range_end: z.number().int().min(0).max(65535).optional(),
      }),
      z.object({ protocol: z.literal('icmp') }),
    ],
    'a filter: {protocol: "tcp" | "udp" | "icmp", port_range_start?, port_range_end?}',
  )
  .refine(
    (filter) =>
      filter.protocol === 'icmp' ||
      (filter.port_range_start ?? 0) <= (filter.port_range_end ?? 65535),
    'port_range_start is after port_range_end',
  );
export type PortalFilter = z.infer<typeof PortalFilterSchema>;
const FiltersSchema = z.array(PortalFilterSchema).max(256).default([]);

/** A filter as the portal stores it: a protocol and its port ranges (none: every port). */
export interface PortRangeFilter {
  protocol: 'tcp' | 'udp' | 'icmp';
  ports?: { from: number; to: number }[];
}

/** The storage form → the wire form: one entry per port range, as Firezone sends them. */
export function portalFiltersFromRanges(filters: readonly PortRangeFilter[]): PortalFilter[] {
  const out: PortalFilter[] = [];
  for (const filter of filters) {
    if (filter.protocol === 'icmp') out.push({ protocol: 'icmp' });
    else if (filter.ports === undefined || filter.ports.length === 0)
      out.push({ protocol: filter.protocol });
    else {
      for (const range of filter.ports) {
        out.push({
          protocol: filter.protocol,
          port_range_start: range.from,
          port_range_end: range.to,
        });
      }
    }
  }
  return out;
}

/**
 * The wire form → the storage form, ranges grouped per protocol in order of appearance; a
 * protocol with an entry that has no range (every port) keeps no ranges.
 */
export function rangesFromPortalFilters(filters: readonly PortalFilter[]): PortRangeFilter[] {
  const byProtocol = new Map<PortRangeFilter['protocol'], { from: number; to: number }[] | 'all'>();
  for (const filter of filters) {
    if (filter.protocol === 'icmp') {
      byProtocol.set('icmp', 'all');
      continue;
    }
    const whole = filter.port_range_start === undefined && filter.port_range_end === undefined;
    const range = { from: filter.port_range_start ?? 0, to: filter.port_range_end ?? 65535 };
    const current = byProtocol.get(filter.protocol);
    if (whole || current === 'all') byProtocol.set(filter.protocol, 'all');
    else if (current === undefined) byProtocol.set(filter.protocol, [range]);
    else current.push(range);
  }
  return [...byProtocol].map(([protocol, ports]) =>
    ports === 'all' ? { protocol } : { protocol, ports },
  );
}

/** Whether a site has a gateway connected, as the portal last saw it. */
export const ResourceStatusSchema = z.enum(['online', 'offline', 'unknown']).catch('unknown');
export type ResourceStatus = z.infer<typeof ResourceStatusSchema>;

/** A site (Firezone's gateway group): where a resource's gateways are. */
export const PortalSiteSchema = z.object({ id: PortalIdSchema, name: NameSchema });
export type PortalSite = z.infer<typeof PortalSiteSchema>;

const resourceCommon = {
  id: PortalIdSchema,
  name: NameSchema,
  /** The sites whose gateways serve it (one today). Not sent to gateways. */
  sites: z.array(PortalSiteSchema).max(64).default([]),
  filters: FiltersSchema,
  /** Online when a gateway of one of its sites is connected. Not sent to gateways. */
  status: ResourceStatusSchema.default('unknown'),
};

export const PortalCidrResourceSchema = z.object({
  type: z.literal('cidr'),
  ...resourceCommon,
  address: CidrSchema,
  address_description: z.string().max(MAX_DESCRIPTION_CHARS).nullable().default(null),
});
export const PortalDnsResourceSchema = z.object({
  type: z.literal('dns'),
  ...resourceCommon,
  /** A name or the stub's wildcard pattern. */
  address: DnsPatternSchema,
  address_description: z.string().max(MAX_DESCRIPTION_CHARS).nullable().default(null),
});
export const PortalInternetResourceSchema = z.object({
  type: z.literal('internet'),
  ...resourceCommon,
  name: NameSchema.default('Internet'),
});

/** A resource as both channels carry it; a type this build does not know is ignored, not refused. */
export const PortalResourceSchema = z.discriminatedUnion('type', [
  PortalCidrResourceSchema,
  PortalDnsResourceSchema,
  PortalInternetResourceSchema,
]);
export type PortalResource = z.infer<typeof PortalResourceSchema>;
export type PortalCidrResource = z.infer<typeof PortalCidrResourceSchema>;
export type PortalDnsResource = z.infer<typeof PortalDnsResourceSchema>;
export type PortalInternetResource = z.infer<typeof PortalInternetResourceSchema>;
export const KNOWN_RESOURCE_TYPES: readonly PortalResource['type'][] = ['cidr', 'dns', 'internet'];

// ---------------------------------------------------------------------------------------------
// Relays, interface, address ranges

export const TurnRelaySchema = z.object({
  type: z.literal('turn'),
  id: PortalIdSchema,
  addr: EndpointSchema,
  username: z.string().min(1).max(256),
  password: z.string().min(1).max(256),
  /** When the credentials stop working (epoch ms). */
  expires_at: EpochMsSchema,
});
export const StunRelaySchema = z.object({
  type: z.literal('stun'),
  id: PortalIdSchema,
  addr: EndpointSchema,
});
/** A relay (kept for the relay work that follows; the portal sends none yet). */
export const RelaySchema = z.discriminatedUnion('type', [TurnRelaySchema, StunRelaySchema]);
export type Relay = z.infer<typeof RelaySchema>;

export const RelaysPresenceSchema = z.object({
  /** Relays that went away: stop using them. */
  disconnected_ids: z.array(PortalIdSchema).max(MAX_PORTAL_RELAYS),
  /** Relays that are up. */
  connected: z.array(RelaySchema).max(MAX_PORTAL_RELAYS),
});
export type RelaysPresence = z.infer<typeof RelaysPresenceSchema>;

/** An upstream DNS server, Firezone's `{protocol: "ip_port", address: "1.1.1.1:53"}`. */
export const UpstreamDnsSchema = z.object({
  protocol: z.literal('ip_port'),
  address: EndpointSchema,
});
export type UpstreamDns = z.infer<typeof UpstreamDnsSchema>;

/** The node's tunnel interface: its addresses (one per family, a /32 and a /128 in the tunnel). */
export const GatewayInterfaceSchema = z.object({ ipv4: Ipv4Schema, ipv6: Ipv6Schema });

export const ClientInterfaceSchema = z.object({
  ipv4: Ipv4Schema,
  ipv6: Ipv6Schema,
  /** Where names that are not resources go; empty: the system's resolvers. */
  upstream_dns: z.array(UpstreamDnsSchema).max(MAX_UPSTREAM_DNS).default([]),
  /** Appended to single-label names, or null. */
  search_domain: DomainNameSchema.nullable().default(null),
});
export type ClientInterface = z.infer<typeof ClientInterfaceSchema>;

/**
 * The account's address ranges (configurable, because the defaults collide with carrier-grade
 * NAT and other VPNs on some networks): tunnel addresses of clients and gateways, and the proxy
 * addresses clients' DNS stubs hand out for DNS resources.
 */
export const AddressRangesSchema = z.object({
  tunnel_ipv4: Cidrv4Schema,
  tunnel_ipv6: Cidrv6Schema,
  proxy_ipv4: Cidrv4Schema,
  proxy_ipv6: Cidrv6Schema,
});
export type AddressRanges = z.infer<typeof AddressRangesSchema>;

/** For a DNS resource: the name the client resolved and the proxy addresses its stub gave it. */
export const ResolvedDomainSchema = z.object({
  name: DomainNameSchema,
  proxy_ips: z.array(IpAddressSchema).min(1).max(MAX_PROXY_IPS),
});
export type ResolvedDomain = z.infer<typeof ResolvedDomainSchema>;

export const IceCandidatesSchema = z
  .array(z.string().min(1).max(MAX_ICE_CANDIDATE_CHARS))
  .max(MAX_ICE_CANDIDATES);

export const DisconnectSchema = z.object({ reason: ReasonSchema });
/** The reason the portal gives when a session's token was revoked or expired. */
export const DISCONNECT_TOKEN_EXPIRED = 'token_expired';

// ---------------------------------------------------------------------------------------------
// Parse results

/**
 * A parse's verdict. `ok: false` says why: `malformed` (wrong types, missing fields, too long,
 * not an object), `unknown_event` (an event this build does not know: log and drop, the peer may
 * be newer), or `ignored` (a message about one resource of a type this build does not know:
 * drop quietly). Inside lists, resources of unknown types are dropped and counted in
 * `ignoredResources`; resources of known types that do not parse are dropped and described in
 * `invalidResources` (Firezone keeps going without them too). A parse never throws.
 */
export type PortalParseResult<M> =
  | { ok: true; message: M; ignoredResources: number; invalidResources: string[] }
  | { ok: false; kind: 'malformed' | 'unknown_event' | 'ignored'; problem: string };

export type PortalParseFailure = Extract<PortalParseResult<unknown>, { ok: false }>;

/** A zod error in one line: the first few issues with their paths. */
export function describeZodError(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => {
      const path = issue.path.map(String).join('.');
      return path === '' ? issue.message : `${path}: ${issue.message}`;
    })
    .join('; ');
}

export interface ResourceSieve {
  ignored: number;
  invalid: string[];
}

/** Whether `value` is a resource of a type this build does not know (an object with another `type`). */
export function isUnknownResourceType(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const type = (value as { type?: unknown }).type;
  return typeof type === 'string' && !(KNOWN_RESOURCE_TYPES as readonly string[]).includes(type);
}

/**
 * The resources of `list` this build can use: unknown types counted in `sieve.ignored`, known
 * types that do not parse described in `sieve.invalid`; both dropped. Not a list: returned as
 * is, for the message's schema to refuse.
 */
export function sieveResources(list: unknown, sieve: ResourceSieve, where: string): unknown {
  if (!Array.isArray(list)) return list;
  if (list.length > MAX_PORTAL_RESOURCES) return list; // the schema refuses it with its limit
  const kept: unknown[] = [];
  for (const [index, item] of list.entries()) {
    if (isUnknownResourceType(item)) {
      sieve.ignored += 1;
      continue;
    }
    const parsed = PortalResourceSchema.safeParse(item);
    if (parsed.success) kept.push(item);
    else sieve.invalid.push(`${where}.${index}: ${describeZodError(parsed.error)}`);
  }
  return kept;
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Parses one message given its event's schema; `prepare` may sieve resource lists (returning a
 * shallow copy of the payload) or report that the whole message is about an ignored resource.
 */
export function parseWithSchema<M>(
  event: string,
  payload: unknown,
  schema: z.ZodType | undefined,
  prepare?: (
    payload: Record<string, unknown>,
    sieve: ResourceSieve,
  ) => Record<string, unknown> | 'ignored',
): PortalParseResult<M> {
  if (schema === undefined) {
    return {
      ok: false,
      kind: 'unknown_event',
      problem: `unknown event ${JSON.stringify(event.slice(0, 64))}`,
    };
  }
  if (!isPlainObject(payload)) {
    return { ok: false, kind: 'malformed', problem: `${event}: the payload is not an object` };
  }
  const sieve: ResourceSieve = { ignored: 0, invalid: [] };
  let prepared: Record<string, unknown> = payload;
  if (prepare !== undefined) {
    const result = prepare(payload, sieve);
    if (result === 'ignored') {
      return {
        ok: false,
        kind: 'ignored',
        problem: `${event}: a resource of type ${JSON.stringify(String(payload.type ?? '').slice(0, 64))} this build does not know, ignored`,
      };
    }
    prepared = result;
  }
  const parsed = schema.safeParse(prepared);
  if (!parsed.success)
    return { ok: false, kind: 'malformed', problem: `${event}: ${describeZodError(parsed.error)}` };
  return {
    ok: true,
    message: { event, payload: parsed.data } as M,
    ignoredResources: sieve.ignored,
    invalidResources: sieve.invalid,
  };
}
