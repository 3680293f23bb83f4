/**
 * The engine's events on their way to its owner: the typed union, the
 * route-miss dedup across workers, the idle check's pace, and the handler
 * boundary (what a handler throws is counted and logged, never the
 * engine's). Runs on the control thread.
 */
import { PeerIdleWatch } from './peer-idle.ts';
import type { PeerActivity } from './peer-idle.ts';
import { ROUTE_MISS_HOLD_MS } from './route-miss.ts';

/** What the engine tells its owner (the tunnel service, the gateway); peers by base64 public key. */
export type EngineEvent =
  | { type: 'handshake-completed'; peer: string }
  | { type: 'handshake-failed'; peer: string; droppedPackets: number }
  /** No packet either way (keepalives count) for PEER_IDLE_AFTER_MS; once per quiet spell. */
  | { type: 'peer-idle'; peer: string; idleMs: number }
  /**
   * The first packet to an address no peer's AllowedIPs cover (once per
   * ROUTE_MISS_HOLD_MS): a few are held, and sent once setPeers configures
   * a peer for it.
   */
  | { type: 'route-miss'; destination: string; family: 4 | 6 };

const IDLE_CHECK_INTERVAL_MS = 1_000;

export class EngineEvents {
  readonly #handle: (event: EngineEvent) => void;
  readonly #logFailure: (message: string) => void;
  readonly #idle = new PeerIdleWatch();
  #nextIdleCheckMs = 0;
  /** Route-miss destinations reported, with when. */
  readonly #reportedMisses = new Map<string, number>();
  /** Events whose handler threw. */
  handlerErrors = 0;

  constructor(handle: (event: EngineEvent) => void, logFailure: (message: string) => void) {
    this.#handle = handle;
    this.#logFailure = logFailure;
  }

  emit(event: EngineEvent): void {
    try {
      this.#handle(event);
    } catch (error) {
      this.handlerErrors++;
      // A handler failing on every event must not flood the log: the first, then every 1000th.
      if (this.handlerErrors % 1000 === 1) {
        this.#logFailure(
          `the ${event.type} event's handler failed (${this.handlerErrors} so far): ${(error as Error).message}`,
        );
      }
    }
  }

  /** Each worker reports a destination once; the owner hears of it once per ROUTE_MISS_HOLD_MS. */
  routeMiss(family: 4 | 6, destination: string, nowMs: number): void {
    for (const [reported, atMs] of this.#reportedMisses) {
      if (nowMs - atMs >= ROUTE_MISS_HOLD_MS) this.#reportedMisses.delete(reported);
    }
    if (this.#reportedMisses.has(destination)) return;
    this.#reportedMisses.set(destination, nowMs);
    this.emit({ type: 'route-miss', destination, family });
  }

  /** Looks for newly idle peers at most once a second; `activity` is asked only then. */
  checkIdle(activity: () => PeerActivity[], nowMs: number): void {
    if (nowMs < this.#nextIdleCheckMs) return;
    this.#nextIdleCheckMs = nowMs + IDLE_CHECK_INTERVAL_MS;
    for (const { peer, idleMs } of this.#idle.check(activity(), nowMs)) {
      this.emit({ type: 'peer-idle', peer, idleMs });
    }
  }
}
