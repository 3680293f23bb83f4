/**
 * A Phoenix channel client as a sans-IO state machine, in the manner of Firezone's
 * phoenix-channel crate: it never touches a socket or a clock. Time is an argument of every
 * input, and everything it wants done comes out of pollEffect() as a value — open a
 * connection, send a text frame, close the connection, or tell the application something.
 * An IO shell (shell.ts) feeds it a WebSocket's happenings and a timer; tests feed it a fake
 * clock and frames.
 *
 * States:
 *   disconnected ─connect()→ connecting ─handleConnected()→ joining ─ok reply→ joined
 *   connecting/joining/joined ─failure→ backing-off ─deadline→ connecting
 *   any ─401 invalid_token, or disconnect{token_expired}→ signed-out (terminal, no retry)
 *   any ─close()→ closed (terminal)
 *
 * - The join (phx_join on the topic) must be answered within joinTimeoutMs (5 s), or the
 *   connection is dropped and retried.
 * - A heartbeat (topic "phoenix", event "heartbeat") goes out every heartbeatIntervalMs (10 s)
 *   from the moment the connection opens; when the next one is due while
 *   maxUnansweredHeartbeats (3) are still unanswered — it would make more than 3 — the
 *   connection is dropped and retried (Firezone's rule: 40 s after the last sign of life).
 * - Reconnects back off exponentially with jitter (random is injected); a successful join
 *   resets the backoff. A 429/503 with Retry-After waits at least that long.
 * - Replies are matched to pushes by ref. phx_close and phx_error on the topic drop the
 *   connection and rejoin after backing off.
 * - A malformed frame is counted, reported as an event and dropped; the session stays up.
 */

import {
  DISCONNECT_TOKEN_EXPIRED,
  PHOENIX_HEARTBEAT_EVENT,
  PHOENIX_HEARTBEAT_INTERVAL_MS,
  PHOENIX_HEARTBEAT_TOPIC,
  PHOENIX_JOIN_TIMEOUT_MS,
  PHOENIX_MAX_UNANSWERED_HEARTBEATS,
  PHX_CLOSE,
  PHX_ERROR,
  PHX_JOIN,
  PHX_LEAVE,
  PHX_REPLY,
  encodePhoenixFrame,
  parsePhoenixFrame,
  parsePhoenixReply,
} from '@gatehouse/protocol';

export type ChannelState =
  'disconnected' | 'connecting' | 'joining' | 'joined' | 'backing-off' | 'signed-out' | 'closed';

export interface BackoffOptions {
  /** The first retry's delay before jitter. */
  initialMs: number;
  /** The largest delay before jitter. */
  maxMs: number;
  /** Each failed attempt multiplies the delay by this. */
  multiplier: number;
  /** 0..1: a delay is drawn from [base × (1 − jitter), base]. */
  jitter: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = {
  initialMs: 1_000,
  maxMs: 30_000,
  multiplier: 2,
  jitter: 0.5,
};

/** How long a connection attempt may take before it is abandoned and retried (Firezone's 15 s). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 15_000;
/** Pushes kept while not joined (Firezone keeps 32). */
export const DEFAULT_MAX_BUFFERED_PUSHES = 32;

export interface PhoenixChannelOptions {
  /** The channel's topic, e.g. "client" or "gateway". */
  topic: string;
  /** The phx_join payload; a function is asked afresh at every join. */
  joinPayload: unknown;
  /** A number in [0, 1) for the backoff's jitter; Math.random unless given. */
  random?: () => number;
  backoff?: Partial<BackoffOptions>;
  joinTimeoutMs?: number;
  heartbeatIntervalMs?: number;
  maxUnansweredHeartbeats?: number;
  connectTimeoutMs?: number;
  maxBufferedPushes?: number;
}

/** Why a connection attempt failed, as the IO shell saw it. */
export interface ConnectFailure {
  /** The HTTP status when the server answered the upgrade with something else. */
  status?: number;
  /** The response body (a problem-details JSON for the portal's 401s), bounded by the shell. */
  body?: string;
  /** A Retry-After the server sent, in ms. */
  retryAfterMs?: number;
  /** A line for logs. */
  reason: string;
}

/** What the channel tells the application. */
export type ChannelEvent =
  /** The join was answered ok; `response` is its reply's response. */
  | { type: 'joined'; response: unknown }
  /** The join was answered with an error; the channel backs off and tries again. */
  | { type: 'join-refused'; response: unknown; retryInMs: number }
  /** A push from the server on the topic. */
  | { type: 'message'; event: string; payload: unknown }
  /** The reply to one of push()'s refs. */
  | { type: 'reply'; ref: string; status: 'ok' | 'error'; response: unknown }
  /** A push that was sent (or buffered) but got no reply before its connection went. */
  | { type: 'push-lost'; ref: string; event: string }
  /** The connection went or could not be made; another attempt in retryInMs. */
  | { type: 'disconnected'; reason: string; retryInMs: number }
  /** The token was refused (HTTP 401 invalid_token) or expired: nothing is retried. */
  | { type: 'signed-out'; reason: string }
  /** close() finished. */
  | { type: 'closed' }
  /** A frame that could not be read was dropped. */
  | { type: 'malformed-frame'; problem: string };

export type ChannelEffect =
  | { type: 'connect' }
  | { type: 'send'; text: string }
  /** Close the current connection; no handleDisconnected is expected for it. */
  | { type: 'close'; code: number; reason: string }
  | { type: 'event'; event: ChannelEvent };

export interface ChannelStats {
  malformedFrames: number;
  /** Frames on another topic, or arriving while no session is up. */
  unexpectedFrames: number;
  unmatchedReplies: number;
  heartbeatsSent: number;
  heartbeatsAnswered: number;
  /** Connection attempts after the first. */
  reconnects: number;
  joins: number;
  /** Pushes refused because the buffer was full or the channel had ended. */
  droppedPushes: number;
}

interface PendingPush {
  ref: string;
  event: string;
  payload: unknown;
}

/** The WebSocket close code the channel uses when it drops a connection to retry. */
export const RECONNECT_CLOSE_CODE = 4000;

export class PhoenixChannel {
  readonly topic: string;
  #state: ChannelState = 'disconnected';
  readonly #options: Required<
    Omit<PhoenixChannelOptions, 'backoff' | 'random' | 'joinPayload' | 'topic'>
  >;
  readonly #backoff: BackoffOptions;
  readonly #random: () => number;
  readonly #joinPayload: unknown;
  readonly #effects: ChannelEffect[] = [];
  #nextRef = 1;
  #attempt = 0;
  #everConnected = false;
  #joinRef: string | null = null;
  #connectDeadline: number | undefined;
  #joinDeadline: number | undefined;
  #nextHeartbeat: number | undefined;
  #retryAt: number | undefined;
  #minimumRetryMs = 0;
  readonly #inflightHeartbeats = new Set<string>();
  /** Pushes made before the join was answered, sent once it is. */
  #buffered: PendingPush[] = [];
  /** Pushes sent on the current connection, awaiting their replies. */
  readonly #awaiting = new Map<string, string>();
  readonly #stats: ChannelStats = {
    malformedFrames: 0,
    unexpectedFrames: 0,
    unmatchedReplies: 0,
    heartbeatsSent: 0,
    heartbeatsAnswered: 0,
    reconnects: 0,
    joins: 0,
    droppedPushes: 0,
  };

  constructor(options: PhoenixChannelOptions) {
    this.topic = options.topic;
    this.#joinPayload = options.joinPayload;
    this.#random = options.random ?? Math.random;
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.#options = {
      joinTimeoutMs: options.joinTimeoutMs ?? PHOENIX_JOIN_TIMEOUT_MS,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? PHOENIX_HEARTBEAT_INTERVAL_MS,
      maxUnansweredHeartbeats: options.maxUnansweredHeartbeats ?? PHOENIX_MAX_UNANSWERED_HEARTBEATS,
      connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      maxBufferedPushes: options.maxBufferedPushes ?? DEFAULT_MAX_BUFFERED_PUSHES,
    };
  }

  get state(): ChannelState {
    return this.#state;
  }

  get stats(): Readonly<ChannelStats> {
    return { ...this.#stats };
  }

  /** Heartbeats sent on this connection without a reply yet. */
  get unansweredHeartbeats(): number {
    return this.#inflightHeartbeats.size;
  }

  /** The next effect to carry out, or undefined when there is none. */
  pollEffect(): ChannelEffect | undefined {
    return this.#effects.shift();
  }

  /** When handleTimeout should next be called (epoch of the caller's clock), or undefined. */
  pollTimeout(): number | undefined {
    let earliest: number | undefined;
    for (const deadline of [
      this.#connectDeadline,
      this.#joinDeadline,
      this.#nextHeartbeat,
      this.#retryAt,
    ]) {
      if (deadline !== undefined && (earliest === undefined || deadline < earliest))
        earliest = deadline;
    }
    return earliest;
  }

  /** Starts connecting (from disconnected only). */
  connect(now: number): void {
    if (this.#state !== 'disconnected') return;
    this.#startConnecting(now);
  }

  /** The connection is open: join the topic. */
  handleConnected(now: number): void {
    if (this.#state !== 'connecting') return;
    this.#connectDeadline = undefined;
    this.#everConnected = true;
    this.#state = 'joining';
    this.#inflightHeartbeats.clear();
    this.#nextHeartbeat = now + this.#options.heartbeatIntervalMs;
    this.#joinRef = this.#makeRef();
    this.#joinDeadline = now + this.#options.joinTimeoutMs;
    this.#stats.joins += 1;
    const payload =
      typeof this.#joinPayload === 'function'
        ? (this.#joinPayload as () => unknown)()
        : this.#joinPayload;
    this.#send({
      topic: this.topic,
      event: PHX_JOIN,
      payload: payload ?? {},
      ref: this.#joinRef,
      join_ref: this.#joinRef,
    });
  }

  /**
   * The connection could not be made. An HTTP 401 whose problem-details `code` is
   * `invalid_token` (or `missing_token`) ends the channel in signed-out; anything else backs off.
   */
  handleConnectFailed(now: number, failure: ConnectFailure): void {
    if (this.#state !== 'connecting') return;
    if (failure.status === 401 && isInvalidTokenProblem(failure.body)) {
      this.#signOut(`the portal refused the token (HTTP 401 invalid_token)`, false);
      return;
    }
    this.#minimumRetryMs = failure.retryAfterMs ?? 0;
    const status = failure.status === undefined ? '' : ` (HTTP ${failure.status})`;
    this.#backOff(now, `${failure.reason}${status}`, false);
  }

  /** The connection closed or failed while up (or while connecting). */
  handleDisconnected(now: number, reason: string): void {
    if (this.#state !== 'connecting' && this.#state !== 'joining' && this.#state !== 'joined')
      return;
    this.#backOff(now, reason, false);
  }

  /** A text frame arrived. */
  handleFrame(text: string, now: number): void {
    if (this.#state !== 'joining' && this.#state !== 'joined') {
      this.#stats.unexpectedFrames += 1;
      return;
    }
    const parsed = parsePhoenixFrame(text);
    if (!parsed.ok) {
      this.#malformed(parsed.problem);
      return;
    }
    const frame = parsed.frame;
    if (frame.topic === PHOENIX_HEARTBEAT_TOPIC && frame.event === PHX_REPLY) {
      if (frame.ref !== null && this.#inflightHeartbeats.delete(frame.ref))
        this.#stats.heartbeatsAnswered += 1;
      else this.#stats.unmatchedReplies += 1;
      return;
    }
    if (frame.topic !== this.topic) {
      this.#stats.unexpectedFrames += 1;
      return;
    }
    if (frame.join_ref !== null && frame.join_ref !== this.#joinRef) {
      // Something about an earlier join of this topic: stale.
      this.#stats.unexpectedFrames += 1;
      return;
    }
    switch (frame.event) {
      case PHX_REPLY:
        this.#handleReply(frame.ref, frame.payload, now);
        return;
      case PHX_CLOSE:
        this.#backOff(now, 'the portal closed the channel (phx_close)', true);
        return;
      case PHX_ERROR:
        this.#backOff(now, 'the channel failed on the portal (phx_error)', true);
        return;
      default:
        if (
          frame.event === 'disconnect' &&
          disconnectReason(frame.payload) === DISCONNECT_TOKEN_EXPIRED
        ) {
          this.#signOut('the portal ended the session: token_expired', true);
          return;
        }
        this.#emit({ type: 'message', event: frame.event, payload: frame.payload });
    }
  }

  /** A binary frame arrived: the portal sends none, so it counts as malformed. */
  handleBinaryFrame(_now: number): void {
    if (this.#state !== 'joining' && this.#state !== 'joined') {
      this.#stats.unexpectedFrames += 1;
      return;
    }
    this.#malformed('a binary frame (the protocol is JSON text)');
  }

  /** Time has passed: fire what is due. */
  handleTimeout(now: number): void {
    if (this.#retryAt !== undefined && now >= this.#retryAt && this.#state === 'backing-off') {
      this.#stats.reconnects += 1;
      this.#startConnecting(now);
      return;
    }
    if (
      this.#connectDeadline !== undefined &&
      now >= this.#connectDeadline &&
      this.#state === 'connecting'
    ) {
      this.#backOff(
        now,
        `the connection was not open within ${this.#options.connectTimeoutMs} ms`,
        true,
      );
      return;
    }
    if (
      this.#joinDeadline !== undefined &&
      now >= this.#joinDeadline &&
      this.#state === 'joining'
    ) {
      this.#backOff(
        now,
        `the join was not answered within ${this.#options.joinTimeoutMs} ms`,
        true,
      );
      return;
    }
    if (this.#nextHeartbeat !== undefined && now >= this.#nextHeartbeat) {
      if (this.#state !== 'joining' && this.#state !== 'joined') {
        this.#nextHeartbeat = undefined;
        return;
      }
      if (this.#inflightHeartbeats.size >= this.#options.maxUnansweredHeartbeats) {
        this.#backOff(
          now,
          `more than ${this.#options.maxUnansweredHeartbeats} heartbeats unanswered`,
          true,
        );
        return;
      }
      const ref = this.#makeRef();
      this.#inflightHeartbeats.add(ref);
      this.#stats.heartbeatsSent += 1;
      this.#send({
        topic: PHOENIX_HEARTBEAT_TOPIC,
        event: PHOENIX_HEARTBEAT_EVENT,
        payload: {},
        ref,
      });
      this.#nextHeartbeat = Math.max(
        this.#nextHeartbeat + this.#options.heartbeatIntervalMs,
        now + 1,
      );
    }
  }

  /**
   * Pushes an event on the topic; the reply arrives as a `reply` event with the returned ref.
   * Before the join is answered the push waits (at most maxBufferedPushes of them); undefined
   * when it cannot be taken (the buffer is full, or the channel has ended).
   */
  push(event: string, payload: unknown): string | undefined {
    if (this.#state === 'closed' || this.#state === 'signed-out') {
      this.#stats.droppedPushes += 1;
      return undefined;
    }
    const ref = this.#makeRef();
    if (this.#state === 'joined') {
      this.#awaiting.set(ref, event);
      this.#send({ topic: this.topic, event, payload, ref, join_ref: this.#joinRef });
      return ref;
    }
    if (this.#buffered.length >= this.#options.maxBufferedPushes) {
      this.#stats.droppedPushes += 1;
      return undefined;
    }
    this.#buffered.push({ ref, event, payload });
    return ref;
  }

  /** Leaves the topic, closes the connection and stops for good. */
  close(_now: number): void {
    if (this.#state === 'closed') return;
    const open = this.#state === 'joining' || this.#state === 'joined';
    const connecting = this.#state === 'connecting';
    if (this.#state === 'joined') {
      this.#send({
        topic: this.topic,
        event: PHX_LEAVE,
        payload: {},
        ref: this.#makeRef(),
        join_ref: this.#joinRef,
      });
    }
    this.#loseAwaiting(true);
    this.#clearTimers();
    this.#state = 'closed';
    if (open || connecting)
      this.#effects.push({ type: 'close', code: 1000, reason: 'closed by the application' });
    this.#emit({ type: 'closed' });
  }

  #handleReply(ref: string | null, payload: unknown, now: number): void {
    const reply = parsePhoenixReply(payload);
    if (!reply.ok) {
      this.#malformed(reply.problem);
      return;
    }
    if (ref !== null && ref === this.#joinRef && this.#state === 'joining') {
      this.#joinDeadline = undefined;
      if (reply.reply.status === 'error') {
        const retryInMs = this.#backOff(now, 'the portal refused the join', true, false);
        this.#emit({ type: 'join-refused', response: reply.reply.response, retryInMs });
        return;
      }
      this.#state = 'joined';
      this.#attempt = 0;
      this.#emit({ type: 'joined', response: reply.reply.response });
      const buffered = this.#buffered;
      this.#buffered = [];
      for (const push of buffered) {
        this.#awaiting.set(push.ref, push.event);
        this.#send({
          topic: this.topic,
          event: push.event,
          payload: push.payload,
          ref: push.ref,
          join_ref: this.#joinRef,
        });
      }
      return;
    }
    if (ref !== null && this.#awaiting.delete(ref)) {
      this.#emit({
        type: 'reply',
        ref,
        status: reply.reply.status,
        response: reply.reply.response,
      });
      return;
    }
    this.#stats.unmatchedReplies += 1;
  }

  #startConnecting(now: number): void {
    this.#state = 'connecting';
    this.#retryAt = undefined;
    this.#connectDeadline = now + this.#options.connectTimeoutMs;
    this.#effects.push({ type: 'connect' });
  }

  /** Drops the connection (closing it when `close`), schedules the next attempt; the delay. */
  #backOff(now: number, reason: string, close: boolean, announce = true): number {
    if (close)
      this.#effects.push({
        type: 'close',
        code: RECONNECT_CLOSE_CODE,
        reason: reason.slice(0, 120),
      });
    this.#loseAwaiting(false);
    this.#clearTimers();
    const base = Math.min(
      this.#backoff.maxMs,
      this.#backoff.initialMs * Math.pow(this.#backoff.multiplier, Math.min(this.#attempt, 64)),
    );
    const jitter = Math.min(1, Math.max(0, this.#backoff.jitter));
    const random = Math.min(1, Math.max(0, this.#random()));
    const delay = Math.max(this.#minimumRetryMs, Math.round(base * (1 - jitter * random)));
    this.#minimumRetryMs = 0;
    this.#attempt += 1;
    this.#state = 'backing-off';
    this.#retryAt = now + delay;
    const why = this.#everConnected ? reason : `${reason} (not connected yet)`;
    if (announce) this.#emit({ type: 'disconnected', reason: why, retryInMs: delay });
    return delay;
  }

  #signOut(reason: string, close: boolean): void {
    if (close) this.#effects.push({ type: 'close', code: 1000, reason: 'signed out' });
    this.#loseAwaiting(true);
    this.#clearTimers();
    this.#state = 'signed-out';
    this.#emit({ type: 'signed-out', reason });
  }

  /** Pushes sent on the connection that went get no reply; buffered ones survive a reconnect. */
  #loseAwaiting(includeBuffered: boolean): void {
    for (const [ref, event] of this.#awaiting) this.#emit({ type: 'push-lost', ref, event });
    this.#awaiting.clear();
    if (includeBuffered) {
      for (const push of this.#buffered)
        this.#emit({ type: 'push-lost', ref: push.ref, event: push.event });
      this.#buffered = [];
    }
    this.#inflightHeartbeats.clear();
  }

  #clearTimers(): void {
    this.#connectDeadline = undefined;
    this.#joinDeadline = undefined;
    this.#nextHeartbeat = undefined;
    this.#retryAt = undefined;
  }

  #malformed(problem: string): void {
    this.#stats.malformedFrames += 1;
    this.#emit({ type: 'malformed-frame', problem });
  }

  #makeRef(): string {
    const ref = String(this.#nextRef);
    this.#nextRef += 1;
    return ref;
  }

  #send(frame: {
    topic: string;
    event: string;
    payload: unknown;
    ref: string | null;
    join_ref?: string | null;
  }): void {
    this.#effects.push({ type: 'send', text: encodePhoenixFrame(frame) });
  }

  #emit(event: ChannelEvent): void {
    this.#effects.push({ type: 'event', event });
  }
}

/** Whether a 401's body is problem details naming the token (code invalid_token or missing_token). */
export function isInvalidTokenProblem(body: string | undefined): boolean {
  if (body === undefined || body.length > 64 * 1024) return false;
  try {
    const value: unknown = JSON.parse(body);
    if (typeof value !== 'object' || value === null) return false;
    const code = (value as { code?: unknown }).code;
    return code === 'invalid_token' || code === 'missing_token';
  } catch {
    return false;
  }
}

function disconnectReason(payload: unknown): unknown {
  return typeof payload === 'object' && payload !== null
    ? (payload as { reason?: unknown }).reason
    : undefined;
}
