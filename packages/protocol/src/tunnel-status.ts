/**
 * What the tunnel service reports about a running tunnel: the `status`
 * result and the payload of `status-changed` events.
 */

import { z } from 'zod';
import { MAX_NAME_CHARS, MAX_PORTAL_RESOURCES } from './portal/common.ts';

/**
 * Why a packet for or from a peer was dropped; each has its own counter.
 * Exactly the data-plane engine's reasons (its own and the WireGuard
 * core's, merged by name), so that no counter is lost on the way (the
 * tunnel service's tests check that the lists agree).
 */
export const DROP_REASONS = [
  // Checks on messages from the network (WireGuard core).
  'malformed',
  'unknown-type',
  'too-large',
  'bad-mac1',
  'bad-mac2-under-load',
  'cookie-sent',
  'source-rate-limited',
  'source-table-full',
  'bad-cookie',
  'unknown-receiver',
  'unknown-peer',
  'handshake-failed',
  'stale-timestamp',
  'handshake-rate-limited',
  'no-free-index',
  'replay',
  'decrypt-failed',
  'invalid-inner-packet',
  'expired-keypair',
  'queue-full',
  'no-endpoint',
  'handshake-timeout',
  // The data path.
  /** The decrypted packet's source address is outside the peer's AllowedIPs. */
  'source-not-allowed',
  /** RFC 6040: congestion experienced on the outer header of a Not-ECT inner packet. */
  'ecn-not-ect',
  /** Held for a handshake while the hold queue was full. */
  'hold-overflow',
  /** The TUN device refused the packet (backpressure). */
  'tun-full',
  'udp-send-failed',
  /** TUN reads dropped: super-packets that could not be split, oversize packets. */
  'tun-read-dropped',
  /** TUN writes the kernel refused as malformed. */
  'tun-write-rejected',
  /** Packets no peer covers beyond the few held per destination (or evicted with the oldest one). */
  'route-miss-overflow',
  /** Packets no peer covers, held until the hold time ran out. */
  'route-miss-expired',
  /** A decrypted packet's destination, protocol or port that the peer's policy (gateway) does not allow. */
  'policy-denied',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

/**
 * Drops no peer can be blamed for: the same reasons, handshake messages a
 * full ring refused or whose handling failed, and the kernel's drops on the TUN interface (packets
 * for the tunnel while the engine's queue was full; packets it wrote).
 */
export const UNATTRIBUTED_DROP_REASONS = [
  ...DROP_REASONS,
  'handshake-ring-full',
  'handshake-handler-error',
  'kernel-tun-tx-dropped',
  'kernel-tun-rx-dropped',
  /** STUN and TURN datagrams on the tunnel's socket: a full ring refused them, or nothing consumes them yet. */
  'relay-ring-full',
  'relay-unclaimed',
  /** New route-miss destinations a full ring could not report (their packets stay held). */
  'route-miss-unreported',
  /** Engine events whose handler threw. */
  'event-handler-error',
] as const;
export type UnattributedDropReason = (typeof UNATTRIBUTED_DROP_REASONS)[number];

const CounterSchema = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const DropCountersSchema = z.record(z.enum(DROP_REASONS), CounterSchema);
export type DropCounters = z.infer<typeof DropCountersSchema>;

export const UnattributedDropCountersSchema = z.record(
  z.enum(UNATTRIBUTED_DROP_REASONS),
  CounterSchema,
);
export type UnattributedDropCounters = z.infer<typeof UnattributedDropCountersSchema>;

export const PeerStatusSchema = z.object({
  /** Base64, as `wg` prints it. */
  publicKey: z.string().regex(/^[A-Za-z0-9+/]{43}=$/, 'a base64 WireGuard key'),
  /** `address:port` or `[v6]:port`; null until one is known. */
  endpoint: z.string().max(300).nullable(),
  allowedIps: z.array(z.string().max(64)),
  rxBytes: CounterSchema,
  txBytes: CounterSchema,
  rxPackets: CounterSchema,
  txPackets: CounterSchema,
  drops: DropCountersSchema,
  /** Milliseconds since the Unix epoch; null before the first handshake. */
  lastHandshakeAt: z.number().int().min(0).nullable(),
  /** Seconds; null when off. */
  persistentKeepalive: z.number().int().min(1).max(65535).nullable(),
});
export type PeerStatus = z.infer<typeof PeerStatusSchema>;

const DnsSettingsShape = {
  servers: z.array(z.string().max(64)),
  searchDomains: z.array(z.string().max(253)),
  /** Times something else overwrote the applied settings and they were applied again. */
  reapplied: CounterSchema,
  /** Checks for that which failed (read errors, an unreachable resolved); each is logged. */
  checkFailures: CounterSchema,
};

export const DnsStatusSchema = z.discriminatedUnion('applied', [
  z.object({ ...DnsSettingsShape, applied: z.literal(true) }),
  z.object({ ...DnsSettingsShape, applied: z.literal(false), reason: z.string().max(500) }),
]);
export type DnsStatus = z.infer<typeof DnsStatusSchema>;

/**
 * Why the DNS stub refused a query or dropped a message; each has its own
 * counter. Exactly `@gatehouse/dns-stub`'s DNS_STUB_REFUSALS (the tunnel
 * service's tests check that the lists agree).
 */
export const DNS_STUB_REFUSALS = [
  'not-local',
  'rate-limited',
  'assignment-cap',
  'range-exhausted',
  'malformed',
  'forward-limit',
  'client-forward-limit',
  'no-upstream',
  'upstream-timeout',
  'unexpected-reply',
  'rebinding',
  'tcp-client-cap',
  'tcp-deadline',
  'tcp-unread-replies',
  'socket-error',
  'handler-error',
] as const;

export const DnsStubCountersSchema = z.object({
  /** Names with proxy addresses now. */
  assignments: CounterSchema,
  /** Reclaimed names' proxy addresses not yet handed out again. */
  quarantined: CounterSchema,
  /** Names whose idle proxy addresses were taken back. */
  reclaimed: CounterSchema,
  refused: z.record(z.enum(DNS_STUB_REFUSALS), CounterSchema),
});
export type DnsStubCounters = z.infer<typeof DnsStubCountersSchema>;

/**
 * The DNS resources and the DNS stub that answers for them: the
 * `set-dns-resources` result and part of every status.
 */
export const DnsResourcesStatusSchema = z.object({
  /** The patterns as last set; empty when there are none (then the stub does not run). */
  patterns: z.array(z.string().max(253)),
  stubRunning: z.boolean(),
  /** The sentinel addresses the stub answers on and system DNS points at; empty when it does not run. */
  stubAddresses: z.array(z.string().max(64)),
  /** Where the stub forwards names that are no DNS resource; empty when it does not run. */
  upstreams: z.array(z.string().max(64)),
  /** Since the stub started; absent when it does not run. */
  stubCounters: DnsStubCountersSchema.optional(),
});
export type DnsResourcesStatus = z.infer<typeof DnsResourcesStatusSchema>;

/**
 * What the control socket refused, closed and caught since the service
 * started; each refusal is also logged with the peer's uid.
 */
export const ControlSocketCountersSchema = z.object({
  /** Refused: unidentifiable or unauthorized peers, over a uid's or the service's connection limit. */
  refusedConnections: CounterSchema,
  /** Closed for sending no request in time after connecting, or leaving a frame unfinished. */
  idleClosed: CounterSchema,
  /** Closed for not reading what the service sent them. */
  slowClosed: CounterSchema,
  /** Requests refused as malformed, unknown, too large or invalid. */
  badRequests: CounterSchema,
  /**
   * Valid requests refused with their reason: forbidden (only root may; logged with the uid),
   * nothing to act on, one tunnel already up, a tunnel that could not start or change.
   */
  refusedRequests: CounterSchema,
  /** Requests whose handler failed or answered wrongly (answered "internal"). */
  handlerErrors: CounterSchema,
  /** Other errors caught at the socket: a listener that threw, an event not built or not sent. */
  internalErrors: CounterSchema,
});
export type ControlSocketCounters = z.infer<typeof ControlSocketCountersSchema>;

/**
 * The connection as the GUI shows it. 'connecting': the tunnel is being
 * set up; 'connected': its interface, routes and DNS are configured and the
 * data plane runs (only then does the status carry the tunnel's details);
 * 'disconnecting': it is being taken down (after a failure, `failure` says
 * why); 'disconnected': no tunnel (the last
 * failure, if the last tunnel failed, stays until the next start). A portal
 * tunnel is 'connecting' until the portal's first word configures it, and
 * its status carries `portal`.
 */
export const CONNECTION_STATES = [
  'disconnected',
  'connecting',
  'connected',
  'disconnecting',
] as const;
export type ConnectionState = (typeof CONNECTION_STATES)[number];

/** Why a tunnel could not start or stopped on its own. */
export const CONNECTION_FAILURE_REASONS = [
  /** The configuration the service was sent is invalid. */
  'bad-config',
  /** A peer's endpoint hostname did not resolve. */
  'endpoint-unresolved',
  /** The interface, its addresses, the engine or the routes could not be set up. */
  'setup-failed',
  /** System DNS could not be set. */
  'dns-failed',
  /** The data plane failed for good (data workers died more often than they may be restarted). */
  'engine-failed',
  /**
   * The portal refused the token (HTTP 401 invalid_token) or ended the session (token_expired):
   * a portal tunnel is down until it is started again with a new token.
   */
  'sign-in-required',
] as const;
export type ConnectionFailureReason = (typeof CONNECTION_FAILURE_REASONS)[number];

export const ConnectionFailureSchema = z.object({
  reason: z.enum(CONNECTION_FAILURE_REASONS),
  message: z.string().max(2000),
});
export type ConnectionFailure = z.infer<typeof ConnectionFailureSchema>;

/**
 * A portal tunnel's portal connection. 'connecting': not joined yet since the start;
 * 'connected': joined (the tunnel follows what the portal sends); 'reconnecting': the connection
 * went and comes back after a backoff, the tunnel keeps running as it was; 'signed-out': the
 * portal refused the token, nothing is retried.
 */
export const PORTAL_CONNECTION_STATES = [
  'connecting',
  'connected',
  'reconnecting',
  'signed-out',
] as const;
export type PortalConnectionState = (typeof PORTAL_CONNECTION_STATES)[number];

/** One resource the portal offers, with its site's status and whether a flow to it is authorized. */
export const PortalResourceStatusSchema = z.object({
  id: z.string().max(128),
  name: z.string().max(MAX_NAME_CHARS),
  type: z.enum(['cidr', 'dns', 'internet']),
  /** The prefix or the name pattern; null for the Internet resource. */
  address: z.string().max(253).nullable(),
  siteName: z.string().max(MAX_NAME_CHARS).nullable(),
  siteStatus: z.enum(['online', 'offline', 'unknown']),
  authorized: z.boolean(),
});
export type PortalResourceStatus = z.infer<typeof PortalResourceStatusSchema>;

export const MAX_PORTAL_ERROR_CHARS = 500;

export const PortalStatusSchema = z.object({
  /** The portal as given (never carries credentials: the service refuses a URL with any). */
  url: z.string().max(2048),
  connection: z.enum(PORTAL_CONNECTION_STATES),
  /** Who the token signed in, once the portal said (its init). */
  identity: z
    .object({ accountSlug: z.string().max(100), actorName: z.string().max(MAX_NAME_CHARS) })
    .optional(),
  resources: z.array(PortalResourceStatusSchema).max(MAX_PORTAL_RESOURCES),
  /** Why the connection last went or was refused; cleared when it is joined again. */
  lastError: z.string().max(MAX_PORTAL_ERROR_CHARS).optional(),
  /**
   * What the portal session and its channel counted: pushes dropped as malformed or ignored,
   * reconnects, route misses, authorization requests and failures… by name.
   */
  counters: z.record(z.string().max(64), CounterSchema),
});
export type PortalStatus = z.infer<typeof PortalStatusSchema>;

/** What the service counts whether or not a tunnel runs. */
const ServiceCountersShape = {
  controlSocket: ControlSocketCountersSchema,
  /** Log lines the service could not write (its stderr's reader went away). */
  logLinesLost: CounterSchema,
  /** A portal tunnel's portal side (after it signed out too); absent for a wg-quick tunnel. */
  portal: PortalStatusSchema.optional(),
};

const InterfaceNameSchema = z.string().min(1).max(15);

/** A tunnel that is up: its interface, peers, counters and DNS. */
export const TunnelDetailsSchema = z.object({
  /** Data workers restarted after they died (at most 3 a minute, then the tunnel fails). */
  workerRestarts: CounterSchema,
  interfaceName: InterfaceNameSchema,
  /** Null while no UDP socket is bound. */
  listenPort: z.number().int().min(0).max(65535).nullable(),
  /** Which ChaCha20-Poly1305 implementation the data plane runs on. */
  cryptoProvider: z.string().max(100),
  peers: z.array(PeerStatusSchema),
  /** Packets to destinations no peer's AllowedIPs cover. */
  noRoute: CounterSchema,
  unattributedDrops: UnattributedDropCountersSchema,
  dns: DnsStatusSchema,
  dnsResources: DnsResourcesStatusSchema,
});
export type TunnelDetails = z.infer<typeof TunnelDetailsSchema>;

/** The `status` result and the `status-changed` payload: one shape per connection state. */
export const TunnelStatusSchema = z.discriminatedUnion('state', [
  z.object({
    state: z.literal('disconnected'),
    failure: ConnectionFailureSchema.nullable(),
    ...ServiceCountersShape,
  }),
  z.object({
    state: z.literal('connecting'),
    interfaceName: InterfaceNameSchema,
    ...ServiceCountersShape,
  }),
  z.object({
    state: z.literal('connected'),
    ...TunnelDetailsSchema.shape,
    ...ServiceCountersShape,
  }),
  z.object({
    state: z.literal('disconnecting'),
    interfaceName: InterfaceNameSchema,
    failure: ConnectionFailureSchema.nullable(),
    ...ServiceCountersShape,
  }),
]);
export type TunnelStatus = z.infer<typeof TunnelStatusSchema>;
export type ConnectedTunnelStatus = Extract<TunnelStatus, { state: 'connected' }>;
