/**
 * The sans-IO core of Gatehouse's DNS stub. It takes query bytes and the
 * current time and returns what to do: send a reply back, or forward the
 * query to an upstream resolver under a fresh message id (the forward id)
 * and later map the upstream's reply back to the client. Time is an input;
 * `nextDeadline()` tells the IO shell when to call `handleTimeouts`.
 */
import { randomInt } from 'node:crypto';

import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, Question } from 'dns-packet';
import { normalizeDomainName } from '@gatehouse/protocol';

import type { DomainPattern } from './domain-pattern.ts';
import { mostSpecificMatch, parseDomainPattern } from './domain-pattern.ts';
import { formatIpAddress, parseIpAddress } from './ip-address.ts';
import { ClientRateLimit } from './client-rate-limit.ts';
import type { AddressIdleProbe, ProxyAssignment } from './proxy-addresses.ts';
import { ProxyAddressPool } from './proxy-addresses.ts';
import { addressFromReverseName } from './reverse-name.ts';

/** Firezone's proxy range for DNS resources: 2^21 addresses. */
export const DEFAULT_IPV4_PROXY_RANGE = '100.96.0.0/11';
/** Firezone's proxy range for DNS resources: 2^21 addresses. */
export const DEFAULT_IPV6_PROXY_RANGE = 'fd00:2021:1111:8000::/107';
/** Where the system sends its queries; inside the IPv4 proxy range, so never handed out as a proxy address. */
export const SENTINEL_IPV4_RANGE = '100.100.111.0/24';
export const SENTINEL_IPV6_RANGE = 'fd00:2021:1111:8000:100:100:111:0/120';
export const DEFAULT_SENTINEL_ADDRESSES = [
  '100.100.111.1',
  'fd00:2021:1111:8000:100:100:111:1',
] as const;
export const DEFAULT_ADDRESSES_PER_NAME = 4;
/** Short, so that a changed resource list or a new session is seen by applications almost at once. */
export const DEFAULT_TTL_SECONDS = 1;
export const DEFAULT_UPSTREAM_ATTEMPT_TIMEOUT_MS = 1000;
export const DEFAULT_FORWARD_TIMEOUT_MS = 4000;
/**
 * Each pending forward holds a socket of its own (a random source port), so
 * the cap stays well under the 1024 descriptors a systemd service gets by default.
 */
export const DEFAULT_MAX_PENDING_FORWARDS = 512;
/** Per client (all of 127.0.0.0/8 is one): a query that never gets an answer cannot take every forward. */
export const DEFAULT_MAX_PENDING_FORWARDS_PER_CLIENT = DEFAULT_MAX_PENDING_FORWARDS / 4;
/** A name's proxy addresses are taken back after this long without a query or a packet. */
export const DEFAULT_PROXY_ADDRESS_IDLE_MS = 10 * 60_000;
/**
 * A reclaimed proxy address is handed out again only after this long:
 * longer than a gateway keeps the mapping of an idle proxy address to its
 * name, so packets meant for the old name never reach the new one.
 */
export const DEFAULT_PROXY_ADDRESS_QUARANTINE_MS = 30 * 60_000;
/** Names with proxy addresses per DNS resource at a time; new names of a resource at the cap get SERVFAIL. */
export const DEFAULT_MAX_ASSIGNMENTS_PER_RESOURCE = 16_384;
/** Per client: queries that cost the stub state (a name's first proxy addresses, PTR of a proxy address). */
export const DEFAULT_CLIENT_QUERIES_PER_SECOND = 20;
export const DEFAULT_CLIENT_QUERY_BURST = 100;
export const MAX_RATE_LIMITED_CLIENTS = 1024;
/** Assignments reclaiming looks at per call, so that one call never holds the thread long. */
export const RECLAIM_BUDGET = 1024;

/**
 * Why the stub (or its IO shell) refused a query or dropped a message; each
 * has its own counter.
 */
export const DNS_STUB_REFUSALS = [
  /** The query came from an address that is not the host's own (a tunnel peer, a LAN neighbour). */
  'not-local',
  /** The client's budget for new proxy addresses and PTR lookups is used up: REFUSED. */
  'rate-limited',
  /** A DNS resource has the most names with proxy addresses it may have: SERVFAIL. */
  'assignment-cap',
  /** Every proxy address is in use or quarantined: SERVFAIL. */
  'range-exhausted',
  /** FORMERR, NOTIMP, or dropped (too short, a response). */
  'malformed',
  /** Too many forwards pending: SERVFAIL. */
  'forward-limit',
  /** Too many forwards pending for this client: SERVFAIL. */
  'client-forward-limit',
  /** No upstream resolver: SERVFAIL. */
  'no-upstream',
  /** No upstream answered in time: SERVFAIL. */
  'upstream-timeout',
  /** An upstream message that matches no pending forward (late, spoofed, wrong question): dropped. */
  'unexpected-reply',
  /** An upstream answer pointing into the proxy ranges, or into the tunnel from outside it: SERVFAIL. */
  'rebinding',
  /** Too many TCP clients at once: the connection is closed. */
  'tcp-client-cap',
  /** A TCP client too slow to send a whole message: the connection is closed. */
  'tcp-deadline',
  /** A TCP client that leaves its replies unread while it keeps asking: the connection is closed. */
  'tcp-unread-replies',
  /** A socket error (accept, send, EMFILE): counted and logged. */
  'socket-error',
  /** An exception while handling one message: that message is lost, the stub keeps serving. */
  'handler-error',
] as const;
export type DnsStubRefusal = (typeof DNS_STUB_REFUSALS)[number];

export interface DnsStubStats {
  /** Names with proxy addresses now. */
  assignments: number;
  /** Proxy addresses waiting before they may be handed out again (in names' worth). */
  quarantined: number;
  /** Names whose proxy addresses were taken back, since the stub started. */
  reclaimed: number;
  refused: Record<DnsStubRefusal, number>;
}
/** The canary domain (Mozilla): NXDOMAIN tells Firefox not to switch to its own DNS-over-HTTPS. */
export const APPLICATION_DNS_CANARY = 'use-application-dns.net';

export interface Upstream {
  address: string;
  port: number;
}

export interface DnsResource {
  id: string;
  /** A name or a wildcard pattern; see domain-pattern.ts for the semantics. */
  pattern: string;
}

/** The address families the tunnel interface has an address of. */
export interface ProxyAddressFamilies {
  ipv4: boolean;
  ipv6: boolean;
}

export interface DnsStubOptions {
  /**
   * Which proxy addresses resource names get (both by default): A only with
   * `ipv4`, AAAA only with `ipv6`, else NOERROR without records (NODATA).
   * A proxy address of a family the tunnel has no address of would leave
   * with a source address the peer refuses; NODATA makes applications use
   * the family that works.
   */
  proxyFamilies?: ProxyAddressFamilies;
  ipv4ProxyRange?: string;
  ipv6ProxyRange?: string;
  addressesPerName?: number;
  ttlSeconds?: number;
  upstreamAttemptTimeoutMs?: number;
  forwardTimeoutMs?: number;
  maxPendingForwards?: number;
  maxPendingForwardsPerClient?: number;
  /** Source of forward ids; random by default so that off-path replies are hard to spoof. */
  randomForwardId?: () => number;
  /**
   * How long ago a proxy address last carried a packet (the data path's
   * activity table). Without one, only queries keep a name's addresses.
   */
  addressIdleMs?: AddressIdleProbe;
  proxyAddressIdleMs?: number;
  proxyAddressQuarantineMs?: number;
  maxAssignmentsPerResource?: number;
  clientQueriesPerSecond?: number;
  clientQueryBurst?: number;
  /**
   * Whether the tunnel carries an address (some peer's AllowedIPs). An
   * upstream outside the tunnel may not answer with such addresses (DNS
   * rebinding); one inside may.
   */
  isTunnelled?: (address: string) => boolean;
}

export interface ForwardRequest {
  forwardId: number;
  upstream: Upstream;
  /** The client's query with its id replaced by `forwardId`. */
  message: Uint8Array;
}

export type QueryOutcome =
  | { kind: 'reply'; message: Uint8Array }
  | { kind: 'forward'; forward: ForwardRequest }
  | { kind: 'drop'; reason: string };

export type ForwardEvent =
  | { kind: 'forward'; forward: ForwardRequest }
  | { kind: 'reply'; forwardId: number; message: Uint8Array };

interface PendingForward {
  /** Whose budget the forward spends (see `handleQuery`). */
  client: string;
  clientId: number;
  question: Question;
  recursionDesired: boolean;
  message: Buffer;
  attempted: Upstream[];
  attemptDeadline: number;
  finalDeadline: number;
}

interface MatchableResource {
  id: string;
  pattern: DomainPattern;
}

const RCODE_NOERROR = 0;
const RCODE_FORMERR = 1;
const RCODE_SERVFAIL = 2;
const RCODE_NXDOMAIN = 3;
const RCODE_NOTIMP = 4;
const RCODE_REFUSED = 5;
const HEADER_LENGTH = 12;
const FLAG_RESPONSE = 0x8000;
const FLAG_RECURSION_DESIRED = 0x0100;
const OPCODE_MASK = 0x7800;

export class DnsStub {
  readonly #pool: ProxyAddressPool;
  readonly #families: ProxyAddressFamilies;
  readonly #ttl: number;
  readonly #attemptTimeoutMs: number;
  readonly #forwardTimeoutMs: number;
  readonly #maxPending: number;
  readonly #maxPendingPerClient: number;
  readonly #randomForwardId: () => number;
  readonly #addressIdleMs: AddressIdleProbe;
  readonly #isTunnelled: (address: string) => boolean;
  readonly #clientRate: ClientRateLimit;
  readonly #refused = Object.fromEntries(DNS_STUB_REFUSALS.map((reason) => [reason, 0])) as Record<
    DnsStubRefusal,
    number
  >;
  readonly #pending = new Map<number, PendingForward>();
  readonly #pendingPerClient = new Map<string, number>();
  #resources: MatchableResource[] = [];
  #upstreams: Upstream[] = [];

  constructor(options: DnsStubOptions = {}) {
    this.#pool = new ProxyAddressPool({
      ipv4Range: options.ipv4ProxyRange ?? DEFAULT_IPV4_PROXY_RANGE,
      ipv6Range: options.ipv6ProxyRange ?? DEFAULT_IPV6_PROXY_RANGE,
      addressesPerName: options.addressesPerName ?? DEFAULT_ADDRESSES_PER_NAME,
      reservedRanges: [SENTINEL_IPV4_RANGE, SENTINEL_IPV6_RANGE],
      maxAssignmentsPerResource:
        options.maxAssignmentsPerResource ?? DEFAULT_MAX_ASSIGNMENTS_PER_RESOURCE,
      idleMs: options.proxyAddressIdleMs ?? DEFAULT_PROXY_ADDRESS_IDLE_MS,
      quarantineMs: options.proxyAddressQuarantineMs ?? DEFAULT_PROXY_ADDRESS_QUARANTINE_MS,
    });
    this.#addressIdleMs = options.addressIdleMs ?? (() => Infinity);
    this.#isTunnelled = options.isTunnelled ?? (() => false);
    this.#clientRate = new ClientRateLimit({
      perSecond: options.clientQueriesPerSecond ?? DEFAULT_CLIENT_QUERIES_PER_SECOND,
      burst: options.clientQueryBurst ?? DEFAULT_CLIENT_QUERY_BURST,
      maxClients: MAX_RATE_LIMITED_CLIENTS,
    });
    this.#families = options.proxyFamilies ?? { ipv4: true, ipv6: true };
    this.#ttl = options.ttlSeconds ?? DEFAULT_TTL_SECONDS;
    this.#attemptTimeoutMs =
      options.upstreamAttemptTimeoutMs ?? DEFAULT_UPSTREAM_ATTEMPT_TIMEOUT_MS;
    this.#forwardTimeoutMs = options.forwardTimeoutMs ?? DEFAULT_FORWARD_TIMEOUT_MS;
    this.#maxPending = options.maxPendingForwards ?? DEFAULT_MAX_PENDING_FORWARDS;
    this.#maxPendingPerClient =
      options.maxPendingForwardsPerClient ?? DEFAULT_MAX_PENDING_FORWARDS_PER_CLIENT;
    this.#randomForwardId = options.randomForwardId ?? (() => randomInt(0, 0x10000));
  }

  /** Replaces the DNS resources; proxy addresses already handed out stay with their names. */
  setResources(resources: readonly DnsResource[]): void {
    this.#resources = resources.map((resource) => ({
      id: resource.id,
      pattern: parseDomainPattern(resource.pattern),
    }));
  }

  /** Replaces the upstream resolvers, tried in order; queries already forwarded keep theirs. */
  setUpstreams(upstreams: readonly Upstream[]): void {
    this.#upstreams = upstreams.map((upstream) => ({
      address: formatIpAddress(parseIpAddress(upstream.address)),
      port: upstream.port,
    }));
  }

  /** The name and resource a proxy address stands for, once it has been handed out. */
  lookupProxyAddress(address: string): ProxyAssignment | undefined {
    return this.#pool.lookup(formatIpAddress(parseIpAddress(address)));
  }

  /**
   * `client`: the query's source address, for the per-client rate limit and
   * cap on pending forwards (queries without one share a budget).
   */
  handleQuery(message: Uint8Array, now: number, client = ''): QueryOutcome {
    if (message.length < 2) return this.#drop('malformed', 'shorter than a message id');
    const bytes = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
    if (bytes.length < HEADER_LENGTH) return this.#headerOnly(bytes, RCODE_FORMERR);
    const flags = bytes.readUInt16BE(2);
    if ((flags & FLAG_RESPONSE) !== 0) return this.#drop('malformed', 'a response, not a query');
    if ((flags & OPCODE_MASK) !== 0) return this.#headerOnly(bytes, RCODE_NOTIMP);

    let query: DecodedPacket;
    try {
      query = dnsPacket.decode(bytes);
    } catch {
      return this.#headerOnly(bytes, RCODE_FORMERR);
    }
    const question = query.questions?.[0];
    if (question === undefined || query.questions?.length !== 1) {
      return this.#headerOnly(bytes, RCODE_FORMERR);
    }
    const id = query.id ?? 0;
    const recursionDesired = query.flag_rd;
    const name = normalizeDomainName(question.name);

    if (name === APPLICATION_DNS_CANARY) {
      return this.#reply(id, recursionDesired, question, RCODE_NXDOMAIN, []);
    }
    if (question.type === 'PTR') {
      const address = addressFromReverseName(name);
      if (address !== undefined && this.#pool.isProxyAddress(address)) {
        if (!this.#clientRate.take(client, now)) {
          this.#refused['rate-limited']++;
          return this.#reply(id, recursionDesired, question, RCODE_REFUSED, []);
        }
        const assignment = this.#pool.lookup(formatIpAddress(address));
        if (assignment === undefined)
          return this.#reply(id, recursionDesired, question, RCODE_NXDOMAIN, []);
        const answer: Answer = {
          type: 'PTR',
          name: question.name,
          ttl: this.#ttl,
          data: assignment.name,
        };
        return this.#reply(id, recursionDesired, question, RCODE_NOERROR, [answer]);
      }
    }
    const resource = mostSpecificMatch(this.#resources, name);
    if (resource !== undefined) {
      if (!this.#pool.has(name) && !this.#clientRate.take(client, now)) {
        this.#refused['rate-limited']++;
        return this.#reply(id, recursionDesired, question, RCODE_REFUSED, []);
      }
      return this.#answerResource(id, recursionDesired, question, name, resource.id, now);
    }
    return this.#forward(bytes, id, recursionDesired, question, now, client);
  }

  /**
   * The reply to send to the client for an upstream's reply to `forwardId`,
   * or undefined when it is unexpected (late, from elsewhere, not matching
   * the question), in which case the forward keeps waiting. An answer that
   * points into the proxy ranges, or from an upstream outside the tunnel
   * into the tunnel's addresses, becomes SERVFAIL (DNS rebinding).
   */
  handleUpstreamReply(
    forwardId: number,
    from: Upstream,
    message: Uint8Array,
  ): Uint8Array | undefined {
    const pending = this.#pending.get(forwardId);
    if (pending === undefined) return this.#unexpected();
    const source = formatIpAddress(parseIpAddress(from.address));
    if (
      !pending.attempted.some((upstream) =>
        sameUpstream(upstream, { address: source, port: from.port }),
      )
    ) {
      return this.#unexpected();
    }
    let reply: DecodedPacket;
    try {
      reply = dnsPacket.decode(Buffer.from(message.buffer, message.byteOffset, message.byteLength));
    } catch {
      return this.#unexpected();
    }
    const answered = reply.questions?.[0];
    if (
      reply.type !== 'response' ||
      reply.id !== forwardId ||
      answered === undefined ||
      normalizeDomainName(answered.name) !== normalizeDomainName(pending.question.name) ||
      answered.type !== pending.question.type
    ) {
      return this.#unexpected();
    }
    // Checked before the forward is settled: should the check throw, the forward still times out.
    const rebinds = this.#rebinds(reply, source);
    this.#settle(forwardId, pending);
    if (rebinds) {
      this.#refused.rebinding++;
      return encodeReply(
        pending.clientId,
        pending.recursionDesired,
        pending.question,
        RCODE_SERVFAIL,
        [],
      );
    }
    const toClient = Buffer.from(message);
    toClient.writeUInt16BE(pending.clientId, 0);
    return toClient;
  }

  /**
   * Retries on the next upstream, or SERVFAIL once every upstream or the
   * overall time is used up; takes back idle proxy addresses.
   */
  handleTimeouts(now: number): ForwardEvent[] {
    this.#pool.reclaim(now, this.#addressIdleMs, RECLAIM_BUDGET);
    const events: ForwardEvent[] = [];
    for (const [forwardId, pending] of this.#pending) {
      if (pending.attemptDeadline > now) continue;
      const next = this.#upstreams.find(
        (upstream) => !pending.attempted.some((tried) => sameUpstream(tried, upstream)),
      );
      if (next !== undefined && now < pending.finalDeadline) {
        pending.attempted.push(next);
        pending.attemptDeadline = Math.min(now + this.#attemptTimeoutMs, pending.finalDeadline);
        events.push({
          kind: 'forward',
          forward: { forwardId, upstream: next, message: pending.message },
        });
        continue;
      }
      this.#settle(forwardId, pending);
      this.#refused['upstream-timeout']++;
      const reply = encodeReply(
        pending.clientId,
        pending.recursionDesired,
        pending.question,
        RCODE_SERVFAIL,
        [],
      );
      events.push({ kind: 'reply', forwardId, message: reply });
    }
    return events;
  }

  nextDeadline(): number | undefined {
    let earliest = this.#pool.nextReclaimAt();
    for (const pending of this.#pending.values()) {
      if (earliest === undefined || pending.attemptDeadline < earliest)
        earliest = pending.attemptDeadline;
    }
    return earliest;
  }

  get pendingForwards(): number {
    return this.#pending.size;
  }

  get stats(): DnsStubStats {
    return { ...this.#pool.stats, refused: { ...this.#refused } };
  }

  /** Counts what the IO shell refused or dropped (sources, TCP limits, socket and handler errors). */
  countRefusal(reason: DnsStubRefusal): void {
    this.#refused[reason]++;
  }

  #rebinds(reply: DecodedPacket, upstream: string): boolean {
    const outsideTunnel = !this.#isTunnelled(upstream);
    return [...(reply.answers ?? []), ...(reply.additionals ?? [])].some((record) => {
      if (record.type !== 'A' && record.type !== 'AAAA') return false;
      const address = parseIpAddress(String(record.data));
      return (
        this.#pool.isProxyAddress(address) ||
        (outsideTunnel && this.#isTunnelled(formatIpAddress(address)))
      );
    });
  }

  #unexpected(): undefined {
    this.#refused['unexpected-reply']++;
    return undefined;
  }

  #drop(reason: DnsStubRefusal, detail: string): QueryOutcome {
    this.#refused[reason]++;
    return { kind: 'drop', reason: detail };
  }

  #headerOnly(query: Buffer, rcode: number): QueryOutcome {
    this.#refused.malformed++;
    return { kind: 'reply', message: headerOnlyReply(query, rcode) };
  }

  #answerResource(
    id: number,
    recursionDesired: boolean,
    question: Question,
    name: string,
    resourceId: string,
    now: number,
  ): QueryOutcome {
    const result = this.#pool.assign(name, resourceId, now, this.#ttl * 1000);
    if (result.kind !== 'assigned') {
      this.#refused[result.kind]++;
      return this.#reply(id, recursionDesired, question, RCODE_SERVFAIL, []);
    }
    const { assignment } = result;
    const ttl = this.#ttl;
    let answers: Answer[] = [];
    if (question.type === 'A' && this.#families.ipv4)
      answers = assignment.ipv4.map((data) => ({ type: 'A', name: question.name, ttl, data }));
    if (question.type === 'AAAA' && this.#families.ipv6) {
      answers = assignment.ipv6.map((data) => ({ type: 'AAAA', name: question.name, ttl, data }));
    }
    return this.#reply(id, recursionDesired, question, RCODE_NOERROR, answers);
  }

  #forward(
    bytes: Buffer,
    id: number,
    recursionDesired: boolean,
    question: Question,
    now: number,
    client: string,
  ): QueryOutcome {
    const upstream = this.#upstreams[0];
    const clientPending = this.#pendingPerClient.get(client) ?? 0;
    let refusal: DnsStubRefusal | undefined;
    if (upstream === undefined) refusal = 'no-upstream';
    else if (clientPending >= this.#maxPendingPerClient) refusal = 'client-forward-limit';
    else if (this.#pending.size >= this.#maxPending) refusal = 'forward-limit';
    if (upstream === undefined || refusal !== undefined) {
      this.#refused[refusal ?? 'no-upstream']++;
      return this.#reply(id, recursionDesired, question, RCODE_SERVFAIL, []);
    }
    let forwardId = this.#randomForwardId() & 0xffff;
    while (this.#pending.has(forwardId)) forwardId = (forwardId + 1) & 0xffff;
    const message = Buffer.from(bytes);
    message.writeUInt16BE(forwardId, 0);
    this.#pendingPerClient.set(client, clientPending + 1);
    this.#pending.set(forwardId, {
      client,
      clientId: id,
      question,
      recursionDesired,
      message,
      attempted: [upstream],
      attemptDeadline: now + Math.min(this.#attemptTimeoutMs, this.#forwardTimeoutMs),
      finalDeadline: now + this.#forwardTimeoutMs,
    });
    return { kind: 'forward', forward: { forwardId, upstream, message } };
  }

  #settle(forwardId: number, pending: PendingForward): void {
    this.#pending.delete(forwardId);
    const left = (this.#pendingPerClient.get(pending.client) ?? 1) - 1;
    if (left === 0) this.#pendingPerClient.delete(pending.client);
    else this.#pendingPerClient.set(pending.client, left);
  }

  #reply(
    id: number,
    recursionDesired: boolean,
    question: Question,
    rcode: number,
    answers: Answer[],
  ): QueryOutcome {
    return { kind: 'reply', message: encodeReply(id, recursionDesired, question, rcode, answers) };
  }
}

function sameUpstream(a: Upstream, b: Upstream): boolean {
  return a.address === b.address && a.port === b.port;
}

function encodeReply(
  id: number,
  recursionDesired: boolean,
  question: Question,
  rcode: number,
  answers: Answer[],
) {
  return dnsPacket.encode({
    type: 'response',
    id,
    flags:
      (recursionDesired ? dnsPacket.RECURSION_DESIRED : 0) | dnsPacket.RECURSION_AVAILABLE | rcode,
    questions: [question],
    answers,
  });
}

/** A reply carrying only the header, for queries too broken to echo their question. */
function headerOnlyReply(query: Buffer, rcode: number): Buffer {
  const reply = Buffer.alloc(HEADER_LENGTH);
  query.copy(reply, 0, 0, 2);
  const queryFlags = query.length >= 4 ? query.readUInt16BE(2) : 0;
  reply.writeUInt16BE(
    FLAG_RESPONSE | (queryFlags & (OPCODE_MASK | FLAG_RECURSION_DESIRED)) | rcode,
    2,
  );
  return reply;
}
