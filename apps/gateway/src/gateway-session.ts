/**
 * The gateway's portal session as a sans-IO state machine. It takes the pushes of the gateway
 * channel (topic "gateway"), the answers of the name resolutions it asked for, and time; what it
 * wants done comes out of pollEffect(): pushes (flow_authorized), name resolutions, and
 * 'plan-changed' — plan() is then what the engine's peers, the TUN and the nftables table must
 * be, and planApplied(version) says it is in place.
 *
 * - A flow is one client's access to one resource until its expires_at. Its client becomes an
 *   engine peer (allowed IPs: the client's tunnel addresses) whose policy is the union of its
 *   flows' destinations crossed with their resources' filters; a peer with no rule left is not
 *   configured at all (an empty policy would let it reach everything).
 * - flow_authorized {ref} is pushed only once a plan holding the flow has been applied, and for
 *   a DNS flow only once its real name has an answer, so the client's first packet finds the
 *   peer, the policy and the DNAT mapping in place.
 * - init reconciles: the flows become exactly its authorizations. A peer whose flows are the
 *   same gets the same config, so the engine keeps its session. Flows stay across reconnects:
 *   the session changes only on messages and time.
 * - A push that does not parse, or a flow that does not fit the account's ranges, is counted and
 *   changes nothing. Nothing here throws at its caller.
 */

import { parseAddress, parsePrefix, prefixContains, formatPrefix } from '@gatehouse/addresses';
import type { EnginePeer } from '@gatehouse/engine';
import { printableText } from '@gatehouse/logging';
import {
  MAX_PORTAL_AUTHORIZATIONS,
  parsePortalToGateway,
  portalToGatewaySchemas,
  type AuthorizeFlow,
  type PortalResource,
  type PortalToGatewayEvent,
  type PortalToGatewayMessage,
} from '@gatehouse/protocol';
import { decodeKey } from '@gatehouse/wireguard';
import type { ResolveOutcome } from './name-resolution.ts';
import { NameTable, canonicalAddress, normalizeName } from './session-names.ts';
import { PolicyUnion, rulesKey } from './session-rules.ts';

export type { ResolveOutcome } from './name-resolution.ts';

export interface DnatMapping {
  family: 4 | 6;
  clientAddress: string;
  proxyAddress: string;
  realAddress: string;
}

export interface GatewayPlan {
  /** Increments whenever anything below changes. */
  version: number;
  /** The gateway's tunnel addresses from init; undefined before the first init. */
  interface: { ipv4: string; ipv6: string } | undefined;
  /** The account's tunnel ranges (routed into the TUN). */
  tunnelRanges: { ipv4: string; ipv6: string } | undefined;
  /** The account's proxy ranges (never forwarded un-NATed). */
  proxyRanges: { ipv4: string; ipv6: string } | undefined;
  /** One per authorized client, sorted by public key. */
  peers: EnginePeer[];
  /** (client tunnel address, proxy address) → real address, for DNS flows. */
  dnat: DnatMapping[];
}

export type GatewayEffect =
  | { type: 'push'; event: string; payload: unknown }
  /** Resolve A and AAAA of this real name; answer with handleResolution. */
  | { type: 'resolve'; name: string }
  /** plan() changed: apply it, then call planApplied(plan.version). */
  | { type: 'plan-changed' }
  | { type: 'log'; level: 'info' | 'warn' | 'debug'; message: string };

export interface GatewaySessionOptions {
  /** A name's answer is used at least this long before it is resolved again (default 30 s). */
  minTtlSeconds?: number;
  /** …and at most this long (default 300 s). */
  maxTtlSeconds?: number;
  /** Flows held at most (default the protocol's limit of an init). */
  maxFlows?: number;
}

/** Why an authorization (authorize_flow, or one of init's) was not taken. */
export const FLOW_REFUSALS = [
  'before_init',
  'expired',
  'bad_key',
  'client_outside_tunnel_range',
  'dns_without_domain',
  'proxy_outside_range',
  'key_of_another_client',
  'address_of_another_client',
  'too_many_flows',
] as const;
export type FlowRefusal = (typeof FLOW_REFUSALS)[number];

/** Why a flow ended. */
export const FLOW_ENDINGS = [
  'expired',
  'reject_access',
  'not_in_init',
  'client_rekeyed',
  'resource_changed',
] as const;
export type FlowEnding = (typeof FLOW_ENDINGS)[number];

export interface GatewaySessionStats {
  /** Pushes that parsed, by event. */
  messages: Record<PortalToGatewayEvent, number>;
  malformed: number;
  unknownEvents: number;
  /**
   * Pushes that parsed but were not acted on: about a resource type this build does not know,
   * relay and ICE messages (no relays yet), reject_access or resource_updated for no flow held.
   */
  ignored: number;
  /** Flows held now. */
  flowsActive: number;
  flowsAccepted: number;
  flowsRefused: Record<FlowRefusal, number>;
  flowsEnded: Record<FlowEnding, number>;
  /** flow_authorized pushed. */
  confirmationsSent: number;
  /** Refs whose flow went before it could be confirmed, or pushed out past the limit. */
  confirmationsDropped: number;
  resolutionsOk: number;
  resolutionsFailed: number;
  /** Answers for names no flow needs any more. */
  resolutionsDiscarded: number;
  /** Addresses in answers that were not addresses of the family asked. */
  invalidAnswerAddresses: number;
  /** Proxy addresses of the current plan with no real address of their family (dropped by the table). */
  unmappedProxyAddresses: number;
  /** Clients with flows whose filters allow nothing the engine can express: not configured. */
  peersWithoutRules: number;
  /** Filter entries the engine cannot express (only port 0), left out. */
  unenforceableFilters: number;
  /** Rows the current peers' policies cost the engine. */
  policyRows: number;
}

export class GatewaySession {
  readonly #maxFlows: number;
  readonly #names: NameTable;
  readonly #effects: GatewayEffect[] = [];
  readonly #flows = new Map<string, Flow>();
  readonly #pendingRefs = new Map<string, PendingRef>();
  readonly #stats: GatewaySessionStats;
  readonly #logTimes = new Map<string, number>();
  #config: SessionConfig | undefined;
  #plan: GatewayPlan = {
    version: 0,
    interface: undefined,
    tunnelRanges: undefined,
    proxyRanges: undefined,
    peers: [],
    dnat: [],
  };
  #planKey = '';
  #appliedVersion = -1;

  constructor(options: GatewaySessionOptions = {}) {
    const minTtlSeconds = options.minTtlSeconds ?? 30;
    this.#maxFlows = options.maxFlows ?? MAX_PORTAL_AUTHORIZATIONS;
    this.#names = new NameTable({
      minTtlMs: minTtlSeconds * 1000,
      maxTtlMs: Math.max(minTtlSeconds, options.maxTtlSeconds ?? 300) * 1000,
      maxInFlight: 16,
      resolveTimeoutMs: 10_000,
      retryInitialMs: 1_000,
      retryMaxMs: 60_000,
      maxAddressesPerFamily: 16,
    });
    this.#stats = {
      messages: zeroes(Object.keys(portalToGatewaySchemas) as PortalToGatewayEvent[]),
      malformed: 0,
      unknownEvents: 0,
      ignored: 0,
      flowsActive: 0,
      flowsAccepted: 0,
      flowsRefused: zeroes(FLOW_REFUSALS),
      flowsEnded: zeroes(FLOW_ENDINGS),
      confirmationsSent: 0,
      confirmationsDropped: 0,
      resolutionsOk: 0,
      resolutionsFailed: 0,
      resolutionsDiscarded: 0,
      invalidAnswerAddresses: 0,
      unmappedProxyAddresses: 0,
      peersWithoutRules: 0,
      unenforceableFilters: 0,
      policyRows: 0,
    };
    this.#planKey = planKey(this.#plan);
  }

  /** A raw push on topic "gateway"; never throws. */
  handleMessage(event: string, payload: unknown, nowMs: number): void {
    const parsed = parsePortalToGateway(event, payload);
    if (!parsed.ok) {
      if (parsed.kind === 'malformed') this.#stats.malformed += 1;
      else if (parsed.kind === 'unknown_event') this.#stats.unknownEvents += 1;
      else this.#stats.ignored += 1;
      this.#logThrottled(
        `refused ${parsed.kind}`,
        nowMs,
        'warn',
        `portal: ${parsed.kind.replace('_', ' ')} message ${printableText(event, 40)} dropped: ${parsed.problem}`,
      );
      return;
    }
    this.#stats.messages[parsed.message.event] += 1;
    this.#handle(parsed.message, nowMs);
    this.#settle(nowMs);
  }

  handleResolution(name: string, outcome: ResolveOutcome, nowMs: number): void {
    const result = this.#names.resolved(normalizeName(name), outcome, nowMs);
    if (result.kind === 'discarded') {
      this.#stats.resolutionsDiscarded += 1;
    } else if (result.kind === 'answer') {
      this.#stats.resolutionsOk += 1;
      this.#stats.invalidAnswerAddresses += result.invalidAddresses;
    } else {
      this.#stats.resolutionsFailed += 1;
      this.#stats.invalidAnswerAddresses += result.invalidAddresses;
      this.#logThrottled(
        `resolve ${name}`,
        nowMs,
        'warn',
        `resolving ${printableText(name, 253)} failed (${result.problem}); trying again in ${Math.round(result.retryInMs / 1000)} s`,
      );
    }
    this.#settle(nowMs);
  }

  /** Expiries and names due for resolution. */
  handleTimeout(nowMs: number): void {
    let expired = 0;
    for (const flow of [...this.#flows.values()]) {
      if (flow.expiresAt !== null && flow.expiresAt <= nowMs) {
        this.#endFlow(flow, 'expired');
        expired += 1;
      }
    }
    if (expired > 0) this.#log('info', `${expired} flow(s) expired`);
    const { timedOut } = this.#names.advance(nowMs);
    for (const name of timedOut) {
      this.#stats.resolutionsFailed += 1;
      this.#logThrottled(`resolve ${name}`, nowMs, 'warn', `resolving ${name} timed out`);
    }
    this.#settle(nowMs);
  }

  nextDeadline(): number | undefined {
    let earliest = this.#names.nextDeadline();
    for (const flow of this.#flows.values()) {
      if (flow.expiresAt !== null && (earliest === undefined || flow.expiresAt < earliest))
        earliest = flow.expiresAt;
    }
    return earliest;
  }

  pollEffect(): GatewayEffect | undefined {
    return this.#effects.shift();
  }

  plan(): GatewayPlan {
    return this.#plan;
  }

  /** The plan of `version` is in place: the flows it made ready are confirmed to the portal. */
  planApplied(version: number): void {
    if (!Number.isInteger(version) || version > this.#plan.version) return;
    this.#appliedVersion = Math.max(this.#appliedVersion, version);
    this.#confirmReady();
  }

  stats(): GatewaySessionStats {
    return {
      ...this.#stats,
      messages: { ...this.#stats.messages },
      flowsRefused: { ...this.#stats.flowsRefused },
      flowsEnded: { ...this.#stats.flowsEnded },
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Messages

  #handle(message: PortalToGatewayMessage, now: number): void {
    switch (message.event) {
      case 'init': {
        const { interface: iface, address_ranges: ranges } = message.payload;
        this.#config = {
          interface: { ipv4: iface.ipv4, ipv6: iface.ipv6 },
          tunnelRanges: {
            ipv4: formatPrefix(parsePrefix(ranges.tunnel_ipv4)),
            ipv6: formatPrefix(parsePrefix(ranges.tunnel_ipv6)),
          },
          proxyRanges: {
            ipv4: formatPrefix(parsePrefix(ranges.proxy_ipv4)),
            ipv6: formatPrefix(parsePrefix(ranges.proxy_ipv6)),
          },
        };
        this.#reconcile(message.payload.authorizations, now);
        return;
      }
      case 'authorize_flow': {
        const refusal = this.#authorize(message.payload, now);
        if (refusal !== undefined) this.#refuse(message.payload, refusal, now);
        return;
      }
      case 'reject_access': {
        const flow = this.#flows.get(
          flowKey(message.payload.client_id, message.payload.resource_id),
        );
        if (flow === undefined) {
          this.#stats.ignored += 1;
          return;
        }
        this.#endFlow(flow, 'reject_access');
        this.#log('info', `flow of client ${flow.clientId} to resource ${flow.resourceId} revoked`);
        return;
      }
      case 'resource_updated':
        this.#updateResource(message.payload);
        return;
      case 'disconnect':
        this.#log(
          'warn',
          `the portal disconnects this gateway: ${printableText(message.payload.reason, 200)}`,
        );
        return;
      case 'relays_presence':
      case 'ice_candidates':
      case 'invalidate_ice_candidates':
        // Direct UDP only for now: relay and ICE work arrives with TURN.
        this.#stats.ignored += 1;
        return;
    }
  }

  /** The flows become exactly `authorizations` (a flow kept as it was keeps its peer's config). */
  #reconcile(authorizations: readonly AuthorizeFlow[], now: number): void {
    const wanted = new Set<string>();
    for (const authorization of authorizations) {
      wanted.add(flowKey(authorization.client.id, authorization.resource.id));
    }
    for (const flow of [...this.#flows.values()]) {
      if (!wanted.has(flow.key)) this.#endFlow(flow, 'not_in_init');
    }
    // A flow of several names comes as several authorizations: the first replaces the names kept.
    const seen = new Set<string>();
    let refused = 0;
    for (const authorization of authorizations) {
      const key = flowKey(authorization.client.id, authorization.resource.id);
      const refusal = this.#authorize(authorization, now, !seen.has(key));
      seen.add(key);
      if (refusal !== undefined) {
        this.#refuse(authorization, refusal, now, false);
        refused += 1;
      }
    }
    this.#log(
      'info',
      `init: ${this.#flows.size} flow(s) held${refused > 0 ? `, ${refused} refused` : ''}`,
    );
  }

  #authorize(
    authorization: AuthorizeFlow,
    now: number,
    replaceNames = false,
  ): FlowRefusal | undefined {
    const config = this.#config;
    if (config === undefined) return 'before_init';
    if (authorization.expires_at !== null && authorization.expires_at <= now) return 'expired';
    const { client, resource } = authorization;
    let presharedKey: Uint8Array;
    let publicKey: Uint8Array;
    try {
      publicKey = decodeKey(client.public_key);
      presharedKey = decodeKey(client.preshared_key);
    } catch {
      return 'bad_key';
    }
    const ipv4 = canonicalAddress(client.ipv4, 4);
    const ipv6 = canonicalAddress(client.ipv6, 6);
    if (
      ipv4 === undefined ||
      ipv6 === undefined ||
      !inPrefix(config.tunnelRanges.ipv4, ipv4) ||
      !inPrefix(config.tunnelRanges.ipv6, ipv6)
    )
      return 'client_outside_tunnel_range';
    let domain: FlowDomain | undefined;
    if (resource.type === 'dns') {
      if (authorization.domain === undefined) return 'dns_without_domain';
      const proxyAddresses: string[] = [];
      for (const text of authorization.domain.proxy_ips) {
        const family = text.includes(':') ? 6 : 4;
        const canonical = canonicalAddress(text, family);
        const range = family === 4 ? config.proxyRanges.ipv4 : config.proxyRanges.ipv6;
        if (canonical === undefined || !inPrefix(range, canonical)) return 'proxy_outside_range';
        if (!proxyAddresses.includes(canonical)) proxyAddresses.push(canonical);
      }
      domain = { name: normalizeName(authorization.domain.name), proxyAddresses };
    }

    const key = flowKey(client.id, resource.id);
    for (const other of this.#flows.values()) {
      if (other.clientId === client.id) continue;
      if (other.client.publicKeyText === client.public_key) return 'key_of_another_client';
      if (other.client.ipv4 === ipv4 || other.client.ipv6 === ipv6)
        return 'address_of_another_client';
    }
    if (!this.#flows.has(key) && this.#flows.size >= this.#maxFlows) return 'too_many_flows';

    // The client came back with a new key: its flows under the old one are gone.
    for (const other of [...this.#flows.values()]) {
      if (other.clientId === client.id && other.client.publicKeyText !== client.public_key)
        this.#endFlow(other, 'client_rekeyed');
    }
    let flow = this.#flows.get(key);
    if (flow !== undefined && flow.resource.type !== resource.type) {
      this.#endFlow(flow, 'resource_changed');
      flow = undefined;
    }
    if (flow === undefined) {
      flow = {
        key,
        clientId: client.id,
        resourceId: resource.id,
        client: { publicKey, publicKeyText: client.public_key, presharedKey, ipv4, ipv6 },
        resource,
        domains: new Map(),
        expiresAt: authorization.expires_at,
      };
      this.#flows.set(key, flow);
      this.#stats.flowsAccepted += 1;
      this.#log(
        'info',
        `client ${client.id} may reach ${resource.type} resource ${resource.id}${domain === undefined ? '' : ` as ${domain.name}`}`,
      );
    } else {
      flow.client = { publicKey, publicKeyText: client.public_key, presharedKey, ipv4, ipv6 };
      flow.resource = resource;
      flow.expiresAt = authorization.expires_at;
      if (replaceNames) {
        for (const name of flow.domains.keys()) this.#names.unsubscribe(name, key);
        flow.domains.clear();
      }
    }
    if (domain !== undefined) {
      flow.domains.set(domain.name, domain);
      this.#names.subscribe(domain.name, key);
    }
    this.#pendingRefs.delete(authorization.ref);
    this.#pendingRefs.set(authorization.ref, {
      flowKey: key,
      domain: domain?.name,
      readyAtVersion: undefined,
    });
    while (this.#pendingRefs.size > MAX_PENDING_REFS) {
      const oldest = this.#pendingRefs.keys().next().value as string;
      this.#pendingRefs.delete(oldest);
      this.#stats.confirmationsDropped += 1;
    }
    return undefined;
  }

  #refuse(authorization: AuthorizeFlow, refusal: FlowRefusal, now: number, log = true): void {
    this.#stats.flowsRefused[refusal] += 1;
    if (!log && refusal === 'expired') return;
    this.#logThrottled(
      `refusal ${refusal}`,
      now,
      'warn',
      `flow of client ${authorization.client.id} to resource ${authorization.resource.id} refused: ${refusal.replaceAll('_', ' ')}`,
    );
  }

  #updateResource(resource: PortalResource): void {
    let held = 0;
    for (const flow of [...this.#flows.values()]) {
      if (flow.resourceId !== resource.id) continue;
      held += 1;
      // Another type, or another name pattern: the names authorized may no longer be its own.
      if (
        flow.resource.type !== resource.type ||
        (resource.type === 'dns' &&
          flow.resource.type === 'dns' &&
          flow.resource.address !== resource.address)
      ) {
        this.#endFlow(flow, 'resource_changed');
        continue;
      }
      flow.resource = resource;
    }
    if (held === 0) this.#stats.ignored += 1;
    else this.#log('info', `resource ${resource.id} updated (${held} flow(s))`);
  }

  #endFlow(flow: Flow, why: FlowEnding): void {
    if (this.#flows.get(flow.key) !== flow) return;
    this.#flows.delete(flow.key);
    for (const name of flow.domains.keys()) this.#names.unsubscribe(name, flow.key);
    this.#stats.flowsEnded[why] += 1;
  }

  // ---------------------------------------------------------------------------------------------
  // Plan and confirmations

  /** After every input: resolutions to ask for, the plan rebuilt, refs made ready. */
  #settle(now: number): void {
    for (const name of this.#names.takeRequests(now)) this.#effects.push({ type: 'resolve', name });
    this.#stats.flowsActive = this.#flows.size;
    const next = this.#buildPlan();
    const key = planKey(next);
    if (key !== this.#planKey) {
      this.#plan = { ...next, version: this.#plan.version + 1 };
      this.#planKey = key;
      this.#effects.push({ type: 'plan-changed' });
    }
    for (const [ref, pending] of this.#pendingRefs) {
      const flow = this.#flows.get(pending.flowKey);
      const domainGone = pending.domain !== undefined && flow?.domains.has(pending.domain) !== true;
      if (flow === undefined || domainGone) {
        this.#pendingRefs.delete(ref);
        this.#stats.confirmationsDropped += 1;
        continue;
      }
      if (pending.readyAtVersion !== undefined) continue;
      if (pending.domain !== undefined && this.#names.answer(pending.domain) === undefined)
        continue;
      pending.readyAtVersion = this.#plan.version;
    }
    this.#confirmReady();
  }

  #confirmReady(): void {
    for (const [ref, pending] of this.#pendingRefs) {
      if (pending.readyAtVersion === undefined || pending.readyAtVersion > this.#appliedVersion)
        continue;
      this.#pendingRefs.delete(ref);
      this.#stats.confirmationsSent += 1;
      this.#effects.push({ type: 'push', event: 'flow_authorized', payload: { ref } });
    }
  }

  #buildPlan(): Omit<GatewayPlan, 'version'> {
    const config = this.#config;
    const byClient = new Map<string, Flow[]>();
    for (const flow of this.#flows.values()) {
      const flows = byClient.get(flow.client.publicKeyText);
      if (flows === undefined) byClient.set(flow.client.publicKeyText, [flow]);
      else flows.push(flow);
    }
    const peers: EnginePeer[] = [];
    const dnat = new Map<string, DnatMapping>();
    let unmapped = 0;
    let withoutRules = 0;
    let unenforceable = 0;
    let rows = 0;
    for (const publicKeyText of [...byClient.keys()].sort(compareText)) {
      const flows = byClient.get(publicKeyText)!;
      const union = new PolicyUnion();
      for (const flow of flows) union.add(destinations(flow), flow.resource.filters);
      unenforceable += union.unenforceable;
      const { rules, rows: cost } = union.rules();
      const client = flows[0]!.client;
      for (const flow of flows) {
        for (const domain of flow.domains.values()) {
          const answer = this.#names.answer(domain.name);
          const used = { 4: 0, 6: 0 };
          for (const proxyAddress of domain.proxyAddresses) {
            const family = proxyAddress.includes(':') ? 6 : 4;
            const real = family === 4 ? answer?.ipv4 : answer?.ipv6;
            if (real === undefined || real.length === 0) {
              unmapped += 1;
              continue;
            }
            const clientAddress = family === 4 ? client.ipv4 : client.ipv6;
            // The stub may have handed a proxy address to another name since: the latest flow wins.
            dnat.set(`${clientAddress} ${proxyAddress}`, {
              family,
              clientAddress,
              proxyAddress,
              realAddress: real[used[family] % real.length]!,
            });
            used[family] += 1;
          }
        }
      }
      if (rules.length === 0) {
        withoutRules += 1;
        continue;
      }
      rows += cost;
      peers.push({
        publicKey: client.publicKey,
        presharedKey: client.presharedKey,
        allowedIps: [`${client.ipv4}/32`, `${client.ipv6}/128`],
        policy: rules,
      });
    }
    this.#stats.unmappedProxyAddresses = unmapped;
    this.#stats.peersWithoutRules = withoutRules;
    this.#stats.unenforceableFilters = unenforceable;
    this.#stats.policyRows = rows;
    return {
      interface: config?.interface,
      tunnelRanges: config?.tunnelRanges,
      proxyRanges: config?.proxyRanges,
      peers,
      dnat: [...dnat.values()].sort(
        (a, b) =>
          compareText(a.clientAddress, b.clientAddress) ||
          compareText(a.proxyAddress, b.proxyAddress),
      ),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Logs

  #log(level: 'info' | 'warn' | 'debug', message: string): void {
    this.#effects.push({ type: 'log', level, message });
  }

  /** One line per kind per LOG_INTERVAL_MS: a flood is counted in stats(), not logged line by line. */
  #logThrottled(kind: string, now: number, level: 'info' | 'warn', message: string): void {
    const last = this.#logTimes.get(kind);
    if (last !== undefined && now - last < LOG_INTERVAL_MS) return;
    if (this.#logTimes.size >= MAX_LOG_KINDS) this.#logTimes.clear();
    this.#logTimes.set(kind, now);
    this.#log(level, message);
  }
}

// -----------------------------------------------------------------------------------------------
// Details

const MAX_PENDING_REFS = 4096;
const LOG_INTERVAL_MS = 10_000;
const MAX_LOG_KINDS = 256;

interface SessionConfig {
  interface: { ipv4: string; ipv6: string };
  tunnelRanges: { ipv4: string; ipv6: string };
  proxyRanges: { ipv4: string; ipv6: string };
}

interface FlowClient {
  publicKey: Uint8Array;
  publicKeyText: string;
  presharedKey: Uint8Array;
  /** Canonical text. */
  ipv4: string;
  ipv6: string;
}

interface FlowDomain {
  /** Normalised (lower case, no trailing dot). */
  name: string;
  /** Canonical text, in the order the client's stub gave them. */
  proxyAddresses: string[];
}

interface Flow {
  key: string;
  clientId: string;
  resourceId: string;
  client: FlowClient;
  resource: PortalResource;
  /** DNS flows: the names authorized, by normalised name. */
  domains: Map<string, FlowDomain>;
  expiresAt: number | null;
}

interface PendingRef {
  flowKey: string;
  /** The name a DNS flow's ref waits for an answer of. */
  domain: string | undefined;
  /** The first plan version holding the flow ready; confirmed once it is applied. */
  readyAtVersion: number | undefined;
}

function flowKey(clientId: string, resourceId: string): string {
  return `${clientId}\n${resourceId}`;
}

/** Where a flow's packets may go, as canonical prefixes. */
function destinations(flow: Flow): string[] {
  const resource = flow.resource;
  if (resource.type === 'cidr') return [formatPrefix(parsePrefix(resource.address))];
  if (resource.type === 'internet') return ['0.0.0.0/0', '::/0'];
  const out: string[] = [];
  for (const domain of flow.domains.values()) {
    for (const address of domain.proxyAddresses)
      out.push(`${address}/${address.includes(':') ? 128 : 32}`);
  }
  return out;
}

function inPrefix(prefixText: string, addressText: string): boolean {
  const prefix = parsePrefix(prefixText);
  const address = parseAddress(addressText);
  return address.family === prefix.family && prefixContains(prefix, address.address);
}

/** A stable text key of everything a plan says (keys in base64; the PSK's bytes never leave here). */
function planKey(plan: Omit<GatewayPlan, 'version'>): string {
  return JSON.stringify([
    plan.interface,
    plan.tunnelRanges,
    plan.proxyRanges,
    plan.peers.map((peer) => [
      Buffer.from(peer.publicKey).toString('base64'),
      Buffer.from(peer.presharedKey ?? new Uint8Array()).toString('base64'),
      peer.allowedIps,
      rulesKey(peer.policy ?? []),
    ]),
    plan.dnat,
  ]);
}

function zeroes<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((key) => [key, 0])) as Record<K, number>;
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
