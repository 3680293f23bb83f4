/**
 * The headless client's portal session as a sans-IO state machine: the daemon's second
 * translator into a tunnel spec, after wg-quick. It takes the pushes of the client channel
 * (topic "client"; joining, heartbeats and reconnects are PhoenixChannel's), the engine's route
 * misses and handshake failures, and time; what it wants done comes out of pollEffect():
 * request_authorization pushes, 'spec-changed' (spec() is the tunnel to run now) and log lines.
 *
 * - init gives the interface, the account's ranges and the resources. A later init (after a
 *   reconnect) replaces the resources and keeps the authorizations of those still there: the
 *   gateways keep their flows across portal restarts.
 * - A route miss asks for the resource covering the destination, once per (resource, name)
 *   while a request is unanswered (REQUEST_TIMEOUT_MS), and not during the backoff that
 *   follows a refusal or an answer it cannot use (1 s doubling to 30 s), so a flood of packets
 *   does not flood the portal. A late answer to a request that timed out is still used.
 * - authorization_created puts the resource on its gateway's peer; its expires_at takes it off
 *   again, as does the gateway's handshake failing, and the next packet asks again. The
 *   Internet resource's peer leaves the other resources' networks out, so their first packets
 *   still miss and ask.
 * - A DNS resource's authorized names last while the stub gives them their proxy addresses
 *   (checked every NAME_CHECK_INTERVAL_MS) and while the DNS settings and proxy ranges, which
 *   the stub is started with, stay the same.
 * - A push that does not parse, or is about something this session does not know, is counted
 *   and changes nothing. Nothing here throws at its caller.
 */

import { parsePrefix } from '@gatehouse/addresses';
import { parseDomainPattern } from '@gatehouse/dns-stub';
import { printableText } from '@gatehouse/logging';
import {
  AUTHORIZATION_FAILURE_REASONS,
  ClientIdentitySchema,
  MAX_ICE_PEERS,
  MAX_PORTAL_RESOURCES,
  isPlainObject,
  parsePortalToClient,
  portalToClientSchemas,
  type AddressRanges,
  type AuthorizationCreated,
  type AuthorizationFailureReason,
  type ClientInterface,
  type PortalResource,
  type PortalToClientEvent,
  type PortalToClientMessage,
  type RequestAuthorization,
} from '@gatehouse/protocol';
import { decodeKey } from '@gatehouse/wireguard';
import {
  UNROUTABLE_REASONS,
  routeTarget,
  stubNames,
  type UnroutableReason,
} from './portal-session-routing.ts';
import {
  buildTunnelSpec,
  canonicalAddress,
  peerEndpoint,
  prefixString,
  sameStubSettings,
  upstreamServers,
  type Authorization,
  type GatewayInfo,
  type SessionConfig,
  type StoredResource,
} from './portal-session-spec.ts';
import { diffTunnelSpecs, type TunnelSpec } from './tunnel-spec.ts';

/** The DNS stub's name for one of its proxy addresses, with all of that name's proxy addresses. */
export interface ProxyAddressLookup {
  (address: string): { name: string; proxyAddresses: string[] } | undefined;
}

export interface PortalSessionOptions {
  interfaceName: string;
  /** This run's WireGuard key (its public key goes in the join payload, built by the shell). */
  privateKey: Uint8Array;
  /** Default 1280. */
  mtu?: number;
  /** The user's setting: use the Internet resource when the portal offers one. */
  internetResource: boolean;
  /** With the Internet resource: the LAN stays outside the tunnel. */
  lanBypass: boolean;
  lookupProxyAddress: ProxyAddressLookup;
}

export type PortalSessionEffect =
  /** request_authorization, for the channel to push. */
  | { type: 'push'; event: string; payload: unknown }
  /** spec() changed: apply it to the tunnel (start it on the first). */
  | { type: 'spec-changed' }
  | { type: 'log'; level: 'info' | 'warn' | 'debug'; message: string };

export interface PortalResourceView {
  id: string;
  name: string;
  type: 'cidr' | 'dns' | 'internet';
  /** The prefix or the name pattern; null for the Internet resource. */
  address: string | null;
  siteName: string | null;
  siteStatus: 'online' | 'offline' | 'unknown';
  authorized: boolean;
}

export interface PortalIdentity {
  accountSlug: string;
  actorName: string;
}

export const SUPPRESS_REASONS = [
  'before_init',
  'in_flight',
  'backoff',
  'already_authorized',
  'pending_full',
] as const;
export type SuppressReason = (typeof SUPPRESS_REASONS)[number];

/** Why an authorization_created was not used. */
export const AUTHORIZATION_IGNORE_REASONS = [
  'before_init',
  'unknown_resource',
  'internet_resource_off',
  /** From a site that does not serve the resource (the next init would drop it anyway). */
  'wrong_site',
  'unrequested_name',
  'already_expired',
  'bad_gateway',
] as const;
export type AuthorizationIgnoreReason = (typeof AUTHORIZATION_IGNORE_REASONS)[number];

/** Why an authorization ended. */
export const AUTHORIZATION_END_REASONS = [
  'expired',
  'resource_gone',
  'handshake_failed',
  'gateway_replaced',
  /** DNS resources': the DNS settings or proxy ranges changed, so the stub's addresses did. */
  'dns_reset',
  /** DNS resources': the stub took every address of its names back (idle), for other names. */
  'names_released',
] as const;
export type AuthorizationEndReason = (typeof AUTHORIZATION_END_REASONS)[number];

export interface PortalSessionStats {
  /** Pushes that parsed, by event. */
  messages: Record<PortalToClientEvent, number>;
  malformed: number;
  unknownEvents: number;
  /**
   * Pushes that parsed but were not acted on: about a resource type this build does not know,
   * relay and ICE messages (no relays yet), resource and config pushes before the first init,
   * a deletion of a resource this session does not have.
   */
  ignored: number;
  /** Resources of unknown types left out of inits. */
  ignoredResources: number;
  /** Resources of known types that did not parse, left out. */
  invalidResources: number;
  /** New resources refused beyond MAX_PORTAL_RESOURCES. */
  refusedResources: number;
  /** An init whose identity was there but not usable. */
  invalidIdentity: number;
  /** Upstream DNS servers the tunnel cannot use (a host name, or a port other than 53). */
  upstreamDnsSkipped: number;
  disconnects: number;
  routeMisses: number;
  unroutable: Record<UnroutableReason, number>;
  requestsSent: number;
  /** Requests sent again after the last went unanswered. */
  requestRetries: number;
  requestsTimedOut: number;
  requestsSuppressed: Record<SuppressReason, number>;
  authorizations: number;
  authorizationsIgnored: Record<AuthorizationIgnoreReason, number>;
  authorizationFailures: Record<AuthorizationFailureReason, number>;
  authorizationsEnded: Record<AuthorizationEndReason, number>;
  /** Authorized names of DNS resources let go over the caps. */
  namesEvicted: number;
  /** Authorized names let go because the DNS stub no longer gives them their addresses. */
  namesReleased: number;
  handshakeFailures: number;
  handshakeFailuresUnknownPeer: number;
  specChanges: number;
  /** Effects not queued because the shell did not poll (logs first). */
  effectsDropped: number;
  /** Bugs caught at the boundary (each logged). */
  internalErrors: number;
  /** Now: */
  resources: number;
  authorizedResources: number;
  gateways: number;
  pendingRequests: number;
  backoffs: number;
}

/** A request unanswered this long may be sent again on the next route miss. */
export const REQUEST_TIMEOUT_MS = 10_000;
/** The backoff after the portal refuses a resource: the first, the largest. */
export const FAILURE_BACKOFF_INITIAL_MS = 1_000;
export const FAILURE_BACKOFF_MAX_MS = 30_000;
export const MAX_PENDING_REQUESTS = 256;
export const MAX_NAMES_PER_RESOURCE = 256;
export const MAX_AUTHORIZED_NAMES = 4_096;
export const DEFAULT_PORTAL_MTU = 1280;
/**
 * How often the authorized DNS names are checked against the stub. The stub takes an idle
 * name's addresses back and, after a quarantine (30 min), gives them to other names; an
 * address still on the gateway's peer would carry the new name's packets to the old name's
 * real address without a route miss to ask for the new one.
 */
export const NAME_CHECK_INTERVAL_MS = 60_000;

export class PortalSession {
  readonly #options: Required<PortalSessionOptions>;
  readonly #effects: PortalSessionEffect[] = [];
  #specChangeQueued = false;
  #config: SessionConfig | undefined;
  #identity: PortalIdentity | undefined;
  #resources = new Map<string, StoredResource>();
  readonly #gateways = new Map<string, GatewayInfo>();
  /** By resource id: one gateway per resource. */
  readonly #authorizations = new Map<string, Authorization>();
  /** By pendingKey, oldest first: answers are matched to the oldest request for their resource. */
  readonly #pending = new Map<string, PendingRequest>();
  readonly #backoffs = new Map<string, { failures: number; retryAt: number }>();
  #spec: TunnelSpec | undefined;
  /** When the authorized DNS names are next checked against the stub. */
  #namesCheckAt: number | undefined;
  readonly #logCounts = new Map<string, number>();
  readonly #stats: Omit<
    PortalSessionStats,
    'resources' | 'authorizedResources' | 'gateways' | 'pendingRequests' | 'backoffs'
  > = {
    messages: zeroes(Object.keys(portalToClientSchemas) as PortalToClientEvent[]),
    malformed: 0,
    unknownEvents: 0,
    ignored: 0,
    ignoredResources: 0,
    invalidResources: 0,
    refusedResources: 0,
    invalidIdentity: 0,
    upstreamDnsSkipped: 0,
    disconnects: 0,
    routeMisses: 0,
    unroutable: zeroes(UNROUTABLE_REASONS),
    requestsSent: 0,
    requestRetries: 0,
    requestsTimedOut: 0,
    requestsSuppressed: zeroes(SUPPRESS_REASONS),
    authorizations: 0,
    authorizationsIgnored: zeroes(AUTHORIZATION_IGNORE_REASONS),
    authorizationFailures: zeroes(AUTHORIZATION_FAILURE_REASONS),
    authorizationsEnded: zeroes(AUTHORIZATION_END_REASONS),
    namesEvicted: 0,
    namesReleased: 0,
    handshakeFailures: 0,
    handshakeFailuresUnknownPeer: 0,
    specChanges: 0,
    effectsDropped: 0,
    internalErrors: 0,
  };

  constructor(options: PortalSessionOptions) {
    this.#options = { ...options, mtu: options.mtu ?? DEFAULT_PORTAL_MTU };
  }

  /** A raw push on topic "client"; never throws. */
  handleMessage(event: string, payload: unknown, nowMs: number): void {
    const what = typeof event === 'string' ? `the ${printableText(event, 40)} push` : 'a push';
    this.#guard(what, () => this.#handleMessage(event, payload, nowMs));
  }

  /** The engine's route miss: asks for the resource covering `destination`; never throws. */
  handleRouteMiss(destination: string, nowMs: number): void {
    this.#guard('a route miss', () => this.#handleRouteMiss(destination, nowMs));
  }

  /** A gateway's peer stopped answering: its authorizations go, the next packet asks again. */
  handlePeerHandshakeFailed(publicKeyBase64: string, nowMs: number): void {
    this.#guard('a handshake failure', () => this.#handshakeFailed(publicKeyBase64, nowMs));
  }

  /** Expiries and unanswered requests due by `nowMs`. */
  handleTimeout(nowMs: number): void {
    this.#guard('a timeout', () => this.#handleTimeout(nowMs));
  }

  /** When handleTimeout has something to do, or undefined. */
  nextDeadline(): number | undefined {
    let earliest: number | undefined;
    const consider = (at: number | null): void => {
      if (at !== null && (earliest === undefined || at < earliest)) earliest = at;
    };
    for (const authorization of this.#authorizations.values()) {
      consider(authorization.expiresAt);
      for (const name of authorization.names.values()) consider(name.expiresAt);
    }
    for (const pending of this.#pending.values())
      if (!pending.timedOut) consider(pending.sentAt + REQUEST_TIMEOUT_MS);
    if (this.#namesCheckAt !== undefined && this.#hasDnsNames()) consider(this.#namesCheckAt);
    return earliest;
  }

  pollEffect(): PortalSessionEffect | undefined {
    const effect = this.#effects.shift();
    if (effect?.type === 'spec-changed') this.#specChangeQueued = false;
    return effect;
  }

  /** The tunnel as the portal describes it; undefined until the first init. */
  spec(): TunnelSpec | undefined {
    return this.#spec;
  }

  /** Who signed in, when the portal says (init.identity). */
  identity(): PortalIdentity | undefined {
    return this.#identity === undefined ? undefined : { ...this.#identity };
  }

  /** The resources the portal offers, by name, for `status`. */
  resources(): PortalResourceView[] {
    const views = [...this.#resources.values()].map(({ resource }): PortalResourceView => {
      const site = resource.sites[0];
      return {
        id: resource.id,
        name: resource.name,
        type: resource.type,
        address: resource.type === 'internet' ? null : resource.address,
        siteName: site === undefined ? null : site.name,
        siteStatus: resource.status,
        authorized: this.#authorizations.has(resource.id),
      };
    });
    return views.sort((a, b) => compare(a.name, b.name) || compare(a.id, b.id));
  }

  stats(): PortalSessionStats {
    return {
      ...structuredClone(this.#stats),
      resources: this.#resources.size,
      authorizedResources: this.#authorizations.size,
      gateways: this.#gateways.size,
      pendingRequests: [...this.#pending.values()].filter((pending) => !pending.timedOut).length,
      backoffs: this.#backoffs.size,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Portal pushes

  #handleMessage(event: string, payload: unknown, now: number): void {
    // The type says string; a caller in plain JavaScript may still hand anything.
    if (typeof event !== 'string') {
      this.#stats.unknownEvents += 1;
      this.#logThrottled('unknown_event', 'debug', `portal: a push without an event name, dropped`);
      return;
    }
    const parsed = parsePortalToClient(event, payload);
    if (!parsed.ok) {
      if (parsed.kind === 'malformed') {
        this.#stats.malformed += 1;
        this.#logThrottled('malformed', 'warn', `portal: a push dropped: ${parsed.problem}`);
      } else if (parsed.kind === 'unknown_event') {
        this.#stats.unknownEvents += 1;
        this.#logThrottled('unknown_event', 'debug', `portal: ${parsed.problem}, dropped`);
      } else {
        this.#ignore(parsed.problem);
      }
      return;
    }
    const message: PortalToClientMessage = parsed.message;
    this.#stats.messages[message.event] += 1;
    if (message.event === 'init') {
      this.#init(message.payload, payload, parsed.ignoredResources, parsed.invalidResources, now);
      return;
    }
    if (message.event === 'disconnect') {
      this.#stats.disconnects += 1;
      this.#log('info', `portal: disconnect (${printableText(message.payload.reason, 128)})`);
      return;
    }
    if (this.#config === undefined) {
      if (message.event === 'authorization_created')
        this.#stats.authorizationsIgnored.before_init += 1;
      this.#ignore(`portal: ${message.event} before init, ignored`);
      return;
    }
    switch (message.event) {
      case 'config_changed':
        return this.#configChanged(message.payload.interface, message.payload.address_ranges);
      case 'resource_created_or_updated':
        return this.#resourceUpdated(message.payload);
      case 'resource_deleted':
        return this.#resourceDeleted(message.payload.id);
      case 'authorization_created':
        return this.#authorizationCreated(message.payload, now);
      case 'authorization_creation_failed':
        return this.#authorizationFailed(message.payload.resource_id, message.payload.reason, now);
      default:
        this.#ignore(`portal: ${message.event} ignored (no relays yet)`);
    }
  }

  #init(
    init: Extract<PortalToClientMessage, { event: 'init' }>['payload'],
    raw: unknown,
    ignoredResources: number,
    invalidResources: string[],
    now: number,
  ): void {
    const config = sessionConfig(init.interface, init.address_ranges);
    if (config === undefined) return this.#malformed('init: an address that does not parse');
    const first = this.#config === undefined;
    const resources = new Map<string, StoredResource>();
    const invalid = [...invalidResources];
    for (const resource of init.resources) {
      const stored = storeResource(resource);
      if (stored === undefined) invalid.push(`resources: ${resource.id}'s address does not parse`);
      else resources.set(resource.id, stored);
    }
    this.#stats.ignoredResources += ignoredResources;
    this.#stats.invalidResources += invalid.length;
    for (const problem of invalid.slice(0, 3))
      this.#log('warn', `portal: init: a resource left out: ${problem}`);

    const identity = readIdentity(raw);
    if (identity === 'invalid') this.#stats.invalidIdentity += 1;
    const nextIdentity = identity === 'invalid' ? undefined : identity;
    if (nextIdentity !== undefined && !sameIdentity(nextIdentity, this.#identity)) {
      this.#log(
        'info',
        `portal: signed in as ${printableText(nextIdentity.actorName, 64)} (account ${printableText(nextIdentity.accountSlug, 64)})`,
      );
    }
    this.#identity = nextIdentity;
    this.#setConfig(config);
    this.#resources = resources;
    for (const id of [...this.#authorizations.keys()]) this.#reconcile(id);
    for (const id of [...this.#backoffs.keys()]) if (!resources.has(id)) this.#backoffs.delete(id);
    for (const [key, pending] of this.#pending) {
      if (!resources.has(pending.resourceId)) this.#pending.delete(key);
    }
    const changed = this.#refresh();
    if (first || changed) {
      const kept = this.#authorizations.size;
      this.#log(
        'info',
        `portal: ${first ? 'init' : 'init again'}: ${resources.size} resource(s)` +
          (first ? '' : `, ${kept} authorization(s) kept`) +
          (ignoredResources > 0 ? `, ${ignoredResources} of unknown types ignored` : ''),
      );
    }
    void now;
  }

  #configChanged(iface: ClientInterface, ranges: AddressRanges | undefined): void {
    const config = sessionConfig(iface, ranges ?? this.#config!.addressRanges);
    if (config === undefined)
      return this.#malformed('config_changed: an address that does not parse');
    this.#setConfig(config);
    if (this.#refresh())
      this.#log('info', 'portal: config_changed: the interface or ranges changed');
  }

  #setConfig(config: SessionConfig): void {
    const previous = this.#config;
    this.#config = config;
    if (previous !== undefined && sameStubSettings(previous, config)) return;
    this.#stats.upstreamDnsSkipped += upstreamServers(config.interface).skipped;
    if (previous === undefined) return;
    // The tunnel starts its DNS stub again for these, and the new stub hands the proxy addresses
    // out afresh: an address authorized for one name may now mean another.
    let ended = 0;
    for (const [id, authorization] of this.#authorizations) {
      if (authorization.type !== 'dns') continue;
      this.#authorizations.delete(id);
      this.#stats.authorizationsEnded.dns_reset += 1;
      ended += 1;
    }
    for (const [key, pending] of this.#pending)
      if (pending.domain !== undefined) this.#pending.delete(key);
    if (ended > 0) {
      this.#log(
        'info',
        `portal: the DNS settings or proxy ranges changed: ${ended} DNS resource authorization(s) dropped, asked again on the next packet`,
      );
    }
  }

  #resourceUpdated(resource: PortalResource): void {
    if (!this.#resources.has(resource.id) && this.#resources.size >= MAX_PORTAL_RESOURCES) {
      this.#stats.refusedResources += 1;
      this.#logThrottled(
        'refused_resource',
        'warn',
        `portal: a resource refused: already ${MAX_PORTAL_RESOURCES} resources`,
      );
      return;
    }
    const stored = storeResource(resource);
    if (stored === undefined) {
      this.#stats.invalidResources += 1;
      this.#logThrottled(
        'invalid_resource',
        'warn',
        `portal: resource ${resource.id}: its address does not parse`,
      );
      return;
    }
    this.#resources.set(resource.id, stored);
    this.#reconcile(resource.id);
    if (this.#refresh())
      this.#log('debug', `portal: resource ${printableText(resource.name, 64)} updated`);
  }

  #resourceDeleted(id: string): void {
    const stored = this.#resources.get(id);
    if (stored === undefined)
      return this.#ignore(`portal: resource_deleted for an unknown resource, ignored`);
    this.#resources.delete(id);
    this.#reconcile(id);
    this.#backoffs.delete(id);
    for (const [key, pending] of this.#pending)
      if (pending.resourceId === id) this.#pending.delete(key);
    this.#refresh();
    this.#log('info', `portal: resource ${printableText(stored.resource.name, 64)} removed`);
  }

  #authorizationCreated(created: AuthorizationCreated, now: number): void {
    const stored = this.#resources.get(created.resource_id);
    if (stored === undefined) return this.#ignoreAuthorization('unknown_resource');
    const resource = stored.resource;
    const pending = this.#takePending(resource.id, resource.type === 'dns');
    if (resource.type === 'internet' && !this.#options.internetResource)
      return this.#ignoreAuthorization('internet_resource_off');
    if (resource.sites.length > 0 && !resource.sites.some((site) => site.id === created.site_id))
      return this.#unusable(resource.id, 'wrong_site', now);
    if (resource.type === 'dns' && pending?.domain === undefined)
      return this.#ignoreAuthorization('unrequested_name');
    if (created.expires_at !== null && created.expires_at <= now)
      return this.#unusable(resource.id, 'already_expired', now);
    const gateway = gatewayInfo(created);
    if (gateway === undefined) return this.#unusable(resource.id, 'bad_gateway', now);

    // The gateway's key under another id: that one was replaced (its flows with it).
    for (const [id, other] of this.#gateways) {
      if (id !== gateway.id && other.publicKeyText === gateway.publicKeyText)
        this.#dropGatewayAuthorizations(id, 'gateway_replaced');
    }
    if (gateway.endpoint === undefined) {
      this.#logThrottled(
        'no_endpoint',
        'warn',
        `portal: gateway ${gateway.id} has no usable endpoint`,
      );
    }
    this.#gateways.set(gateway.id, gateway);
    let authorization = this.#authorizations.get(resource.id);
    if (authorization === undefined || authorization.gatewayId !== gateway.id) {
      if (authorization !== undefined) this.#stats.authorizationsEnded.gateway_replaced += 1;
      authorization = {
        resourceId: resource.id,
        type: resource.type,
        gatewayId: gateway.id,
        siteId: created.site_id,
        expiresAt: null,
        names: new Map(),
      };
      this.#authorizations.set(resource.id, authorization);
    }
    authorization.siteId = created.site_id;
    if (pending?.domain !== undefined) {
      this.#addName(
        authorization,
        pending.domain.name,
        pending.domain.proxyAddresses,
        created.expires_at,
        now,
      );
    } else {
      authorization.expiresAt = created.expires_at;
    }
    this.#backoffs.delete(resource.id);
    this.#stats.authorizations += 1;
    this.#refresh();
    const what = pending?.domain === undefined ? '' : ` for ${pending.domain.name}`;
    this.#log(
      'info',
      `portal: ${printableText(resource.name, 64)} authorized${what} via gateway ${gateway.id}`,
    );
  }

  #authorizationFailed(resourceId: string, reason: AuthorizationFailureReason, now: number): void {
    this.#stats.authorizationFailures[reason] += 1;
    const stored = this.#resources.get(resourceId);
    this.#takePending(resourceId, false);
    if (stored === undefined) {
      this.#logThrottled(
        'failure',
        'debug',
        `portal: no authorization (${reason}) for an unknown resource`,
      );
      return;
    }
    const delayMs = this.#backOff(resourceId, now);
    this.#logThrottled(
      'failure',
      'info',
      `portal: no authorization for ${printableText(stored.resource.name, 64)} (${reason}); not asked again for ${delayMs / 1000} s`,
    );
  }

  /**
   * An answer that cannot be used, as a refusal: asking again at once would most likely get the
   * same answer (a clock far ahead makes every authorization already expired), once a round trip.
   */
  #unusable(resourceId: string, reason: AuthorizationIgnoreReason, now: number): void {
    this.#ignoreAuthorization(reason);
    this.#backOff(resourceId, now);
  }

  /** The next backoff for `resourceId`: 1 s doubling to 30 s; its length. */
  #backOff(resourceId: string, now: number): number {
    const failures = (this.#backoffs.get(resourceId)?.failures ?? 0) + 1;
    const delayMs = Math.min(
      FAILURE_BACKOFF_MAX_MS,
      FAILURE_BACKOFF_INITIAL_MS * 2 ** Math.min(failures - 1, 30),
    );
    this.#backoffs.set(resourceId, { failures, retryAt: now + delayMs });
    return delayMs;
  }

  // -------------------------------------------------------------------------------------------
  // Engine events and time

  #handleRouteMiss(destination: string, now: number): void {
    this.#stats.routeMisses += 1;
    const config = this.#config;
    if (config === undefined) {
      this.#stats.requestsSuppressed.before_init += 1;
      return;
    }
    const target = routeTarget(
      {
        resources: this.#resources,
        addressRanges: config.addressRanges,
        internetResource: this.#options.internetResource,
        lookupProxyAddress: this.#options.lookupProxyAddress,
      },
      String(destination),
    );
    if (!target.ok) {
      this.#stats.unroutable[target.reason] += 1;
      this.#logThrottled(
        'unroutable',
        'debug',
        `portal: a packet to no resource (${target.reason})`,
      );
      return;
    }
    const { resourceId, domain } = target;
    const authorization = this.#authorizations.get(resourceId);
    if (
      authorization !== undefined &&
      (domain === undefined ||
        authorization.names.get(domain.name)?.proxyAddresses.includes(target.destination))
    ) {
      this.#stats.requestsSuppressed.already_authorized += 1;
      return;
    }
    const backoff = this.#backoffs.get(resourceId);
    if (backoff !== undefined && now < backoff.retryAt) {
      this.#stats.requestsSuppressed.backoff += 1;
      return;
    }
    const key = pendingKey(resourceId, domain?.name);
    const earlier = this.#pending.get(key);
    if (earlier !== undefined && !earlier.timedOut && now < earlier.sentAt + REQUEST_TIMEOUT_MS) {
      this.#stats.requestsSuppressed.in_flight += 1;
      return;
    }
    if (!this.#hasRoomForEffect() || (earlier === undefined && !this.#roomForPending())) {
      this.#stats.requestsSuppressed.pending_full += 1;
      return;
    }
    if (earlier !== undefined) {
      this.#pending.delete(key);
      if (!earlier.timedOut) this.#stats.requestsTimedOut += 1;
      this.#stats.requestRetries += 1;
    }
    const request: RequestAuthorization = {
      resource_id: resourceId,
      connected_gateway_ids: [...this.#gateways.keys()].slice(0, MAX_ICE_PEERS),
      ...(domain === undefined
        ? {}
        : { domain: { name: domain.name, proxy_ips: domain.proxyAddresses } }),
    };
    this.#pending.set(key, { resourceId, domain, sentAt: now, timedOut: false });
    this.#stats.requestsSent += 1;
    this.#emit({ type: 'push', event: 'request_authorization', payload: request });
  }

  #handshakeFailed(publicKey: string, _now: number): void {
    const gateway = [...this.#gateways.values()].find((g) => g.publicKeyText === publicKey);
    if (gateway === undefined) {
      this.#stats.handshakeFailuresUnknownPeer += 1;
      return;
    }
    this.#stats.handshakeFailures += 1;
    const dropped = this.#dropGatewayAuthorizations(gateway.id, 'handshake_failed');
    this.#refresh();
    this.#log(
      'info',
      `portal: gateway ${gateway.id} stopped answering: ${dropped} authorization(s) dropped, asked again on the next packet`,
    );
  }

  #handleTimeout(now: number): void {
    let expired = 0;
    for (const [id, authorization] of this.#authorizations) {
      for (const [name, held] of authorization.names) {
        if (held.expiresAt !== null && held.expiresAt <= now) authorization.names.delete(name);
      }
      const ended =
        authorization.type === 'dns'
          ? authorization.names.size === 0
          : authorization.expiresAt !== null && authorization.expiresAt <= now;
      if (ended) {
        this.#authorizations.delete(id);
        this.#stats.authorizationsEnded.expired += 1;
        expired += 1;
      }
    }
    for (const pending of this.#pending.values()) {
      if (!pending.timedOut && pending.sentAt + REQUEST_TIMEOUT_MS <= now) {
        pending.timedOut = true;
        this.#stats.requestsTimedOut += 1;
      }
    }
    let released = 0;
    if (this.#namesCheckAt !== undefined && this.#namesCheckAt <= now) {
      released = this.#releaseRenamedAddresses();
      this.#namesCheckAt = this.#hasDnsNames() ? now + NAME_CHECK_INTERVAL_MS : undefined;
    }
    if (this.#refresh() && expired + released > 0) {
      this.#log(
        'info',
        `portal: ${expired} authorization(s) expired, ${released} DNS name(s) the stub let go dropped`,
      );
    }
  }

  /** Drops the proxy addresses the stub no longer gives their authorized name; names dropped. */
  #releaseRenamedAddresses(): number {
    let released = 0;
    for (const [id, authorization] of this.#authorizations) {
      if (authorization.type !== 'dns') continue;
      for (const [name, held] of authorization.names) {
        const kept = held.proxyAddresses.filter(
          (address) => stubNames(this.#options.lookupProxyAddress, address, name) !== false,
        );
        if (kept.length === held.proxyAddresses.length) continue;
        if (kept.length > 0) {
          held.proxyAddresses = kept;
          continue;
        }
        authorization.names.delete(name);
        this.#stats.namesReleased += 1;
        released += 1;
      }
      if (authorization.names.size === 0) {
        this.#authorizations.delete(id);
        this.#stats.authorizationsEnded.names_released += 1;
      }
    }
    return released;
  }

  #hasDnsNames(): boolean {
    for (const authorization of this.#authorizations.values())
      if (authorization.names.size > 0) return true;
    return false;
  }

  // -------------------------------------------------------------------------------------------
  // State

  /** Keeps `resourceId`'s authorization only while its resource still fits it. */
  #reconcile(resourceId: string): void {
    const authorization = this.#authorizations.get(resourceId);
    if (authorization === undefined) return;
    const stored = this.#resources.get(resourceId);
    const resource = stored?.resource;
    let keep =
      resource !== undefined &&
      resource.type === authorization.type &&
      (resource.type !== 'internet' || this.#options.internetResource) &&
      (resource.sites.length === 0 || resource.sites.some((s) => s.id === authorization.siteId));
    if (keep && stored?.pattern !== undefined) {
      for (const name of [...authorization.names.keys()]) {
        if (!stored.pattern.matches(name)) authorization.names.delete(name);
      }
      keep = authorization.names.size > 0;
    }
    if (!keep) {
      this.#authorizations.delete(resourceId);
      this.#stats.authorizationsEnded.resource_gone += 1;
    }
  }

  #dropGatewayAuthorizations(gatewayId: string, reason: AuthorizationEndReason): number {
    let dropped = 0;
    for (const [id, authorization] of this.#authorizations) {
      if (authorization.gatewayId !== gatewayId) continue;
      this.#authorizations.delete(id);
      this.#stats.authorizationsEnded[reason] += 1;
      dropped += 1;
    }
    this.#gateways.delete(gatewayId);
    return dropped;
  }

  #addName(
    authorization: Authorization,
    name: string,
    proxyAddresses: string[],
    expiresAt: number | null,
    now: number,
  ): void {
    // The stub handed these addresses to this name: whatever other name held them before lost them.
    const taken = new Set(proxyAddresses);
    for (const [id, other] of this.#authorizations) {
      for (const [otherName, held] of other.names) {
        if (other === authorization && otherName === name) continue;
        const kept = held.proxyAddresses.filter((address) => !taken.has(address));
        if (kept.length === held.proxyAddresses.length) continue;
        if (kept.length > 0) held.proxyAddresses = kept;
        else other.names.delete(otherName);
      }
      if (other !== authorization && other.names.size === 0 && other.type === 'dns') {
        this.#authorizations.delete(id);
        this.#stats.authorizationsEnded.resource_gone += 1;
      }
    }
    authorization.names.delete(name);
    authorization.names.set(name, { proxyAddresses, expiresAt, authorizedAt: now });
    if (this.#namesCheckAt === undefined || this.#namesCheckAt < now)
      this.#namesCheckAt = now + NAME_CHECK_INTERVAL_MS;
    for (const [oldest] of authorization.names) {
      if (authorization.names.size <= MAX_NAMES_PER_RESOURCE) break;
      authorization.names.delete(oldest);
      this.#stats.namesEvicted += 1;
    }
    let total = 0;
    for (const other of this.#authorizations.values()) total += other.names.size;
    for (; total > MAX_AUTHORIZED_NAMES; total -= 1) {
      let oldest: { authorization: Authorization; name: string; at: number } | undefined;
      for (const other of this.#authorizations.values()) {
        for (const [otherName, held] of other.names) {
          if (
            !(other === authorization && otherName === name) &&
            (oldest === undefined || held.authorizedAt < oldest.at)
          )
            oldest = { authorization: other, name: otherName, at: held.authorizedAt };
          break;
        }
      }
      if (oldest === undefined) break;
      oldest.authorization.names.delete(oldest.name);
      this.#stats.namesEvicted += 1;
      if (oldest.authorization.names.size === 0)
        this.#authorizations.delete(oldest.authorization.resourceId);
    }
  }

  /**
   * The oldest pending request for `resourceId` (one naming a domain, when `withDomain`): one
   * still in time first, else one that timed out (a late answer still authorizes its name).
   */
  #takePending(resourceId: string, withDomain: boolean): PendingRequest | undefined {
    let late: [string, PendingRequest] | undefined;
    for (const [key, pending] of this.#pending) {
      if (pending.resourceId !== resourceId || (withDomain && pending.domain === undefined))
        continue;
      if (pending.timedOut) {
        late ??= [key, pending];
        continue;
      }
      this.#pending.delete(key);
      return pending;
    }
    if (late === undefined) return undefined;
    this.#pending.delete(late[0]);
    return late[1];
  }

  /** Whether another request fits: the oldest timed-out one makes room when none does. */
  #roomForPending(): boolean {
    if (this.#pending.size < MAX_PENDING_REQUESTS) return true;
    for (const [key, pending] of this.#pending) {
      if (!pending.timedOut) continue;
      this.#pending.delete(key);
      return true;
    }
    return false;
  }

  /** Rebuilds the spec; 'spec-changed' when it differs. Whether it did. */
  #refresh(): boolean {
    for (const id of [...this.#gateways.keys()]) {
      if (![...this.#authorizations.values()].some((a) => a.gatewayId === id))
        this.#gateways.delete(id);
    }
    const config = this.#config;
    if (config === undefined) return false;
    const next = buildTunnelSpec({
      interfaceName: this.#options.interfaceName,
      privateKey: this.#options.privateKey,
      mtu: this.#options.mtu,
      internetResource: this.#options.internetResource,
      lanBypass: this.#options.lanBypass,
      config,
      resources: this.#resources,
      gateways: this.#gateways,
      authorizations: this.#authorizations,
    });
    if (this.#spec !== undefined && diffTunnelSpecs(this.#spec, next).length === 0) return false;
    this.#spec = next;
    this.#stats.specChanges += 1;
    if (!this.#specChangeQueued) {
      this.#specChangeQueued = true;
      this.#effects.push({ type: 'spec-changed' });
    }
    return true;
  }

  // -------------------------------------------------------------------------------------------
  // Effects and counting

  #guard(what: string, work: () => void): void {
    try {
      work();
    } catch (error) {
      this.#stats.internalErrors += 1;
      const message = error instanceof Error ? error.message : String(error);
      this.#logThrottled(
        'internal',
        'warn',
        `portal session: ${what} failed: ${printableText(message, 200)}`,
      );
    }
  }

  #malformed(problem: string): void {
    this.#stats.malformed += 1;
    this.#logThrottled('malformed', 'warn', `portal: a push dropped: ${problem}`);
  }

  #ignore(problem: string): void {
    this.#stats.ignored += 1;
    this.#logThrottled('ignored', 'debug', problem);
  }

  #ignoreAuthorization(reason: AuthorizationIgnoreReason): void {
    this.#stats.authorizationsIgnored[reason] += 1;
    this.#logThrottled(
      'authorization_ignored',
      'info',
      `portal: an authorization_created not used (${reason})`,
    );
  }

  /** The first few of a kind, then every 1000th, so a hostile portal cannot flood the log. */
  #logThrottled(kind: string, level: 'info' | 'warn' | 'debug', message: string): void {
    const count = (this.#logCounts.get(kind) ?? 0) + 1;
    this.#logCounts.set(kind, count);
    if (count <= 5) this.#log(level, message);
    else if (count % 1000 === 0) this.#log(level, `${message} (${count} of these so far)`);
  }

  #log(level: 'info' | 'warn' | 'debug', message: string): void {
    this.#emit({ type: 'log', level, message: printableText(message, 400) });
  }

  #hasRoomForEffect(): boolean {
    return this.#effects.length < MAX_QUEUED_EFFECTS;
  }

  #emit(effect: PortalSessionEffect): void {
    if (!this.#hasRoomForEffect()) {
      this.#stats.effectsDropped += 1;
      return;
    }
    this.#effects.push(effect);
  }
}

// ---------------------------------------------------------------------------------------------
// Internals

const MAX_QUEUED_EFFECTS = 4_096;

/** A request sent; one that timed out stays (without a deadline) until answered or replaced. */
interface PendingRequest {
  resourceId: string;
  domain: { name: string; proxyAddresses: string[] } | undefined;
  sentAt: number;
  timedOut: boolean;
}

function pendingKey(resourceId: string, name: string | undefined): string {
  return name === undefined ? resourceId : `${resourceId} ${name}`;
}

function storeResource(resource: PortalResource): StoredResource | undefined {
  try {
    if (resource.type === 'cidr')
      return { resource, prefix: parsePrefix(resource.address), pattern: undefined };
    if (resource.type === 'dns')
      return { resource, prefix: undefined, pattern: parseDomainPattern(resource.address) };
    return { resource, prefix: undefined, pattern: undefined };
  } catch {
    return undefined;
  }
}

/** The interface and ranges with canonical addresses, or undefined when one does not parse. */
function sessionConfig(iface: ClientInterface, ranges: AddressRanges): SessionConfig | undefined {
  try {
    return {
      interface: {
        ...iface,
        ipv4: canonicalAddress(iface.ipv4),
        ipv6: canonicalAddress(iface.ipv6),
      },
      addressRanges: {
        tunnel_ipv4: prefixString(parsePrefix(ranges.tunnel_ipv4)),
        tunnel_ipv6: prefixString(parsePrefix(ranges.tunnel_ipv6)),
        proxy_ipv4: prefixString(parsePrefix(ranges.proxy_ipv4)),
        proxy_ipv6: prefixString(parsePrefix(ranges.proxy_ipv6)),
      },
    };
  } catch {
    return undefined;
  }
}

function gatewayInfo(created: AuthorizationCreated): GatewayInfo | undefined {
  try {
    const first = created.gateway_endpoints[0];
    const endpoint = first === undefined ? undefined : peerEndpoint(first);
    return {
      id: created.gateway_id,
      publicKey: decodeKey(created.gateway_public_key),
      publicKeyText: created.gateway_public_key,
      presharedKey: decodeKey(created.preshared_key),
      endpoint: endpoint === undefined ? undefined : { host: endpoint.host, port: endpoint.port },
      ipv4: canonicalAddress(created.gateway_ipv4),
      ipv6: canonicalAddress(created.gateway_ipv6),
    };
  } catch {
    return undefined;
  }
}

/** init.identity, read from the raw payload (older protocol builds strip it); 'invalid' when unusable. */
function readIdentity(raw: unknown): PortalIdentity | undefined | 'invalid' {
  if (!isPlainObject(raw) || raw.identity === undefined) return undefined;
  const parsed = ClientIdentitySchema.safeParse(raw.identity);
  if (!parsed.success) return 'invalid';
  return { accountSlug: parsed.data.account_slug, actorName: parsed.data.actor_name };
}

function sameIdentity(a: PortalIdentity, b: PortalIdentity | undefined): boolean {
  return b !== undefined && a.accountSlug === b.accountSlug && a.actorName === b.actorName;
}

function zeroes<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((key) => [key, 0])) as Record<K, number>;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
