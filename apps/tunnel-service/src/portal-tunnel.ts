/**
 * A tunnel the portal configures: the IO shell around the sans-IO PortalSession. It joins the
 * portal's client channel (topic "client", through PhoenixSocket, which reconnects with
 * backoff and jitter and watches the heartbeats), feeds the session the channel's pushes, the
 * engine's route misses and handshake failures and the time it asks for, and carries out
 * what the session wants: request_authorization pushes, and the tunnel spec — the first one
 * starts the tunnel, later ones are applied (only what differs changes, so a new peer never
 * costs another its session, and the packets held for a route miss flow once the gateway's
 * peer is there).
 *
 * The tunnel outlives the portal connection: while the channel reconnects the tunnel keeps
 * running as it was. It ends only when the owner stops it, when the data plane fails, or when
 * the portal refuses the token (HTTP 401 invalid_token, or disconnect token_expired): then
 * the owner hears `sign-in-required` and takes it down.
 */

import { hostname, release } from 'node:os';
import type { EngineEvent } from '@gatehouse/engine';
import type { Logger } from '@gatehouse/logging';
import type { ChannelEvent, ChannelStats } from '@gatehouse/phoenix-channel';
import {
  MAX_NAME_CHARS,
  MAX_PORTAL_ERROR_CHARS,
  type ConnectionFailure,
  type PortalConnectionState,
  type PortalStatus,
} from '@gatehouse/protocol';
import { encodeKey, generateKeyPair, type KeyPair } from '@gatehouse/wireguard';
import { PortalSession, type PortalSessionOptions } from './portal-session.ts';
import { TunnelStartError, type Tunnel, type TunnelReport } from './tunnel.ts';
import type { TunnelSpec } from './tunnel-spec.ts';

/** What the portal tunnel uses of PhoenixSocket. */
export interface PortalChannel {
  start(): void;
  /** The ref of the push, or undefined when it was not taken. */
  push(event: string, payload: unknown): string | undefined;
  close(): Promise<void>;
  readonly stats: Readonly<ChannelStats>;
}

export interface PortalChannelHandlers {
  /** Asked at every join. */
  joinPayload: () => unknown;
  onEvent: (event: ChannelEvent) => void;
}

export interface PortalTunnelOptions {
  /** The portal as the person gave it (shown in the status). */
  portalUrl: string;
  interfaceName: string;
  internetResource: boolean;
  lanBypass: boolean;
  /** The id the portal knows this machine by (device-id.ts). */
  deviceId: string;
  /** The device's name in the portal; the host name unless given. */
  deviceName?: string;
  /** The client's version, sent with the join. */
  version: string;
  /** A channel to the portal with the token (PhoenixSocket); a new one per (re)connect. */
  openChannel: (handlers: PortalChannelHandlers) => PortalChannel;
  /** The data plane, created when the portal first describes the tunnel. */
  createTunnel: () => Tunnel;
  /**
   * The running tunnel must go: the portal signed the token out, or the data plane failed.
   * The owner then stops this portal tunnel.
   */
  onFailure: (failure: ConnectionFailure) => void;
  /** Something the status shows changed. */
  onChange: () => void;
  logger: Logger;
  /** Epoch ms (the portal's expiries are epoch ms); Date.now unless given. */
  now?: () => number;
  /** A fresh key per tunnel start unless given (tests). */
  keyPair?: KeyPair;
}

/** The first start did not happen because the portal refused the token. */
export class SignInRequiredError extends Error {
  override readonly name = 'SignInRequiredError';
}

/** How long a failed apply waits before the latest spec is tried again. */
export const APPLY_RETRY_MS = 5_000;
/** A portal tunnel stops waiting for its channel to close after this long. */
const CLOSE_WAIT_MS = 3_000;
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * What a person reads when the portal refused the token: why, and how to get a new one.
 * `reason` is the channel's (it holds no token).
 */
export function signInRequiredMessage(reason: string): string {
  return (
    `sign-in required: the portal refused the token (${reason}). Get a new one — sign in on ` +
    "the portal's page, or have an administrator run `gatehouse-portal token create " +
    '--service-account NAME` — put it in the token file (root:root, mode 0600) or ' +
    'GATEHOUSE_TOKEN, and run `gatehouse-tunnel up --portal URL` again'
  );
}

interface Counters {
  /** Channels opened after the first (SIGHUP). */
  manualReconnects: number;
  joins: number;
  joinRefusals: number;
  disconnects: number;
  /** Pushes the channel did not take (its buffer full), and pushes that got no reply. */
  pushesDropped: number;
  pushesLost: number;
  /** Replies with status error (to request_authorization). */
  errorReplies: number;
  routeMisses: number;
  handshakeFailures: number;
  /** Engine events of other kinds, not used here. */
  otherEngineEvents: number;
  specsApplied: number;
  applyFailures: number;
  /** Throws caught at this shell's boundary (each logged). */
  internalErrors: number;
}

export class PortalTunnel {
  readonly #options: PortalTunnelOptions;
  readonly #now: () => number;
  readonly #keyPair: KeyPair;
  readonly #session: PortalSession;
  #channel: PortalChannel | undefined;
  /** Each channel's events carry the generation it was opened in; older ones are stale. */
  #generation = 0;
  #connection: PortalConnectionState = 'connecting';
  #everJoined = false;
  #lastError: string | undefined;
  #tunnel: Tunnel | undefined;
  #tunnelUp = false;
  /** The first start while it runs: stop waits for it, so that nothing it sets up is left behind. */
  #tunnelStarting: Promise<unknown> | undefined;
  #appliedSpec: TunnelSpec | undefined;
  #applying: Promise<void> | undefined;
  #applyAgain = false;
  #retryTimer: NodeJS.Timeout | undefined;
  #sessionTimer: NodeJS.Timeout | undefined;
  #sessionTimerAt: number | undefined;
  #stopping: Promise<void> | undefined;
  #signedOut = false;
  #firstStart: { resolve: () => void; reject: (error: Error) => void } | undefined;
  readonly #started: Promise<void>;
  readonly #counters: Counters = {
    manualReconnects: 0,
    joins: 0,
    joinRefusals: 0,
    disconnects: 0,
    pushesDropped: 0,
    pushesLost: 0,
    errorReplies: 0,
    routeMisses: 0,
    handshakeFailures: 0,
    otherEngineEvents: 0,
    specsApplied: 0,
    applyFailures: 0,
    internalErrors: 0,
  };

  constructor(options: PortalTunnelOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#keyPair = options.keyPair ?? generateKeyPair();
    const sessionOptions: PortalSessionOptions = {
      interfaceName: options.interfaceName,
      privateKey: this.#keyPair.privateKey,
      internetResource: options.internetResource,
      lanBypass: options.lanBypass,
      lookupProxyAddress: (address) => this.#tunnel?.lookupProxyAddress(address),
    };
    this.#session = new PortalSession(sessionOptions);
    this.#started = new Promise((resolve, reject) => {
      this.#firstStart = { resolve, reject };
    });
    // The owner may stop before awaiting start(); a rejection must not go unhandled meanwhile.
    this.#started.catch(() => undefined);
  }

  /** This run's WireGuard public key, as the portal knows it (base64). */
  get publicKey(): string {
    return encodeKey(this.#keyPair.publicKey);
  }

  /** Whether the portal's tunnel is up (from its first spec until stop). */
  get tunnelUp(): boolean {
    return this.#tunnelUp;
  }

  /**
   * Joins the portal; resolves once the tunnel the portal describes is up. Rejects with the
   * tunnel's TunnelStartError when it cannot start, a SignInRequiredError when the portal
   * refuses the token first, or an Error when stopped before.
   */
  start(): Promise<void> {
    if (this.#channel === undefined && this.#stopping === undefined) this.#open();
    return this.#started;
  }

  /** SIGHUP: a new connection to the portal (the tunnel keeps running meanwhile). */
  reconnect(): boolean {
    if (this.#stopping !== undefined || this.#signedOut || this.#channel === undefined)
      return false;
    this.#counters.manualReconnects += 1;
    this.#options.logger.info('portal: reconnecting (SIGHUP)');
    void this.#closeChannel();
    this.#open();
    return true;
  }

  /** Leaves the portal and takes the tunnel down; safe to call twice and after a failed start. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  /** The running tunnel's peers and counters; only while tunnelUp. */
  tunnelReport(): TunnelReport {
    if (this.#tunnel === undefined || !this.#tunnelUp)
      throw new Error("the portal's tunnel is not up");
    return this.#tunnel.status();
  }

  status(): PortalStatus {
    const identity = this.#session.identity();
    return {
      url: this.#options.portalUrl,
      connection: this.#connection,
      ...(identity === undefined ? {} : { identity }),
      resources: this.#session.resources(),
      ...(this.#lastError === undefined ? {} : { lastError: this.#lastError }),
      counters: this.#countersNow(),
    };
  }

  // -------------------------------------------------------------------------------------------
  // The channel

  #open(): void {
    const generation = ++this.#generation;
    this.#connection = this.#everJoined ? 'reconnecting' : 'connecting';
    const channel = this.#options.openChannel({
      joinPayload: () => this.#joinPayload(),
      onEvent: (event) => {
        if (generation === this.#generation)
          this.#guard('a channel event', () => this.#onChannelEvent(event));
      },
    });
    this.#channel = channel;
    channel.start();
  }

  /** Closes the current channel in the background; its later events are stale. */
  #closeChannel(): Promise<void> {
    const channel = this.#channel;
    this.#channel = undefined;
    this.#generation += 1;
    if (channel === undefined) return Promise.resolve();
    return channel.close().catch((error: unknown) => {
      this.#options.logger.warn(
        `portal: closing the connection failed: ${(error as Error).message}`,
      );
    });
  }

  #joinPayload(): unknown {
    const name = (this.#options.deviceName ?? hostname()).slice(0, MAX_NAME_CHARS) || 'gatehouse';
    return {
      public_key: this.publicKey,
      device_id: this.#options.deviceId,
      name,
      os_name: 'Linux',
      os_version: release().slice(0, 64) || 'unknown',
      version: this.#options.version.slice(0, 64),
    };
  }

  #onChannelEvent(event: ChannelEvent): void {
    const { logger } = this.#options;
    switch (event.type) {
      case 'joined':
        this.#counters.joins += 1;
        logger.info(
          this.#everJoined
            ? 'portal: connected again'
            : `portal: connected to ${this.#options.portalUrl}`,
        );
        this.#everJoined = true;
        this.#connection = 'connected';
        this.#lastError = undefined;
        this.#options.onChange();
        return;
      case 'join-refused':
        this.#counters.joinRefusals += 1;
        this.#setError(
          `the portal refused the join (${refusalReason(event.response)}); again in ${seconds(event.retryInMs)}`,
        );
        this.#connection = this.#everJoined ? 'reconnecting' : 'connecting';
        logger.warn(`portal: ${this.#lastError ?? ''}`);
        this.#options.onChange();
        return;
      case 'message':
        this.#session.handleMessage(event.event, event.payload, this.#now());
        this.#drain();
        this.#options.onChange();
        return;
      case 'reply':
        if (event.status === 'error') {
          this.#counters.errorReplies += 1;
          logger.debug(`portal: an error reply: ${refusalReason(event.response)}`);
        }
        return;
      case 'push-lost':
        // The session asks again after its request timeout.
        this.#counters.pushesLost += 1;
        return;
      case 'disconnected':
        this.#counters.disconnects += 1;
        this.#setError(event.reason);
        this.#connection = this.#everJoined ? 'reconnecting' : 'connecting';
        logger.warn(
          `portal: ${printable(event.reason)}; connecting again in ${seconds(event.retryInMs)}`,
        );
        this.#options.onChange();
        return;
      case 'signed-out':
        this.#onSignedOut(event.reason);
        return;
      case 'malformed-frame':
        logger.warn(`portal: a frame dropped: ${printable(event.problem)}`);
        return;
      case 'closed':
        return;
    }
  }

  #onSignedOut(reason: string): void {
    this.#signedOut = true;
    this.#connection = 'signed-out';
    this.#setError(reason);
    const message = signInRequiredMessage(printable(reason));
    this.#options.logger.error(message);
    this.#options.onChange();
    if (this.#firstStart !== undefined) {
      this.#firstStart.reject(new SignInRequiredError(message));
      this.#firstStart = undefined;
      void this.stop();
      return;
    }
    this.#options.onFailure({ reason: 'sign-in-required', message });
  }

  #setError(reason: string): void {
    this.#lastError = printable(reason).slice(0, MAX_PORTAL_ERROR_CHARS);
  }

  // -------------------------------------------------------------------------------------------
  // The session

  /** Carries out the session's effects, then sets the timer it asks for. */
  #drain(): void {
    const { logger } = this.#options;
    for (
      let effect = this.#session.pollEffect();
      effect !== undefined;
      effect = this.#session.pollEffect()
    ) {
      switch (effect.type) {
        case 'push': {
          const ref = this.#channel?.push(effect.event, effect.payload);
          if (ref === undefined) this.#counters.pushesDropped += 1;
          break;
        }
        case 'spec-changed':
          this.#specChanged();
          break;
        case 'log':
          logger[effect.level](effect.message);
          break;
      }
    }
    this.#scheduleSession();
  }

  #scheduleSession(): void {
    if (this.#stopping !== undefined) return;
    const at = this.#session.nextDeadline();
    if (at === this.#sessionTimerAt) return;
    if (this.#sessionTimer !== undefined) clearTimeout(this.#sessionTimer);
    this.#sessionTimer = undefined;
    this.#sessionTimerAt = at;
    if (at === undefined) return;
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, at - this.#now()));
    this.#sessionTimer = setTimeout(() => {
      this.#sessionTimer = undefined;
      this.#sessionTimerAt = undefined;
      this.#guard('a session timeout', () => {
        this.#session.handleTimeout(this.#now());
        this.#drain();
        this.#options.onChange();
      });
    }, delay);
  }

  #onEngineEvent(event: EngineEvent): void {
    switch (event.type) {
      case 'route-miss':
        this.#counters.routeMisses += 1;
        this.#session.handleRouteMiss(event.destination, this.#now());
        break;
      case 'handshake-failed':
        this.#counters.handshakeFailures += 1;
        this.#session.handlePeerHandshakeFailed(event.peer, this.#now());
        break;
      default:
        this.#counters.otherEngineEvents += 1;
        return;
    }
    this.#drain();
  }

  // -------------------------------------------------------------------------------------------
  // The tunnel

  #specChanged(): void {
    if (this.#stopping !== undefined) return;
    const spec = this.#session.spec();
    if (spec === undefined) return;
    if (this.#tunnel === undefined) {
      this.#startTunnel(spec);
      return;
    }
    if (this.#tunnelUp) this.#applyLatest();
  }

  #startTunnel(spec: TunnelSpec): void {
    const tunnel = this.#options.createTunnel();
    this.#tunnel = tunnel;
    const events = {
      onFailed: (error: Error) =>
        this.#options.onFailure({ reason: 'engine-failed', message: error.message }),
      onEngineEvent: (event: EngineEvent) =>
        this.#guard('an engine event', () => this.#onEngineEvent(event)),
    };
    this.#tunnelStarting = tunnel.start(spec, events).then(
      () => {
        if (this.#stopping !== undefined) return;
        this.#tunnelUp = true;
        this.#appliedSpec = spec;
        this.#options.logger.info(
          `portal: tunnel ${spec.interfaceName} is up with ${spec.peers.length} gateway(s) and ${spec.routes.length} route(s)`,
        );
        this.#firstStart?.resolve();
        this.#firstStart = undefined;
        this.#options.onChange();
        this.#applyLatest();
      },
      (error: unknown) => {
        const failure =
          error instanceof Error ? error : new TunnelStartError('setup-failed', String(error));
        this.#firstStart?.reject(failure);
        this.#firstStart = undefined;
        void this.stop();
      },
    );
  }

  /** Applies the session's latest spec, one change at a time; a failure is retried later. */
  #applyLatest(): void {
    if (this.#applying !== undefined) {
      this.#applyAgain = true;
      return;
    }
    const tunnel = this.#tunnel;
    if (tunnel === undefined || !this.#tunnelUp || this.#stopping !== undefined) return;
    this.#applyAgain = false;
    this.#applying = this.#applyOnce(tunnel).finally(() => {
      this.#applying = undefined;
      this.#options.onChange();
      if (this.#applyAgain) this.#applyLatest();
    });
  }

  async #applyOnce(tunnel: Tunnel): Promise<void> {
    const spec = this.#session.spec();
    if (spec === undefined || spec === this.#appliedSpec) return;
    try {
      await tunnel.apply(spec);
      this.#appliedSpec = spec;
      this.#counters.specsApplied += 1;
    } catch (error) {
      this.#counters.applyFailures += 1;
      this.#options.logger.error(
        `portal: the tunnel did not take the portal's change (again in ${seconds(APPLY_RETRY_MS)}): ${(error as Error).message}`,
      );
      this.#retryLater();
    }
  }

  #retryLater(): void {
    if (this.#retryTimer !== undefined || this.#stopping !== undefined) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#applyLatest();
    }, APPLY_RETRY_MS);
  }

  async #stop(): Promise<void> {
    if (this.#sessionTimer !== undefined) clearTimeout(this.#sessionTimer);
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#sessionTimer = undefined;
    this.#retryTimer = undefined;
    this.#firstStart?.reject(new Error('stopped before the portal configured the tunnel'));
    this.#firstStart = undefined;
    const closed = this.#closeChannel();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      closed,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLOSE_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
    await this.#tunnelStarting;
    await this.#applying;
    const tunnel = this.#tunnel;
    this.#tunnelUp = false;
    await tunnel?.stop();
  }

  #countersNow(): Record<string, number> {
    const counters: Record<string, number> = {};
    const add = (prefix: string, values: object): void => {
      for (const [name, value] of Object.entries(values)) {
        if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0)
          counters[`${prefix}${name}`] = value;
        else if (typeof value === 'object' && value !== null) add(`${prefix}${name}.`, value);
      }
    };
    add('session.', this.#session.stats());
    if (this.#channel !== undefined) add('channel.', this.#channel.stats);
    add('', this.#counters);
    return counters;
  }

  /** A throw from the session or the tunnel here must not take the service down: counted and logged. */
  #guard(what: string, action: () => void): void {
    try {
      action();
    } catch (error) {
      this.#counters.internalErrors += 1;
      this.#options.logger.error(
        `portal: handling ${what} failed: ${(error as Error)?.stack ?? String(error)}`,
      );
    }
  }
}

/** The reason a refusal carries (`{reason: "..."}`), else a short note. */
function refusalReason(response: unknown): string {
  const reason =
    typeof response === 'object' && response !== null
      ? (response as { reason?: unknown }).reason
      : undefined;
  return typeof reason === 'string' ? printable(reason).slice(0, 128) : 'no reason given';
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}

/** Text from the network, safe for one log line. */
function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f]/g, '?').slice(0, 400);
}
