/**
 * The running gateway: the IO around the sans-IO GatewaySession. It carries
 * out the session's effects — pushes to the portal, name resolutions, and
 * each new plan, applied in order to the engine's peers, the TUN's addresses
 * and routes, and the nftables table before planApplied(version) lets the
 * session confirm the flows — and feeds it the portal's messages, the
 * resolutions' outcomes and its timers.
 *
 * Start: leftovers of an earlier run go first (the table, a TUN of the same
 * name), then the engine on the TUN, forwarding on, the first table, and the
 * portal connection. Stop (a signal, the portal refusing the token, the
 * engine failing): the portal connection, the engine, the table, forwarding
 * back as it was, the TUN. A lost portal connection changes nothing: the
 * session keeps its flows and the engine its peers while the channel
 * reconnects.
 *
 * Every part is passed in (GatewayParts), so the wiring is tested with fakes.
 */
import type { EngineEvent, EnginePeer, EngineStatus } from '@gatehouse/engine';
import type { Logger } from '@gatehouse/logging';
import type { ChannelEvent } from '@gatehouse/phoenix-channel';

import type { ResolveName, ResolveOutcome } from './name-resolution.ts';
import type { TablePlan, UnmappedCount } from './nftables.ts';
import { formatStatusLine } from './status-line.ts';
import type { TunnelAddresses } from './tun-interface.ts';

export const GATEWAY_MTU = 1280;
/** A plan that could not be applied is tried again after this long. */
export const APPLY_RETRY_MS = 5_000;
/** The longest a session timer is set for (the wall clock may jump). */
const MAX_TIMER_MS = 60_000;
/** How long stop waits for the portal to hear the channel close. */
const SOCKET_CLOSE_WAIT_MS = 2_000;

export const EXIT_STOPPED = 0;
export const EXIT_FAILURE = 1;
export const EXIT_SIGNED_OUT = 3;

export const SIGNED_OUT_MESSAGE =
  'the portal refused the gateway token: create a new one with `gatehouse-portal token create --gateway SITE`';

/**
 * The session's plan and effects in the shapes the design fixes for
 * gateway-session.ts's GatewayPlan and GatewayEffect (which are assignable to these).
 */
export interface SessionPlan extends TablePlan {
  version: number;
  interface: TunnelAddresses | undefined;
  peers: EnginePeer[];
}

export type SessionEffect =
  | { type: 'push'; event: string; payload: unknown }
  | { type: 'resolve'; name: string }
  | { type: 'plan-changed' }
  | { type: 'log'; level: 'info' | 'warn' | 'debug'; message: string };

/** What the gateway uses of GatewaySession. */
export interface SessionPort {
  handleMessage(event: string, payload: unknown, nowMs: number): void;
  handleResolution(name: string, outcome: ResolveOutcome, nowMs: number): void;
  handleTimeout(nowMs: number): void;
  nextDeadline(): number | undefined;
  pollEffect(): SessionEffect | undefined;
  plan(): SessionPlan;
  planApplied(version: number): void;
  stats(): unknown;
}

/** What the gateway uses of the Engine. */
export interface EnginePort {
  setPeers(peers: EnginePeer[]): void;
  status(): EngineStatus;
  stop(): Promise<void>;
}

/** What the gateway uses of PhoenixSocket. */
export interface PortalPort {
  start(): void;
  push(event: string, payload: unknown): string | undefined;
  close(): Promise<void>;
  readonly state: string;
  readonly stats: { reconnects: number };
}

export interface TablePort {
  apply(plan: TablePlan): Promise<void>;
  remove(): Promise<void>;
  unmapped(): Promise<UnmappedCount | undefined>;
}

export interface TunPort {
  removeLeftover(): Promise<boolean>;
  bringUp(mtu: number): Promise<void>;
  setAddresses(addresses: TunnelAddresses): Promise<void>;
  setRoutes(ranges: TunnelAddresses | undefined): Promise<void>;
  remove(): Promise<void>;
}

export interface ForwardingPort {
  enable(): unknown;
  restore(): void;
}

export interface GatewayParts {
  interfaceName: string;
  session: SessionPort;
  startEngine(hooks: {
    onEvent: (event: EngineEvent) => void;
    onFailed: (error: Error) => void;
  }): Promise<EnginePort>;
  openPortal(onEvent: (event: ChannelEvent) => void): PortalPort;
  table: TablePort;
  tun: TunPort;
  forwarding: ForwardingPort;
  resolve: ResolveName;
  logger: Logger;
  /** Wall-clock ms (the session compares it with expires_at); Date.now unless told. */
  now?: () => number;
  applyRetryMs?: number;
}

/** The gateway's own counters, in the status line. */
export interface GatewayCounters {
  plansApplied: number;
  planApplyFailures: number;
  resolutions: number;
  resolutionsFailed: number;
  /** A resolution asked for while the same name's was under way (answered by that one). */
  resolutionsCoalesced: number;
  pushes: number;
  pushesRefused: number;
  /** Engine route-miss events: packets into the TUN for no client; should not happen on a gateway. */
  routeMisses: number;
  portalDisconnects: number;
  malformedFrames: number;
  errorReplies: number;
  pushesLost: number;
}

export class Gateway {
  readonly #parts: GatewayParts;
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #session: SessionPort;
  #engine: EnginePort | undefined;
  #portal: PortalPort | undefined;
  #forwardingOn = false;
  readonly counters: GatewayCounters = {
    plansApplied: 0,
    planApplyFailures: 0,
    resolutions: 0,
    resolutionsFailed: 0,
    resolutionsCoalesced: 0,
    pushes: 0,
    pushesRefused: 0,
    routeMisses: 0,
    portalDisconnects: 0,
    malformedFrames: 0,
    errorReplies: 0,
    pushesLost: 0,
  };
  #driving = false;
  #timer: NodeJS.Timeout | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  /** The apply under way, if any. */
  #applyRun: Promise<void> | undefined;
  #planDirty = false;
  #appliedVersion: number | undefined;
  #appliedInterface: string | undefined;
  #appliedRanges: string | undefined;
  readonly #resolving = new Set<string>();
  #stopping: Promise<number> | undefined;
  #exitCode = EXIT_STOPPED;
  #resolveFinished: (code: number) => void = () => {};
  /** Settles with the exit code once the gateway has stopped, whatever stopped it. */
  readonly finished: Promise<number>;

  private constructor(parts: GatewayParts) {
    this.#parts = parts;
    this.#logger = parts.logger;
    this.#now = parts.now ?? Date.now;
    this.#session = parts.session;
    this.finished = new Promise((resolve) => {
      this.#resolveFinished = resolve;
    });
  }

  /** Cleans up leftovers, starts the engine, applies the first plan and connects to the portal. */
  static async start(parts: GatewayParts): Promise<Gateway> {
    const gateway = new Gateway(parts);
    try {
      await gateway.#start();
    } catch (error) {
      gateway.#logger.error(`the gateway could not start: ${(error as Error).message}`);
      await gateway.stop(EXIT_FAILURE, 'the start failed');
      throw error;
    }
    return gateway;
  }

  async #start(): Promise<void> {
    const { tun, table, forwarding, interfaceName } = this.#parts;
    await table.remove();
    if (await tun.removeLeftover()) {
      this.#logger.warn(`removed the TUN interface ${interfaceName} an earlier run left`);
    }
    this.#engine = await this.#parts.startEngine({
      onEvent: (event) => this.#engineEvent(event),
      onFailed: (error) => {
        this.#logger.error(`the engine failed: ${error.message}`);
        void this.stop(EXIT_FAILURE, 'the engine failed');
      },
    });
    await tun.bringUp(GATEWAY_MTU);
    forwarding.enable();
    this.#forwardingOn = true;
    // The first plan (no clients yet) puts the table in place; failing here is failing to start.
    const plan = this.#session.plan();
    await this.#apply(plan);
    this.#applied(plan);
    if (this.#stopping !== undefined) return;
    this.#portal = this.#parts.openPortal((event) => this.#portalEvent(event));
    this.#portal.start();
    this.#drive();
  }

  /** Tears everything down once; resolves with the exit code (`code` unless the teardown failed). */
  stop(code: number = EXIT_STOPPED, reason = 'asked to'): Promise<number> {
    if (this.#stopping === undefined) {
      this.#exitCode = code;
      this.#logger.info(`stopping: ${reason}`);
      this.#stopping = this.#teardown();
      void this.#stopping.then((exit) => this.#resolveFinished(exit));
    }
    return this.#stopping;
  }

  /** The SIGUSR1 line. */
  async statusLine(): Promise<string> {
    const engine = this.#engine?.status();
    if (engine === undefined) return 'status: starting';
    return formatStatusLine({
      portalState: this.#portal?.state ?? 'not connected',
      portalReconnects: this.#portal?.stats.reconnects ?? 0,
      engine,
      unmapped: await this.#parts.table.unmapped(),
      planVersion: this.#session.plan().version,
      appliedVersion: this.#appliedVersion,
      counters: { ...this.counters },
      sessionStats: this.#session.stats(),
    });
  }

  async #teardown(): Promise<number> {
    clearTimeout(this.#timer);
    clearTimeout(this.#retryTimer);
    let code = this.#exitCode;
    const step = async (what: string, run: () => unknown): Promise<void> => {
      try {
        await run();
      } catch (error) {
        this.#logger.error(`stopping: ${what} failed: ${(error as Error).message}`);
        if (code === EXIT_STOPPED) code = EXIT_FAILURE;
      }
    };
    const portal = this.#portal;
    if (portal !== undefined) {
      await step('closing the portal connection', () =>
        Promise.race([
          portal.close(),
          new Promise((resolve) => setTimeout(resolve, SOCKET_CLOSE_WAIT_MS).unref()),
        ]),
      );
    }
    // An apply under way finishes before its table goes.
    await this.#applyRun;
    const engine = this.#engine;
    if (engine !== undefined) await step('stopping the engine', () => engine.stop());
    await step('deleting the nftables table', () => this.#parts.table.remove());
    if (this.#forwardingOn) {
      await step('restoring the forwarding sysctls', () => this.#parts.forwarding.restore());
    }
    await step(`deleting ${this.#parts.interfaceName}`, () => this.#parts.tun.remove());
    this.#logger.info('stopped');
    return code;
  }

  // ---- the session's effects

  #drive(): void {
    if (this.#driving || this.#stopping !== undefined) return;
    this.#driving = true;
    try {
      for (let effect = this.#session.pollEffect(); effect; effect = this.#session.pollEffect()) {
        this.#effect(effect);
        if (this.#stopping !== undefined) return;
      }
    } finally {
      this.#driving = false;
    }
    if (this.#planDirty && this.#applyRun === undefined) {
      this.#applyRun = this.#applyLoop().finally(() => {
        this.#applyRun = undefined;
        this.#drive();
      });
    }
    this.#schedule();
  }

  #effect(effect: SessionEffect): void {
    switch (effect.type) {
      case 'push': {
        const ref = this.#portal?.push(effect.event, effect.payload);
        if (ref === undefined) {
          this.counters.pushesRefused++;
          this.#logger.warn(`the portal channel did not take a ${effect.event} push`);
        } else {
          this.counters.pushes++;
        }
        break;
      }
      case 'resolve':
        this.#resolve(effect.name);
        break;
      case 'plan-changed':
        this.#planDirty = true;
        break;
      case 'log':
        this.#logger[effect.level](effect.message);
        break;
    }
  }

  #resolve(name: string): void {
    if (this.#resolving.has(name)) {
      this.counters.resolutionsCoalesced++;
      return;
    }
    this.#resolving.add(name);
    this.counters.resolutions++;
    void this.#parts
      .resolve(name)
      .catch((error: unknown) => ({
        ok: false as const,
        problem: `resolving ${name} failed: ${(error as Error).message}`,
      }))
      .then((outcome) => {
        this.#resolving.delete(name);
        if (this.#stopping !== undefined) return;
        if (!outcome.ok) {
          this.counters.resolutionsFailed++;
          this.#logger.warn(outcome.problem);
        } else {
          this.#logger.debug(
            `${name}: ${[...outcome.ipv4, ...outcome.ipv6].join(' ') || 'no addresses'} (ttl ${outcome.ttlSeconds} s)`,
          );
        }
        this.#session.handleResolution(name, outcome, this.#now());
        this.#drive();
      });
  }

  #schedule(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const deadline = this.#session.nextDeadline();
    if (deadline === undefined || this.#stopping !== undefined) return;
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, deadline - this.#now()));
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#stopping !== undefined) return;
      this.#session.handleTimeout(this.#now());
      this.#drive();
    }, Math.ceil(delay));
  }

  // ---- plans

  /** Applies the session's plan until it stops changing (#drive runs one loop at a time). */
  async #applyLoop(): Promise<void> {
    while (this.#planDirty && this.#stopping === undefined) {
      this.#planDirty = false;
      const plan = this.#session.plan();
      try {
        await this.#apply(plan);
      } catch (error) {
        this.counters.planApplyFailures++;
        const retryMs = this.#parts.applyRetryMs ?? APPLY_RETRY_MS;
        this.#logger.error(
          `applying plan v${plan.version} failed (trying again in ${retryMs / 1000} s): ${(error as Error).message}`,
        );
        this.#retryLater(retryMs);
        return;
      }
      if (this.#stopping !== undefined) return;
      this.#applied(plan);
    }
  }

  #applied(plan: SessionPlan): void {
    this.#appliedVersion = plan.version;
    this.counters.plansApplied++;
    this.#logger.debug(
      `plan v${plan.version} applied: ${plan.peers.length} peer(s), ${plan.dnat.length} DNAT mapping(s)`,
    );
    this.#session.planApplied(plan.version);
  }

  async #apply(plan: SessionPlan): Promise<void> {
    const { tun, table } = this.#parts;
    this.#engine?.setPeers(plan.peers);
    if (plan.interface !== undefined) {
      const text = JSON.stringify(plan.interface);
      if (text !== this.#appliedInterface) {
        await tun.setAddresses(plan.interface);
        this.#appliedInterface = text;
        this.#logger.info(
          `${this.#parts.interfaceName}: ${plan.interface.ipv4}, ${plan.interface.ipv6}`,
        );
      }
    }
    if (plan.tunnelRanges !== undefined) {
      const text = JSON.stringify(plan.tunnelRanges);
      if (text !== this.#appliedRanges) {
        await tun.setRoutes(plan.tunnelRanges);
        this.#appliedRanges = text;
      }
    }
    await table.apply(plan);
  }

  #retryLater(delayMs: number): void {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#planDirty = true;
      this.#drive();
    }, delayMs);
  }

  // ---- events from the portal and the engine

  #portalEvent(event: ChannelEvent): void {
    if (this.#stopping !== undefined) return;
    switch (event.type) {
      case 'joined':
        this.#logger.info('joined the portal');
        break;
      case 'message':
        this.#session.handleMessage(event.event, event.payload, this.#now());
        this.#drive();
        break;
      case 'disconnected':
        this.counters.portalDisconnects++;
        this.#logger.warn(
          `the portal connection is down (${event.reason}); trying again in ${Math.round(event.retryInMs / 100) / 10} s, ` +
            'the authorized clients stay',
        );
        break;
      case 'join-refused':
        this.#logger.warn(
          `the portal refused the join (${JSON.stringify(event.response).slice(0, 200)}); ` +
            `trying again in ${Math.round(event.retryInMs / 100) / 10} s`,
        );
        break;
      case 'signed-out':
        this.#logger.error(SIGNED_OUT_MESSAGE);
        void this.stop(EXIT_SIGNED_OUT, `signed out (${event.reason})`);
        break;
      case 'reply':
        if (event.status === 'error') {
          this.counters.errorReplies++;
          this.#logger.warn(
            `the portal answered push ${event.ref} with an error: ${JSON.stringify(event.response).slice(0, 200)}`,
          );
        }
        break;
      case 'push-lost':
        this.counters.pushesLost++;
        this.#logger.warn(
          `a ${event.event} push went with its connection before the portal answered`,
        );
        break;
      case 'malformed-frame':
        this.counters.malformedFrames++;
        this.#logger.warn(`a frame from the portal was dropped: ${event.problem}`);
        break;
      case 'closed':
        this.#logger.debug('the portal channel is closed');
        break;
    }
  }

  #engineEvent(event: EngineEvent): void {
    switch (event.type) {
      case 'route-miss':
        this.counters.routeMisses++;
        this.#logger.debug(
          `route miss: a packet into the tunnel for ${event.destination}, no client has it`,
        );
        break;
      case 'handshake-completed':
        this.#logger.debug(`handshake with ${event.peer} complete`);
        break;
      case 'handshake-failed':
        this.#logger.debug(
          `handshake with ${event.peer} failed (${event.droppedPackets} packet(s) dropped)`,
        );
        break;
      case 'peer-idle':
        this.#logger.debug(`${event.peer} idle for ${Math.round(event.idleMs / 1000)} s`);
        break;
    }
  }
}
