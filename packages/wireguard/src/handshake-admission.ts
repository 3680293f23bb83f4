/**
 * Handshake-flood defence, sans-IO: whether the device is under load, and
 * under load whether a source address may have one more handshake message
 * handled. The ideas are wireguard-go's (device/receive.go, ratelimiter/):
 * load is a handshake queue at least `underLoadQueueDepth` deep, which
 * keeps the device under load for UNDER_LOAD_AFTER_TIME after it was last
 * seen; the limit is a token bucket per source address (an IPv6 /64 counts
 * as one address). The table of buckets is bounded: idle buckets are
 * forgotten, and a new source finding it full is refused and counted.
 */

import {
  HANDSHAKE_RATE_BURST,
  HANDSHAKE_RATE_PER_SECOND,
  MAX_RATE_LIMITED_SOURCES,
  RATE_LIMITER_IDLE_TIME,
  UNDER_LOAD_AFTER_TIME,
} from './constants.ts';

export type Admission = 'admit' | 'rate-limited' | 'table-full';

export interface HandshakeAdmissionOptions {
  /** Handshake messages waiting in the queue that count as load. */
  underLoadQueueDepth: number;
  /** Bucket table bound; MAX_RATE_LIMITED_SOURCES unless a test needs it reachable. */
  maxSources?: number;
}

/** Token costs and caps in milliseconds of refill: one message costs 1000 / rate. */
const MESSAGE_COST_MS = 1000 / HANDSHAKE_RATE_PER_SECOND;
const MAX_TOKENS_MS = MESSAGE_COST_MS * HANDSHAKE_RATE_BURST;

interface Bucket {
  tokensMs: number;
  lastMs: number;
}

export class HandshakeAdmission {
  readonly #underLoadQueueDepth: number;
  readonly #maxSources: number;
  readonly #buckets = new Map<string, Bucket>();
  #underLoadUntilMs = -Infinity;
  #lastSweepMs = -Infinity;

  constructor(options: HandshakeAdmissionOptions) {
    if (!(options.underLoadQueueDepth >= 1)) {
      throw new RangeError('underLoadQueueDepth must be at least 1');
    }
    this.#underLoadQueueDepth = options.underLoadQueueDepth;
    this.#maxSources = options.maxSources ?? MAX_RATE_LIMITED_SOURCES;
  }

  /** The handshake queue's depth as seen at `nowMs`. */
  noteQueueDepth(depth: number, nowMs: number): void {
    if (depth >= this.#underLoadQueueDepth) {
      this.#underLoadUntilMs = nowMs + UNDER_LOAD_AFTER_TIME;
    }
  }

  isUnderLoad(nowMs: number): boolean {
    return nowMs < this.#underLoadUntilMs;
  }

  /** Takes a token from the bucket of `address` (4 or 16 bytes). */
  admit(address: Uint8Array, nowMs: number): Admission {
    const key = sourceKey(address);
    const bucket = this.#buckets.get(key);
    if (bucket !== undefined) {
      bucket.tokensMs = Math.min(MAX_TOKENS_MS, bucket.tokensMs + nowMs - bucket.lastMs);
      bucket.lastMs = nowMs;
      if (bucket.tokensMs < MESSAGE_COST_MS) return 'rate-limited';
      bucket.tokensMs -= MESSAGE_COST_MS;
      return 'admit';
    }
    if (this.#buckets.size >= this.#maxSources) {
      this.#sweep(nowMs);
      if (this.#buckets.size >= this.#maxSources) return 'table-full';
    }
    this.#buckets.set(key, { tokensMs: MAX_TOKENS_MS - MESSAGE_COST_MS, lastMs: nowMs });
    return 'admit';
  }

  /** Sources with a bucket. */
  get sources(): number {
    return this.#buckets.size;
  }

  /** Forgets buckets idle long enough to be full again; at most once per idle time. */
  #sweep(nowMs: number): void {
    if (nowMs - this.#lastSweepMs < RATE_LIMITER_IDLE_TIME) return;
    this.#lastSweepMs = nowMs;
    for (const [key, bucket] of this.#buckets) {
      if (nowMs - bucket.lastMs >= RATE_LIMITER_IDLE_TIME) this.#buckets.delete(key);
    }
  }
}

/** IPv4 addresses one by one; IPv6 by /64, which one host usually holds whole. */
function sourceKey(address: Uint8Array): string {
  const significant = address.length === 4 ? address : address.subarray(0, 8);
  return significant.join('.');
}
