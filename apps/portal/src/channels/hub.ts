/**
 * The portal's WebSocket endpoints, `/client/websocket` and `/gateway/websocket`, on `ws` in
 * noServer mode: `handleUpgrade` is for the HTTP server's 'upgrade' event.
 *
 * - The token comes in `X-Authorization: Bearer <token>` (client tokens on the client endpoint,
 *   gateway tokens on the gateway endpoint); missing, bad, expired or revoked → HTTP 401 with a
 *   problem-details body whose code is `invalid_token`, and nothing else happens.
 * - Phoenix framing (the protocol package's): `phx_join` on topic "client" / "gateway" is
 *   answered with `phx_reply` (ok, or error with a reason) on the next event-loop turn — joins
 *   read in one turn share one database transaction — then `init` is pushed; `heartbeat` on
 *   "phoenix" is answered; `phx_leave` answered and followed by `phx_close`.
 * - request_authorization: policy check, an online gateway of the resource's site (one the
 *   client is already connected to first, else the least loaded), `authorize_flow` to it; the
 *   client's `authorization_created` follows the gateway's `flow_authorized` (or
 *   `authorization_creation_failed` forbidden | not_found | offline). Asked again for a resource
 *   it holds a flow to (another name of a DNS resource, or the same), the same gateway gets
 *   authorize_flow again with the same keys and that request's domain.
 * - Flows the gateway confirmed are kept in the database (migration 0003-flows): a gateway that
 *   joins again — after it went away for less than `flowHoldMs`, or after this portal restarted
 *   — gets those still allowed and unexpired in its init (their flow_authorized expected, not
 *   acted on), and the client device joining again is matched to them.
 * - Limits: frames above `maxPayload` close the connection (1009, counted); messages above
 *   `maxMessageBytes`, binary messages, non-JSON, wrong shapes, unknown topics or events and
 *   messages over the per-connection rate are logged (never their content) and dropped, the
 *   session kept, each counted by reason. A socket that does not join within `joinTimeoutMs`,
 *   or sends nothing for `idleTimeoutMs` (heartbeats are every 10 s), is closed.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { silentLogger, type Logger } from '@gatehouse/logging';
import { parseAddress, parsePrefix, prefixContains } from '@gatehouse/addresses';
import { parseDomainPattern } from '@gatehouse/dns-stub';
import { writeProblemToSocket } from '../http/problem.ts';
import {
  createMapper,
  flowKey,
  type Mapper,
  type MappedClient,
  type MappedFlow,
  type MappedGateway,
  type MapperCounters,
  type MapperOptions,
} from '../mapper/mapper.ts';
import { clientResources, gatewayResourcePayload, upstreamDnsPayload } from '../mapper/payloads.ts';
import { CLIENT_JOIN_REFUSALS } from './backend.ts';
import type {
  AccountView,
  ChannelBackend,
  ClientJoinRefusal,
  ChannelKind,
  ChannelToken,
  KeptFlow,
  KeptFlowFilter,
  ResourceView,
  TokenState,
} from './backend.ts';
import {
  CLIENT_TOPIC,
  CLIENT_WEBSOCKET_PATH,
  DISCONNECT_TOKEN_EXPIRED,
  GATEWAY_TOPIC,
  GATEWAY_WEBSOCKET_PATH,
  parseClientJoin,
  parseClientToPortal,
  parseGatewayJoin,
  parseGatewayToPortal,
  parsePhoenixFrame,
  PHOENIX_HEARTBEAT_EVENT,
  PHOENIX_HEARTBEAT_TOPIC,
  PHX_CLOSE,
  PHX_JOIN,
  PHX_LEAVE,
  type PhoenixFrame,
  type RequestAuthorization,
  type ResolvedDomain,
} from '@gatehouse/protocol';
import { encodeFrame, pushFrame, replyFrame, type OutboundFrame } from './frames.ts';

export const CLIENT_PATH = CLIENT_WEBSOCKET_PATH;
export const GATEWAY_PATH = GATEWAY_WEBSOCKET_PATH;
type InboundFrame = PhoenixFrame;
const CLIENT_TOKEN_KINDS = new Set(['browser_client', 'headless_client', 'service_account']);

export interface ChannelHubOptions {
  /** Largest WebSocket frame, bytes; larger closes the connection with 1009 (default 1 MiB). */
  maxPayload?: number;
  /** Largest message acted on, bytes; larger is dropped, the session kept (default 64 KiB). */
  maxMessageBytes?: number;
  /** Per connection: messages at once, then `ratePerSecond` (defaults 40 and 20). */
  rateBurst?: number;
  ratePerSecond?: number;
  /** Close a socket that has not joined by then, ms (default 30 s). */
  joinTimeoutMs?: number;
  /** Close a socket silent this long, ms (default 60 s: heartbeats come every 10 s). */
  idleTimeoutMs?: number;
  /** How long a gateway has to answer authorize_flow with flow_authorized, ms (default 10 s). */
  flowTimeoutMs?: number;
  /**
   * How long the flows of a gateway that went away are kept for it, ms (default 5 min): when it
   * joins again (same site, same device id) its init carries those still allowed, so a restart
   * does not cut the clients off. Kept in the database: after a portal restart the hold of every
   * gateway with flows starts again from the restart.
   */
  flowHoldMs?: number;
  mapper?: MapperOptions;
}

export const DROP_REASONS = [
  'binary',
  'too_large',
  'rate_limited',
  'malformed',
  'bad_payload',
  'unknown_topic',
  'unknown_event',
  'not_joined',
  'already_joined',
  'too_many_joins',
  'not_yet',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export const UPGRADE_REFUSALS = [
  'not_found',
  'invalid_token',
  'wrong_token_kind',
  'shutting_down',
] as const;
export type UpgradeRefusal = (typeof UPGRADE_REFUSALS)[number];

export const AUTHORIZATION_FAILURES = ['forbidden', 'not_found', 'offline'] as const;
export type AuthorizationFailure = (typeof AUTHORIZATION_FAILURES)[number];

/**
 * Why kept flows were deleted without a reject_access: expired (by time, or their token by
 * time), not_allowed (found so at the gateway's join: policy, resource, site, token or the
 * device's key changed), hold_ended (their gateway did not come back within flowHoldMs).
 */
export const FLOW_DROP_REASONS = ['expired', 'not_allowed', 'hold_ended'] as const;
export type FlowDropReason = (typeof FLOW_DROP_REASONS)[number];

export interface ChannelCounters {
  upgrades: number;
  refusedUpgrades: Record<UpgradeRefusal, number>;
  clientJoins: number;
  gatewayJoins: number;
  joinErrors: number;
  heartbeats: number;
  dropped: Record<DropReason, number>;
  oversizedFrames: number;
  /** authorize_flow without flow_authorized in time (the client was told offline). */
  flowTimeouts: number;
  /** Authorizations handed back to a gateway in its init after it came back. */
  flowsRestored: number;
  /** Kept flows deleted without a reject_access, by reason. */
  flowsDropped: Record<FlowDropReason, number>;
  /** Keeping, reading or deleting flows in the database failed (logged). */
  flowStoreErrors: number;
  /** Sessions cut off because they left more than 8 MiB unread. */
  slowConsumers: number;
  /** Join batches run (one transaction each) and the largest. */
  joinBatches: number;
  largestJoinBatch: number;
  timeouts: number;
  authorizations: number;
  authorizationFailures: Record<AuthorizationFailure, number>;
  /** phx_join refused because the socket's token was revoked or expired since the upgrade. */
  tokenRefusedJoins: number;
  /** Client joins refused for the device: token bound elsewhere, too many, key in use. */
  clientJoinRefusals: Record<ClientJoinRefusal, number>;
  /** request_authorization for a DNS resource whose name or proxy addresses were refused. */
  invalidDomainRequests: number;
  /** reject_access sent by the hub (a flow_authorized that never came, a client cut off). */
  rejectAccessSent: number;
  /** Dropped messages not logged (one line per reason per connection per interval). */
  dropLogsSuppressed: number;
  /** config_changed pushed to clients. */
  configChangesSent: number;
  mapper: MapperCounters;
}

export interface ChannelHub {
  /** For the HTTP server's 'upgrade' event. Refuses (401, 404) or hands the socket to ws. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  mapper: Mapper;
  counters(): ChannelCounters;
  /** Live sockets by channel (joined or not). */
  sessionCount(): { clients: number; gateways: number };
  /** phx_close on every joined channel, then close code 1001; resolves when all are closed. */
  close(): Promise<void>;
}

function zeroes<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}

/** The token of `X-Authorization: Bearer <token>`, undefined when missing or not that form. */
export function bearerToken(req: IncomingMessage): string | undefined {
  const header = req.headers['x-authorization'];
  if (typeof header !== 'string') return undefined;
  const match = /^Bearer ([\x21-\x7e]{1,1024})$/.exec(header.trim());
  return match?.[1];
}

interface HubState {
  backend: ChannelBackend;
  logger: Logger;
  now: () => number;
  counters: Omit<ChannelCounters, 'mapper'>;
  maxMessageBytes: number;
  rateBurst: number;
  ratePerSecond: number;
  joinTimeoutMs: number;
  idleTimeoutMs: number;
  flowTimeoutMs: number;
  flowHoldMs: number;
  /** gatewayId → until when the kept flows of a gateway not joined now wait for it. */
  heldGateways: Map<string, number>;
  /** gatewayId → its joined session (the latest, when one replaced another). */
  gatewaysById: Map<string, GatewaySession>;
  /** close() was called: sessions leaving keep their flows for the next start. */
  stopping: boolean;
  joinQueue: QueuedJoin[];
  mapper: Mapper;
  /** Joined sessions by account. */
  clients: Map<string, Set<ClientSession>>;
  gateways: Map<string, Set<GatewaySession>>;
  sockets: Set<Session>;
  /** Every live socket (joined or not) by account. */
  byAccount: Map<string, Set<Session>>;
}

/**
 * What a log line may say about a frame that did not parse: a category, never the parser's own
 * text (JSON.parse's messages quote the input, which may hold anything, a token included).
 */
function frameProblem(problem: string): string {
  if (problem.includes('not JSON')) return 'not JSON';
  if (/ characters; at most /.test(problem)) return 'too long';
  if (problem.includes('not a JSON object')) return 'not a JSON object';
  return 'not a Phoenix frame {topic, event, payload, ref}';
}

/** An event name for a log line: as sent when it looks like one, else a placeholder. */
function eventName(event: string): string {
  return /^[a-z_]{1,64}$/.test(event) ? event : '(an event name that is not [a-z_]{1,64})';
}

/** Bytes queued for a peer beyond which it is cut off. */
const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;

/** Messages kept while a join is being answered. */
const MAX_EARLY_FRAMES = 16;

/** phx_join attempts one socket may make; more closes it. */
export const MAX_JOINS_PER_SOCKET = 8;

/** A dropped message is logged once per reason per connection per this interval, ms. */
export const DROP_LOG_INTERVAL_MS = 60_000;

interface QueuedJoin {
  session: Session;
  payload: unknown;
  ref: string | null;
}

/**
 * Joins are answered in batches: every phx_join read in one turn of the event loop is handled
 * in one database transaction on the next (setImmediate), so a burst of joins costs one commit
 * rather than one each. At low load a batch is one join and costs nothing extra.
 */
function enqueueJoin(hub: HubState, join: QueuedJoin): void {
  hub.joinQueue.push(join);
  if (hub.joinQueue.length === 1) setImmediate(() => flushJoins(hub));
}

function flushJoins(hub: HubState): void {
  const batch = hub.joinQueue;
  hub.joinQueue = [];
  if (batch.length === 0) return;
  hub.counters.joinBatches += 1;
  hub.counters.largestJoinBatch = Math.max(hub.counters.largestJoinBatch, batch.length);
  let results: JoinResult[];
  try {
    results = hub.backend.transaction(() =>
      batch.map((item): JoinResult => {
        if (item.session.closed) return { ok: false, reason: 'closed' };
        try {
          return item.session.runJoin(item.payload);
        } catch (error) {
          hub.logger.error(`${item.session.label}: join failed: ${(error as Error).message}`);
          return { ok: false, reason: 'internal_error' };
        }
      }),
    );
  } catch (error) {
    hub.logger.error(
      `channels: a batch of ${batch.length} joins failed: ${(error as Error).message}`,
    );
    results = batch.map(() => ({ ok: false, reason: 'internal_error' }));
  }
  batch.forEach((item, i) => {
    item.session.finishJoin(results[i] as JoinResult, item.ref);
  });
}

type JoinResult =
  | { ok: true; init: unknown }
  | { ok: false; reason: string; counter?: 'tokenRefusedJoins'; disconnect?: boolean };

abstract class Session {
  readonly hub: HubState;
  readonly ws: WebSocket;
  readonly token: ChannelToken;
  readonly topic: string;
  readonly label: string;
  joined = false;
  /** phx_join is queued for the next batch. */
  joining = false;
  private early: InboundFrame[] = [];
  joinRef: string | null = null;
  closed = false;
  lastMessageAt: number;
  private tokens: number;
  private refilledAt: number;
  private joinTimer: NodeJS.Timeout | undefined;
  private joinAttempts = 0;
  /** reason → when a drop of it was last logged (performance.now()) and how many since. */
  private dropLog = new Map<DropReason, { at: number; since: number }>();

  constructor(hub: HubState, ws: WebSocket, token: ChannelToken, topic: string, label: string) {
    this.hub = hub;
    this.ws = ws;
    this.token = token;
    this.topic = topic;
    this.label = label;
    this.lastMessageAt = hub.now();
    this.tokens = hub.rateBurst;
    this.refilledAt = performance.now();
    this.joinTimer = setTimeout(() => {
      if (!this.joined && !this.closed) {
        hub.counters.timeouts += 1;
        hub.logger.info(`${this.label}: did not join in time, closing`);
        this.ws.close(1008, 'join timeout');
      }
    }, hub.joinTimeoutMs);
    this.joinTimer.unref();
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('close', () => this.onClose());
    ws.on('error', (error: Error & { code?: string }) => {
      if (error.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') hub.counters.oversizedFrames += 1;
      hub.logger.info(`${this.label}: websocket error (${error.code ?? error.message})`);
    });
  }

  get accountId(): string {
    return this.token.accountId;
  }
  get tokenId(): string {
    return this.token.id;
  }
  get tokenExpiresAt(): number {
    return this.token.expiresAt;
  }
  /** The token's expiry for the wire: epoch ms, null for never. */
  get expiresAtOnWire(): number | null {
    return this.token.expiresAt >= Number.MAX_SAFE_INTEGER ? null : this.token.expiresAt;
  }

  send(frame: OutboundFrame): void {
    if (this.closed || this.ws.readyState !== WebSocket.OPEN) return;
    if (this.ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      // A peer that does not read: its queue would grow without bound.
      this.hub.counters.slowConsumers += 1;
      this.hub.logger.info(`${this.label}: ${this.ws.bufferedAmount} bytes unread, closing`);
      this.ws.terminate();
      return;
    }
    this.ws.send(encodeFrame(frame));
  }

  push(event: string, payload: unknown): void {
    this.send(pushFrame(this.topic, event, payload));
  }

  disconnect(reason: string): void {
    if (this.closed) return;
    this.hub.logger.info(`${this.label}: disconnecting (${reason})`);
    this.push('disconnect', { reason });
    this.leave();
    this.ws.close(1000, reason);
    this.onClose();
  }

  /** Sends phx_close for a joined channel and forgets the join. */
  leave(): void {
    if (!this.joined) return;
    this.send({
      topic: this.topic,
      event: PHX_CLOSE,
      payload: {},
      ref: null,
      join_ref: this.joinRef,
    });
    this.joined = false;
    this.left();
  }

  protected drop(reason: DropReason, detail: string, frame?: InboundFrame): void {
    this.hub.counters.dropped[reason] += 1;
    const t = performance.now();
    const last = this.dropLog.get(reason);
    if (last === undefined || t - last.at >= DROP_LOG_INTERVAL_MS) {
      const since =
        last !== undefined && last.since > 0 ? ` (and ${last.since} more since the last line)` : '';
      this.hub.logger.info(`${this.label}: dropped a message (${reason}: ${detail})${since}`);
      this.dropLog.set(reason, { at: t, since: 0 });
    } else {
      last.since += 1;
      this.hub.counters.dropLogsSuppressed += 1;
    }
    if (frame !== undefined && frame.ref !== null) {
      this.send(replyFrame(frame.topic, frame.ref, 'error', { reason }, frame.join_ref));
    }
  }

  private allow(): boolean {
    const t = performance.now();
    this.tokens = Math.min(
      this.hub.rateBurst,
      this.tokens + ((t - this.refilledAt) / 1000) * this.hub.ratePerSecond,
    );
    this.refilledAt = t;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    if (this.closed) return;
    this.lastMessageAt = this.hub.now();
    if (!this.allow()) return this.drop('rate_limited', 'over the per-connection rate');
    if (isBinary) return this.drop('binary', 'a binary message');
    const buffer = Array.isArray(data)
      ? Buffer.concat(data)
      : Buffer.isBuffer(data)
        ? data
        : Buffer.from(data);
    if (buffer.length > this.hub.maxMessageBytes) {
      return this.drop('too_large', `${buffer.length} bytes`);
    }
    const parsed = parsePhoenixFrame(buffer.toString('utf8'));
    // Logged as a category only: the parser's text may quote the input.
    if (!parsed.ok) return this.drop('malformed', frameProblem(parsed.problem));
    const frame = parsed.frame;
    try {
      this.onFrame(frame);
    } catch (error) {
      this.hub.logger.error(
        `${this.label}: handling ${eventName(frame.event)} failed: ${(error as Error).message}`,
      );
      if (frame.ref !== null) {
        this.send(replyFrame(frame.topic, frame.ref, 'error', { reason: 'internal_error' }));
      }
    }
  }

  private onFrame(frame: InboundFrame): void {
    if (frame.topic === PHOENIX_HEARTBEAT_TOPIC) {
      if (frame.event !== PHOENIX_HEARTBEAT_EVENT) {
        return this.drop('unknown_event', 'not a heartbeat on topic phoenix', frame);
      }
      this.hub.counters.heartbeats += 1;
      this.send(replyFrame(PHOENIX_HEARTBEAT_TOPIC, frame.ref, 'ok', {}));
      return;
    }
    if (frame.topic !== this.topic) {
      return this.drop('unknown_topic', 'a topic not served here', frame);
    }
    if (this.joining) {
      // Sent right after phx_join, before it is answered: handled once it is.
      if (this.early.length >= MAX_EARLY_FRAMES) {
        return this.drop('rate_limited', 'too many messages before the join was answered', frame);
      }
      this.early.push(frame);
      return;
    }
    if (frame.event === PHX_JOIN) {
      if (this.joined) return this.drop('already_joined', 'a second phx_join', frame);
      this.joinAttempts += 1;
      if (this.joinAttempts > MAX_JOINS_PER_SOCKET) {
        this.drop('too_many_joins', `more than ${MAX_JOINS_PER_SOCKET} phx_join`, frame);
        this.ws.close(1008, 'too many joins');
        return;
      }
      this.joinRef = frame.join_ref ?? frame.ref;
      this.joining = true;
      enqueueJoin(this.hub, { session: this, payload: frame.payload, ref: frame.ref });
      return;
    }
    if (!this.joined) return this.drop('not_joined', 'a message before phx_join', frame);
    if (frame.event === PHX_LEAVE) {
      this.send(replyFrame(this.topic, frame.ref, 'ok', {}, this.joinRef));
      this.leave();
      return;
    }
    this.onEvent(frame);
  }

  /** The join's database work, run inside the batch's transaction. */
  runJoin(payload: unknown): JoinResult {
    // The token was checked at the upgrade; it may have been revoked or expired since.
    const t = this.hub.now();
    if (this.tokenExpiresAt <= t || this.hub.backend.tokenState(this.tokenId, t) !== 'valid') {
      return {
        ok: false,
        reason: DISCONNECT_TOKEN_EXPIRED,
        counter: 'tokenRefusedJoins',
        disconnect: true,
      };
    }
    return this.join(payload);
  }

  /** After the batch committed (or failed): the reply, init, and what was sent meanwhile. */
  finishJoin(result: JoinResult, ref: string | null): void {
    this.joining = false;
    const early = this.early;
    this.early = [];
    if (this.closed) return;
    if (!result.ok) {
      this.hub.counters.joinErrors += 1;
      this.hub.logger.info(`${this.label}: join refused (${result.reason})`);
      this.send(replyFrame(this.topic, ref, 'error', { reason: result.reason }, this.joinRef));
      if (result.counter !== undefined) this.hub.counters[result.counter] += 1;
      if (result.disconnect === true) {
        this.disconnect(result.reason);
        return;
      }
    } else {
      this.joined = true;
      if (this.joinTimer !== undefined) clearTimeout(this.joinTimer);
      this.send(replyFrame(this.topic, ref, 'ok', {}, this.joinRef));
      this.push('init', result.init);
      this.afterJoin();
    }
    for (const frame of early) {
      if (this.closed) return;
      try {
        this.onFrame(frame);
      } catch (error) {
        this.hub.logger.error(
          `${this.label}: handling ${eventName(frame.event)} failed: ${(error as Error).message}`,
        );
      }
    }
  }

  private onClose(): void {
    if (this.joinTimer !== undefined) clearTimeout(this.joinTimer);
    this.closed = true;
    if (!this.hub.sockets.delete(this)) return;
    removeFrom(this.hub.byAccount, this.accountId, this);
    if (this.joined) {
      this.joined = false;
      this.left();
    }
  }

  protected abstract join(payload: unknown): JoinResult;
  protected abstract afterJoin(): void;
  protected abstract onEvent(frame: InboundFrame): void;
  /** The channel was left (phx_leave, close, disconnect). */
  protected abstract left(): void;
}

function addTo<T>(map: Map<string, Set<T>>, key: string, value: T): void {
  let set = map.get(key);
  if (set === undefined) map.set(key, (set = new Set()));
  set.add(value);
}

function removeFrom<T>(map: Map<string, Set<T>>, key: string, value: T): void {
  const set = map.get(key);
  if (set === undefined) return;
  set.delete(value);
  if (set.size === 0) map.delete(key);
}

/** Events the protocol knows that this portal does not act on yet (the relay work's ICE). */
const NOT_YET = new Set(['broadcast_ice_candidates', 'broadcast_invalidated_ice_candidates']);

function addressRanges(ranges: {
  tunnelIpv4: string;
  tunnelIpv6: string;
  proxyIpv4: string;
  proxyIpv6: string;
}): Record<string, string> {
  return {
    tunnel_ipv4: ranges.tunnelIpv4,
    tunnel_ipv6: ranges.tunnelIpv6,
    proxy_ipv4: ranges.proxyIpv4,
    proxy_ipv6: ranges.proxyIpv6,
  };
}

class ClientSession extends Session implements MappedClient {
  deviceId = '';
  ipv4 = '';
  ipv6 = '';
  publicKey = '';
  sentResources = new Map<string, string>();
  /** resourceId → the flow on a gateway. */
  flows = new Map<string, { gateway: GatewaySession; flow: MappedFlow }>();

  get actorId(): string {
    return this.token.actorId ?? '';
  }

  /** What init's interface and address_ranges said last (JSON text), for config_changed. */
  private sentConfig = '';

  forgetFlow(resourceId: string, gateway: MappedGateway): void {
    if (this.flows.get(resourceId)?.gateway === gateway) this.flows.delete(resourceId);
  }

  private configPayload(view: AccountView): { interface: unknown; address_ranges: unknown } {
    return {
      interface: {
        ipv4: this.ipv4,
        ipv6: this.ipv6,
        upstream_dns: upstreamDnsPayload(view.upstreamDns),
        search_domain: view.searchDomain,
      },
      address_ranges: addressRanges(view.ranges),
    };
  }

  configChanged(view: AccountView): void {
    const before = this.sentConfig;
    let config = this.configPayload(view);
    if (JSON.stringify(config) === before) return;
    // Ranges changed: the device may have been renumbered into the new tunnel range.
    const addresses = this.hub.backend.deviceAddresses(this.deviceId);
    if (addresses !== undefined) {
      this.ipv4 = addresses.ipv4;
      this.ipv6 = addresses.ipv6;
      config = this.configPayload(view);
    }
    const text = JSON.stringify(config);
    if (text === before) return;
    this.sentConfig = text;
    this.hub.counters.configChangesSent += 1;
    this.push('config_changed', config);
  }

  /** Cut off (token gone, actor disabled): each gateway drops this client's flows. */
  override disconnect(reason: string): void {
    if (this.closed) return;
    const flows = [...this.flows.values()];
    super.disconnect(reason);
    for (const { gateway, flow } of flows) {
      if (gateway.rejectFlow(flow)) this.hub.counters.rejectAccessSent += 1;
    }
    this.flows.clear();
  }

  protected join(payload: unknown): JoinResult {
    const parsed = parseClientJoin(payload);
    if (!parsed.ok) {
      this.hub.counters.dropped.bad_payload += 1;
      this.hub.logger.info(`${this.label}: a phx_join payload that does not parse`);
      return { ok: false, reason: 'invalid_payload' };
    }
    const view = this.hub.mapper.view(this.accountId);
    if (view === undefined) return { ok: false, reason: 'account_not_found' };
    const device = this.hub.backend.registerClient({
      accountId: this.accountId,
      actorId: this.actorId,
      tokenId: this.tokenId,
      publicKey: parsed.payload.public_key,
      externalId: parsed.payload.device_id,
      name: parsed.payload.name,
      now: this.hub.now(),
    });
    if (!device.ok) {
      this.hub.counters.clientJoinRefusals[device.reason] += 1;
      return { ok: false, reason: device.reason };
    }
    this.deviceId = device.deviceId;
    this.ipv4 = device.ipv4;
    this.ipv6 = device.ipv6;
    this.publicKey = parsed.payload.public_key;
    const resources = clientResources(view, this.actorId, onlineSites(this.hub, this.accountId));
    this.sentResources = new Map([...resources].map(([id, p]) => [id, JSON.stringify(p)]));
    this.hub.counters.clientJoins += 1;
    const config = this.configPayload(view);
    this.sentConfig = JSON.stringify(config);
    const init: Record<string, unknown> = {
      ...config,
      resources: [...resources.values()],
      relays: [],
    };
    const actorName = view.actorName(this.actorId);
    if (actorName !== undefined) init.identity = { account_slug: view.slug, actor_name: actorName };
    return { ok: true, init };
  }

  protected afterJoin(): void {
    addTo(this.hub.clients, this.accountId, this);
    // The same device back: the flows its gateways still hold for it are this session's now —
    // unless its key changed: the gateways' peers have the old one, so those are rejected.
    const stale: [GatewaySession, GatewayFlow][] = [];
    for (const gateway of this.hub.gateways.get(this.accountId) ?? []) {
      for (const flow of gateway.flows.values()) {
        if (flow.clientId !== this.deviceId || flow.client === this || flow.client.joined) continue;
        if (flow.publicKey !== this.publicKey) {
          stale.push([gateway, flow]);
          continue;
        }
        flow.client = this;
        this.flows.set(flow.resourceId, { gateway, flow });
      }
    }
    for (const [gateway, flow] of stale) {
      if (gateway.rejectFlow(flow)) this.hub.counters.rejectAccessSent += 1;
    }
  }

  protected onEvent(frame: InboundFrame): void {
    const parsed = parseClientToPortal(frame.event, frame.payload);
    if (!parsed.ok) {
      const reason = parsed.kind === 'unknown_event' ? 'unknown_event' : 'bad_payload';
      return this.drop(reason, `${eventName(frame.event)}: ${reason.replace('_', ' ')}`, frame);
    }
    const message = parsed.message;
    if (message.event === 'request_authorization') return this.authorize(message.payload);
    if (NOT_YET.has(message.event)) {
      this.hub.counters.dropped.not_yet += 1;
      this.hub.logger.debug(`${this.label}: ${message.event} ignored (no relays yet)`);
    }
  }

  fail(resourceId: string, reason: AuthorizationFailure): void {
    this.hub.counters.authorizationFailures[reason] += 1;
    this.hub.logger.info(`${this.label}: authorization for ${resourceId} refused (${reason})`);
    this.push('authorization_creation_failed', { resource_id: resourceId, reason });
  }

  private authorize(request: RequestAuthorization): void {
    const resourceId = request.resource_id;
    const view = this.hub.mapper.view(this.accountId);
    const resource = view?.resources.get(resourceId);
    if (view === undefined || resource === undefined) return this.fail(resourceId, 'not_found');
    if (!view.allowedResourceIds(this.actorId).has(resourceId)) {
      return this.fail(resourceId, 'forbidden');
    }
    if (resource.type === 'dns') {
      const problem = domainProblem(view, resource, request);
      if (problem !== undefined) {
        this.hub.counters.invalidDomainRequests += 1;
        this.hub.logger.info(`${this.label}: request_authorization refused: ${problem}`);
        return this.fail(resourceId, 'forbidden');
      }
    }
    // The gateway that holds this client's flow to the resource already (another name of a DNS
    // resource, asked again after a reconnect) keeps it.
    const holder = this.flows.get(resourceId)?.gateway;
    if (
      holder !== undefined &&
      holder.joined &&
      !holder.closed &&
      holder.siteId === resource.siteId
    )
      return holder.authorizeFlow(this, resource, request);
    const candidates = [...(this.hub.gateways.get(this.accountId) ?? [])].filter(
      (g) => g.joined && g.siteId === resource.siteId,
    );
    if (candidates.length === 0) return this.fail(resourceId, 'offline');
    // A gateway the client already has a tunnel to, else the least loaded of the site.
    const connected = new Set(request.connected_gateway_ids);
    const preferred = candidates.filter((g) => connected.has(g.gatewayId));
    const pool = preferred.length > 0 ? preferred : candidates;
    const gateway = pool.reduce((a, b) => (b.flows.size < a.flows.size ? b : a));
    gateway.authorizeFlow(this, resource, request);
  }

  /** The gateway holds the flow: tell the client how to reach it. */
  authorizationCreated(
    gateway: GatewaySession,
    resource: ResourceView,
    presharedKey: string,
  ): void {
    this.hub.counters.authorizations += 1;
    this.push('authorization_created', {
      resource_id: resource.id,
      gateway_id: gateway.gatewayId,
      site_id: resource.siteId,
      gateway_public_key: gateway.publicKey,
      gateway_endpoints: gateway.endpoints,
      gateway_ipv4: gateway.ipv4,
      gateway_ipv6: gateway.ipv6,
      preshared_key: presharedKey,
      expires_at: this.expiresAtOnWire,
    });
  }

  protected left(): void {
    removeFrom(this.hub.clients, this.accountId, this);
    // The flows stay on their gateways, keyed by the device: the mapper still rejects them when
    // the policy, the resource or the token goes, and the device joining again takes them back.
  }
}

/** Why a DNS resource's request_authorization is refused, or undefined when it is fine. */
function domainProblem(
  view: AccountView,
  resource: ResourceView,
  request: RequestAuthorization,
): string | undefined {
  const domain = request.domain;
  if (domain === undefined) return 'a DNS resource without a domain';
  let matches: boolean;
  try {
    matches = parseDomainPattern(resource.address ?? '').matches(domain.name);
  } catch {
    return "the resource's pattern does not parse";
  }
  if (!matches) return "a name outside the resource's pattern";
  const v4 = parsePrefix(view.ranges.proxyIpv4);
  const v6 = parsePrefix(view.ranges.proxyIpv6);
  for (const ip of domain.proxy_ips) {
    let address;
    try {
      address = parseAddress(ip);
    } catch {
      return 'a proxy address that is not an IP address';
    }
    const range = address.family === 4 ? v4 : v6;
    if (range.family !== address.family || !prefixContains(range, address.address)) {
      return "a proxy address outside the account's proxy ranges";
    }
  }
  return undefined;
}

/** A flow as its gateway holds it: the keys authorize_flow carried, and whether it confirmed them. */
interface GatewayFlow extends MappedFlow {
  /** A client session (joined or closed), or an AbsentClient for a flow kept from before. */
  client: MappedClient;
  /** The client's key and tunnel addresses as authorized. */
  publicKey: string;
  ipv4: string;
  ipv6: string;
  /** The client-gateway pair's preshared key (a session secret, never logged). */
  presharedKey: string;
  /** Epoch ms; null for never. */
  expiresAt: number | null;
  /** A DNS resource's names the gateway confirmed, by domainKey. */
  domains: Map<string, ResolvedDomain>;
  authorized: boolean;
}

interface PendingFlow {
  client: ClientSession;
  flow: GatewayFlow;
  resource: ResourceView;
  /** The name this authorize_flow carried (DNS resources). */
  domain: ResolvedDomain | undefined;
  key: string;
  timer: NodeJS.Timeout;
}

/** A flow's domain as one key: the name in lower case, without a trailing dot. */
function domainKey(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function authorizeFlowPayload(
  ref: string,
  flow: GatewayFlow,
  resource: Record<string, unknown>,
  domain: ResolvedDomain | undefined,
): Record<string, unknown> {
  const payload: Record<string, unknown> = {
    ref,
    client: {
      id: flow.clientId,
      public_key: flow.publicKey,
      preshared_key: flow.presharedKey,
      ipv4: flow.ipv4,
      ipv6: flow.ipv6,
    },
    resource,
    expires_at: flow.expiresAt,
  };
  if (domain !== undefined) payload.domain = { name: domain.name, proxy_ips: domain.proxy_ips };
  return payload;
}

/**
 * The client of a flow kept from before this portal started (or before its gateway came back)
 * whose device has not joined since: what the mapper needs to check the flow, nothing to tell.
 */
class AbsentClient implements MappedClient {
  readonly accountId: string;
  readonly actorId: string;
  readonly deviceId: string;
  readonly tokenId: string;
  readonly tokenExpiresAt: number;
  readonly joined = false;
  sentResources = new Map<string, string>();

  constructor(flow: KeptFlow, accountId: string) {
    this.accountId = accountId;
    this.actorId = flow.device.actorId;
    this.deviceId = flow.deviceId;
    this.tokenId = flow.tokenId;
    this.tokenExpiresAt = flow.expiresAt ?? Number.MAX_SAFE_INTEGER;
  }

  push(): void {}
  disconnect(): void {}
  forgetFlow(): void {}
}

class GatewaySession extends Session implements MappedGateway {
  gatewayId = '';
  publicKey = '';
  endpoints: string[] = [];
  ipv4 = '';
  ipv6 = '';
  flows = new Map<string, GatewayFlow>();
  /** authorize_flow refs awaiting flow_authorized. */
  pending = new Map<string, PendingFlow>();
  /** Refs of the flows handed back in init (their flow_authorized is expected, not acted on). */
  restoredRefs = new Set<string>();
  /** Client public key → the preshared key this gateway was given for that peer. */
  private presharedKeys = new Map<string, string>();
  private nextRef = 0;

  get siteId(): string {
    return this.token.siteId ?? '';
  }

  /**
   * Drops `flow` if it is still this gateway's: tells the gateway (reject_access) and deletes it
   * from the database. False when it was not this gateway's (nothing done).
   */
  rejectFlow(flow: MappedFlow): boolean {
    const key = flowKey(flow.clientId, flow.resourceId);
    if (this.flows.get(key) !== flow) return false;
    this.flows.delete(key);
    flow.client.forgetFlow(flow.resourceId, this);
    this.forgetKept({
      deviceId: flow.clientId,
      resourceId: flow.resourceId,
      gatewayId: this.gatewayId,
    });
    this.push('reject_access', { client_id: flow.clientId, resource_id: flow.resourceId });
    return true;
  }

  private forgetKept(filter: KeptFlowFilter): number {
    try {
      return this.hub.backend.forgetFlows(filter);
    } catch (error) {
      this.hub.counters.flowStoreErrors += 1;
      this.hub.logger.error(`${this.label}: deleting a flow failed: ${(error as Error).message}`);
      return 0;
    }
  }

  private keep(flow: GatewayFlow, domain: ResolvedDomain | undefined): void {
    try {
      this.hub.backend.keepFlow(
        {
          gatewayId: this.gatewayId,
          deviceId: flow.clientId,
          resourceId: flow.resourceId,
          tokenId: flow.client.tokenId,
          clientPublicKey: flow.publicKey,
          presharedKey: flow.presharedKey,
          domain: domain === undefined ? null : { name: domain.name, proxy_ips: domain.proxy_ips },
          expiresAt: flow.expiresAt,
        },
        this.hub.now(),
      );
    } catch (error) {
      this.hub.counters.flowStoreErrors += 1;
      this.hub.logger.error(`${this.label}: keeping a flow failed: ${(error as Error).message}`);
    }
  }

  protected join(payload: unknown): JoinResult {
    const parsed = parseGatewayJoin(payload);
    if (!parsed.ok) {
      this.hub.counters.dropped.bad_payload += 1;
      this.hub.logger.info(`${this.label}: a phx_join payload that does not parse`);
      return { ok: false, reason: 'invalid_payload' };
    }
    const view = this.hub.mapper.view(this.accountId);
    if (view === undefined || !view.sites.has(this.siteId)) {
      return { ok: false, reason: 'site_not_found' };
    }
    const externalId = parsed.payload.device_id ?? parsed.payload.public_key;
    const gateway = this.hub.backend.registerGateway({
      accountId: this.accountId,
      siteId: this.siteId,
      tokenId: this.tokenId,
      publicKey: parsed.payload.public_key,
      externalId,
      name: parsed.payload.name ?? externalId,
      endpoint: parsed.payload.endpoints[0] ?? null,
      now: this.hub.now(),
    });
    this.gatewayId = gateway.gatewayId;
    this.publicKey = parsed.payload.public_key;
    this.endpoints = [...parsed.payload.endpoints];
    this.ipv4 = gateway.ipv4;
    this.ipv6 = gateway.ipv6;
    this.hub.counters.gatewayJoins += 1;
    return {
      ok: true,
      init: {
        interface: { ipv4: gateway.ipv4, ipv6: gateway.ipv6 },
        address_ranges: addressRanges(view.ranges),
        relays: [],
        authorizations: this.restoreFlows(view),
      },
    };
  }

  /**
   * The flows kept for this gateway that are still allowed and unexpired, its own again, as
   * init's authorizations (one per name of a DNS resource); the others are deleted.
   */
  private restoreFlows(view: AccountView): Record<string, unknown>[] {
    const t = this.hub.now();
    const until = this.hub.heldGateways.get(this.gatewayId);
    this.hub.heldGateways.delete(this.gatewayId);
    if (until !== undefined && until <= t && !this.hub.gatewaysById.has(this.gatewayId)) {
      // Back after its hold ended, before a sweep deleted its flows.
      this.hub.counters.flowsDropped.hold_ended += this.forgetKept({ gatewayId: this.gatewayId });
      return [];
    }
    const kept = this.hub.backend.keptFlows(this.gatewayId);
    if (kept.length === 0) return [];
    const joined = new Map<string, ClientSession>();
    for (const c of this.hub.clients.get(this.accountId) ?? [])
      if (c.joined) joined.set(c.deviceId, c);
    const tokenStates = new Map<string, TokenState>();
    const tokenState = (tokenId: string): TokenState => {
      let state = tokenStates.get(tokenId);
      if (state === undefined) {
        state = this.hub.backend.tokenState(tokenId, t);
        tokenStates.set(tokenId, state);
      }
      return state;
    };
    const byFlow = new Map<string, KeptFlow[]>();
    for (const row of kept) {
      const key = flowKey(row.deviceId, row.resourceId);
      const rows = byFlow.get(key);
      if (rows === undefined) byFlow.set(key, [row]);
      else rows.push(row);
    }
    const wires: Record<string, unknown>[] = [];
    for (const [key, rows] of byFlow) {
      const first = rows[0] as KeptFlow;
      const resource = view.resources.get(first.resourceId);
      const owner = joined.get(first.deviceId);
      const elsewhere = owner?.flows.get(first.resourceId)?.gateway;
      const domains = new Map<string, ResolvedDomain>();
      for (const row of rows)
        if (row.domain !== null) domains.set(domainKey(row.domain.name), row.domain);
      const state = tokenState(first.tokenId);
      let drop: FlowDropReason | undefined;
      if ((first.expiresAt !== null && first.expiresAt <= t) || state === 'expired')
        drop = 'expired';
      else if (
        resource === undefined ||
        resource.siteId !== this.siteId ||
        (resource.type === 'dns') !== domains.size > 0 ||
        state !== 'valid' ||
        first.clientPublicKey !== first.device.publicKey ||
        !view.allowedResourceIds(first.device.actorId).has(first.resourceId) ||
        (elsewhere !== undefined && elsewhere !== this && elsewhere.joined)
      )
        drop = 'not_allowed';
      if (drop !== undefined || resource === undefined) {
        this.forgetKept({
          deviceId: first.deviceId,
          resourceId: first.resourceId,
          gatewayId: this.gatewayId,
        });
        this.hub.counters.flowsDropped[drop ?? 'not_allowed'] += 1;
        continue;
      }
      const resourcePayload = gatewayResourcePayload(resource);
      const flow: GatewayFlow = {
        clientId: first.deviceId,
        resourceId: first.resourceId,
        resourceText: JSON.stringify(resourcePayload),
        client: owner ?? new AbsentClient(first, this.accountId),
        publicKey: first.clientPublicKey,
        ipv4: first.device.ipv4,
        ipv6: first.device.ipv6,
        presharedKey: first.presharedKey,
        expiresAt: first.expiresAt,
        domains,
        authorized: true,
      };
      this.flows.set(key, flow);
      owner?.flows.set(first.resourceId, { gateway: this, flow });
      this.presharedKeys.set(flow.publicKey, flow.presharedKey);
      for (const domain of domains.size > 0 ? domains.values() : [undefined]) {
        this.nextRef += 1;
        const ref = String(this.nextRef);
        this.restoredRefs.add(ref);
        wires.push(authorizeFlowPayload(ref, flow, resourcePayload, domain));
      }
    }
    this.hub.counters.flowsRestored += wires.length;
    return wires;
  }

  protected afterJoin(): void {
    addTo(this.hub.gateways, this.accountId, this);
    this.hub.gatewaysById.set(this.gatewayId, this);
    // Its site may have come online: the account's clients hear of it.
    this.hub.mapper.markDirty(this.accountId);
  }

  authorizeFlow(
    client: ClientSession,
    resource: ResourceView,
    request: RequestAuthorization,
  ): void {
    const resourcePayload = gatewayResourcePayload(resource);
    const key = flowKey(client.deviceId, resource.id);
    // The client's earlier flow to this resource on another gateway is replaced.
    const earlier = client.flows.get(resource.id);
    if (
      earlier !== undefined &&
      earlier.gateway !== this &&
      earlier.gateway.rejectFlow(earlier.flow)
    )
      this.hub.counters.rejectAccessSent += 1;
    const held = this.flows.get(key);
    // A flow this gateway confirmed, asked for again (another name of a DNS resource, or the
    // same after a reconnect): sent again with the same keys, so the peer stays as it is; the
    // gateway's flow_authorized is what says it holds it (it may have lost it).
    const flow: GatewayFlow =
      held !== undefined && held.authorized && held.publicKey === client.publicKey
        ? held
        : {
            clientId: client.deviceId,
            resourceId: resource.id,
            resourceText: '',
            client,
            publicKey: client.publicKey,
            ipv4: client.ipv4,
            ipv6: client.ipv6,
            // One preshared key per client-gateway pair: the gateway has one peer per client.
            presharedKey:
              this.presharedKeys.get(client.publicKey) ?? randomBytes(32).toString('base64'),
            expiresAt: client.expiresAtOnWire,
            domains: new Map(),
            authorized: false,
          };
    flow.client = client;
    flow.ipv4 = client.ipv4;
    flow.ipv6 = client.ipv6;
    flow.expiresAt = client.expiresAtOnWire;
    flow.resourceText = JSON.stringify(resourcePayload);
    this.presharedKeys.set(flow.publicKey, flow.presharedKey);
    const domain = resource.type === 'dns' ? request.domain : undefined;
    this.nextRef += 1;
    const ref = String(this.nextRef);
    const timer = setTimeout(() => {
      const pending = this.pending.get(ref);
      if (pending === undefined) return;
      this.pending.delete(ref);
      this.hub.counters.flowTimeouts += 1;
      this.hub.logger.info(`${this.label}: flow_authorized ${ref} did not come in time`);
      // The gateway may have it half set up: it drops it too.
      if (this.rejectFlow(pending.flow)) this.hub.counters.rejectAccessSent += 1;
      client.fail(resource.id, 'offline');
    }, this.hub.flowTimeoutMs);
    timer.unref();
    this.flows.set(key, flow);
    client.flows.set(resource.id, { gateway: this, flow });
    this.pending.set(ref, { client, flow, resource, domain, key, timer });
    this.push('authorize_flow', authorizeFlowPayload(ref, flow, resourcePayload, domain));
  }

  protected onEvent(frame: InboundFrame): void {
    const parsed = parseGatewayToPortal(frame.event, frame.payload);
    if (!parsed.ok) {
      const reason = parsed.kind === 'unknown_event' ? 'unknown_event' : 'bad_payload';
      return this.drop(reason, `${eventName(frame.event)}: ${reason.replace('_', ' ')}`, frame);
    }
    const message = parsed.message;
    if (message.event === 'flow_authorized') {
      if (this.restoredRefs.delete(message.payload.ref)) {
        if (frame.ref !== null) {
          this.send(replyFrame(this.topic, frame.ref, 'ok', {}, frame.join_ref));
        }
        return;
      }
      const pending = this.pending.get(message.payload.ref);
      if (pending === undefined) {
        return this.drop('bad_payload', 'flow_authorized for no pending flow', frame);
      }
      this.pending.delete(message.payload.ref);
      clearTimeout(pending.timer);
      if (frame.ref !== null)
        this.send(replyFrame(this.topic, frame.ref, 'ok', {}, frame.join_ref));
      // Rejected or replaced meanwhile: nothing to keep or tell.
      const flow = this.flows.get(pending.key);
      if (flow !== pending.flow) return;
      flow.authorized = true;
      if (pending.domain !== undefined)
        flow.domains.set(domainKey(pending.domain.name), pending.domain);
      this.keep(flow, pending.domain);
      // The client left meanwhile: its flow stays, as after any close.
      if (!pending.client.joined) return;
      pending.client.authorizationCreated(this, pending.resource, flow.presharedKey);
      return;
    }
    if (NOT_YET.has(message.event)) {
      this.hub.counters.dropped.not_yet += 1;
      this.hub.logger.debug(`${this.label}: ${message.event} ignored (no relays yet)`);
    }
  }

  protected left(): void {
    removeFrom(this.hub.gateways, this.accountId, this);
    if (this.gatewayId !== '' && this.hub.gatewaysById.get(this.gatewayId) === this) {
      this.hub.gatewaysById.delete(this.gatewayId);
      // Its kept flows wait for it to come back — those of clients joined now: a closed
      // client's flow is not held (it asks again when it comes back). The portal stopping
      // keeps them all, for the next start.
      if (!this.hub.stopping) {
        const unheld = [...this.flows.values()].filter((f) => f.authorized && !f.client.joined);
        if (unheld.length > 0) {
          this.hub.backend.transaction(() => {
            for (const flow of unheld) {
              this.forgetKept({
                deviceId: flow.clientId,
                resourceId: flow.resourceId,
                gatewayId: this.gatewayId,
              });
            }
          });
        }
      }
      this.hub.heldGateways.set(this.gatewayId, this.hub.now() + this.hub.flowHoldMs);
    }
    for (const flow of this.flows.values()) flow.client.forgetFlow(flow.resourceId, this);
    this.flows.clear();
    this.restoredRefs.clear();
    this.presharedKeys.clear();
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      if (pending.client.joined) pending.client.fail(pending.resource.id, 'offline');
    }
    this.pending.clear();
    // Its site may have gone offline.
    this.hub.mapper.markDirty(this.accountId);
  }
}

/** Deletes the flows of gateways whose hold ended, and the expired ones. */
function sweepKeptFlows(hub: HubState, t: number): void {
  try {
    hub.backend.transaction(() => {
      for (const [gatewayId, until] of hub.heldGateways) {
        if (until > t) continue;
        hub.heldGateways.delete(gatewayId);
        if (hub.gatewaysById.has(gatewayId)) continue;
        hub.counters.flowsDropped.hold_ended += hub.backend.forgetFlows({ gatewayId });
      }
      hub.counters.flowsDropped.expired += hub.backend.forgetExpiredFlows(t);
    });
  } catch (error) {
    hub.counters.flowStoreErrors += 1;
    hub.logger.error(`channels: deleting old flows failed: ${(error as Error).message}`);
  }
}

function onlineSites(hub: HubState, accountId: string): Set<string> {
  const sites = new Set<string>();
  for (const g of hub.gateways.get(accountId) ?? []) if (g.joined) sites.add(g.siteId);
  return sites;
}

export function createChannelHub(deps: {
  backend: ChannelBackend;
  logger?: Logger;
  now?: () => number;
  options?: ChannelHubOptions;
}): ChannelHub {
  const logger = deps.logger ?? silentLogger;
  const now = deps.now ?? Date.now;
  const options = deps.options ?? {};
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: options.maxPayload ?? 1024 * 1024,
    perMessageDeflate: false,
    clientTracking: false,
  });
  let shuttingDown = false;
  const state: HubState = {
    backend: deps.backend,
    logger,
    now,
    counters: {
      upgrades: 0,
      refusedUpgrades: zeroes(UPGRADE_REFUSALS),
      clientJoins: 0,
      gatewayJoins: 0,
      joinErrors: 0,
      heartbeats: 0,
      dropped: zeroes(DROP_REASONS),
      oversizedFrames: 0,
      flowTimeouts: 0,
      flowsRestored: 0,
      flowsDropped: zeroes(FLOW_DROP_REASONS),
      flowStoreErrors: 0,
      slowConsumers: 0,
      joinBatches: 0,
      largestJoinBatch: 0,
      timeouts: 0,
      authorizations: 0,
      authorizationFailures: zeroes(AUTHORIZATION_FAILURES),
      tokenRefusedJoins: 0,
      clientJoinRefusals: zeroes(CLIENT_JOIN_REFUSALS),
      invalidDomainRequests: 0,
      rejectAccessSent: 0,
      dropLogsSuppressed: 0,
      configChangesSent: 0,
    },
    maxMessageBytes: options.maxMessageBytes ?? 64 * 1024,
    rateBurst: options.rateBurst ?? 40,
    ratePerSecond: options.ratePerSecond ?? 20,
    joinTimeoutMs: options.joinTimeoutMs ?? 30_000,
    idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
    flowTimeoutMs: options.flowTimeoutMs ?? 10_000,
    flowHoldMs: options.flowHoldMs ?? 5 * 60_000,
    heldGateways: new Map(),
    gatewaysById: new Map(),
    stopping: false,
    joinQueue: [],
    mapper: undefined as unknown as Mapper,
    clients: new Map(),
    gateways: new Map(),
    sockets: new Set(),
    byAccount: new Map(),
  };
  state.mapper = createMapper({
    backend: deps.backend,
    logger,
    now,
    options: options.mapper ?? {},
    registry: {
      accounts: () => new Set(state.byAccount.keys()),
      sessions: (accountId) => state.byAccount.get(accountId) ?? [],
      clients: (accountId) => state.clients.get(accountId) ?? [],
      gateways: (accountId) => state.gateways.get(accountId) ?? [],
      onlineSites: (accountId) => onlineSites(state, accountId),
    },
  });
  state.mapper.start();
  try {
    // Their holds start again from this start: a gateway has flowHoldMs to come back.
    for (const gatewayId of deps.backend.gatewaysWithKeptFlows()) {
      state.heldGateways.set(gatewayId, now() + state.flowHoldMs);
    }
  } catch (error) {
    state.counters.flowStoreErrors += 1;
    logger.error(`channels: reading the kept flows failed: ${(error as Error).message}`);
  }

  const idleSweep = setInterval(
    () => {
      const t = now();
      for (const s of state.sockets) {
        if (t - s.lastMessageAt > state.idleTimeoutMs) {
          state.counters.timeouts += 1;
          logger.info(`${s.label}: silent for too long, closing`);
          s.ws.terminate();
        }
      }
      sweepKeptFlows(state, t);
    },
    Math.min(10_000, state.idleTimeoutMs),
  );
  idleSweep.unref();

  let sequence = 0;
  const refuse = (
    socket: Duplex,
    reason: UpgradeRefusal,
    status: number,
    code: string,
    detail: string,
  ): void => {
    state.counters.refusedUpgrades[reason] += 1;
    writeProblemToSocket(socket, status, code, detail);
  };

  const handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy());
    let path: string;
    try {
      path = new URL(req.url ?? '/', 'http://portal.invalid').pathname;
    } catch {
      path = '';
    }
    const kind: ChannelKind | undefined =
      path === CLIENT_PATH ? 'client' : path === GATEWAY_PATH ? 'gateway' : undefined;
    if (kind === undefined) {
      return refuse(socket, 'not_found', 404, 'not_found', 'No WebSocket endpoint at this path.');
    }
    if (shuttingDown) {
      return refuse(socket, 'shutting_down', 503, 'shutting_down', 'The portal is stopping.');
    }
    const text = bearerToken(req);
    if (text === undefined) {
      logger.info(`${kind} upgrade refused: no X-Authorization bearer token`);
      return refuse(
        socket,
        'invalid_token',
        401,
        'invalid_token',
        'An X-Authorization: Bearer token is required.',
      );
    }
    let check;
    try {
      check = deps.backend.verifyToken(text, now());
    } catch (error) {
      logger.error(`${kind} upgrade: verifying the token failed: ${(error as Error).message}`);
      state.counters.refusedUpgrades.invalid_token += 1;
      writeProblemToSocket(socket, 500, 'internal_error', 'The token could not be checked.');
      return;
    }
    if (!check.ok) {
      logger.info(`${kind} upgrade refused: token ${check.reason}`);
      return refuse(
        socket,
        'invalid_token',
        401,
        'invalid_token',
        'The token is not valid (malformed, unknown, expired or revoked).',
      );
    }
    const token = check.token;
    const kindOk =
      kind === 'gateway' ? token.kind === 'gateway' : CLIENT_TOKEN_KINDS.has(token.kind);
    if (
      !kindOk ||
      (kind === 'client' && token.actorId === null) ||
      (kind === 'gateway' && token.siteId === null)
    ) {
      logger.info(`${kind} upgrade refused: a ${token.kind} token`);
      return refuse(
        socket,
        'wrong_token_kind',
        401,
        'invalid_token',
        `This endpoint takes ${kind} tokens.`,
      );
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      state.counters.upgrades += 1;
      sequence += 1;
      const label = `${kind} #${sequence} (token ${token.id.slice(0, 6)}…)`;
      const session =
        kind === 'client'
          ? new ClientSession(state, ws, token, CLIENT_TOPIC, label)
          : new GatewaySession(state, ws, token, GATEWAY_TOPIC, label);
      state.sockets.add(session);
      addTo(state.byAccount, token.accountId, session);
      if (shuttingDown) ws.close(1001, 'shutting down');
    });
  };

  return {
    handleUpgrade,
    mapper: state.mapper,
    counters: () => ({
      ...state.counters,
      refusedUpgrades: { ...state.counters.refusedUpgrades },
      dropped: { ...state.counters.dropped },
      authorizationFailures: { ...state.counters.authorizationFailures },
      clientJoinRefusals: { ...state.counters.clientJoinRefusals },
      flowsDropped: { ...state.counters.flowsDropped },
      mapper: state.mapper.counters(),
    }),
    sessionCount(): { clients: number; gateways: number } {
      let clients = 0;
      let gateways = 0;
      for (const s of state.sockets) {
        if (s instanceof ClientSession) clients += 1;
        else gateways += 1;
      }
      return { clients, gateways };
    },
    async close(): Promise<void> {
      shuttingDown = true;
      state.stopping = true;
      state.mapper.stop();
      clearInterval(idleSweep);
      const closing = [...state.sockets].map(
        (s) =>
          new Promise<void>((resolve) => {
            if (s.ws.readyState === WebSocket.CLOSED) return resolve();
            s.ws.once('close', () => resolve());
            s.leave();
            s.ws.close(1001, 'shutting down');
            setTimeout(() => {
              s.ws.terminate();
              resolve();
            }, 2000).unref();
          }),
      );
      await Promise.all(closing);
      wss.close();
    },
  };
}
