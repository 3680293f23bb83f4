/**
 * Sign-in attempt limits: a sans-IO token bucket per key (an account, a source address). Time
 * is an input — every call takes `now` in epoch milliseconds — so tests drive it without
 * waiting and the limiter holds no timers.
 *
 * A bucket holds up to `burst` attempts and gains one every `refillMs`; an attempt takes one.
 * An empty bucket refuses with the time until the next attempt is allowed (for Retry-After).
 * The number of keys is bounded (`maxKeys`): when full, buckets that have refilled completely
 * (indistinguishable from a fresh one) go first, then the least recently touched.
 */
import { parseAddress } from '@gatehouse/addresses';

export interface RateLimitOptions {
  /** Attempts allowed at once. */
  burst: number;
  /** Milliseconds for one attempt to come back. */
  refillMs: number;
  /** Keys tracked at most (memory bound). */
  maxKeys?: number;
}

export type RateDecision = { allowed: true } | { allowed: false; retryAfterMs: number };

interface Bucket {
  tokens: number;
  updatedAt: number;
}

export class TokenBucketLimiter {
  readonly #burst: number;
  readonly #refillMs: number;
  readonly #maxKeys: number;
  readonly #buckets = new Map<string, Bucket>();
  #refused = 0;

  constructor(options: RateLimitOptions) {
    if (!Number.isInteger(options.burst) || options.burst < 1) {
      throw new RangeError(`burst must be a positive integer, not ${options.burst}`);
    }
    if (!Number.isFinite(options.refillMs) || options.refillMs <= 0) {
      throw new RangeError(`refillMs must be positive, not ${options.refillMs}`);
    }
    this.#burst = options.burst;
    this.#refillMs = options.refillMs;
    this.#maxKeys = options.maxKeys ?? 100_000;
  }

  /** How many attempts `key` has left at `now` (fractional while refilling). */
  available(key: string, now: number): number {
    const bucket = this.#buckets.get(key);
    return bucket === undefined ? this.#burst : this.#refilled(bucket, now);
  }

  /** Whether an attempt for `key` would be allowed at `now`, without taking it. */
  check(key: string, now: number): RateDecision {
    const tokens = this.available(key, now);
    if (tokens >= 1) return { allowed: true };
    return { allowed: false, retryAfterMs: Math.ceil((1 - tokens) * this.#refillMs) };
  }

  /** Takes one attempt for `key` at `now` if there is one; a refusal is counted. */
  take(key: string, now: number): RateDecision {
    const decision = this.check(key, now);
    if (!decision.allowed) {
      this.#refused += 1;
      return decision;
    }
    const tokens = this.available(key, now) - 1;
    this.#buckets.delete(key);
    this.#buckets.set(key, { tokens, updatedAt: now });
    this.#evict(now);
    return decision;
  }

  /**
   * Gives back one attempt taken for `key` (capped at the burst): a sign-in reserves an attempt
   * before checking the password — so concurrent guesses cannot all pass one check — and
   * returns it when the password was right, so only failed attempts are charged.
   */
  refund(key: string, now: number): void {
    const bucket = this.#buckets.get(key);
    if (bucket === undefined) return;
    const tokens = Math.min(this.#burst, this.#refilled(bucket, now) + 1);
    this.#buckets.set(key, { tokens, updatedAt: Math.max(bucket.updatedAt, now) });
  }

  /** Counts a refusal decided elsewhere (another limiter refused the same attempt). */
  noteRefused(): void {
    this.#refused += 1;
  }

  /** Attempts refused so far. */
  get refused(): number {
    return this.#refused;
  }

  /** Keys tracked now. */
  get size(): number {
    return this.#buckets.size;
  }

  #refilled(bucket: Bucket, now: number): number {
    const elapsed = Math.max(0, now - bucket.updatedAt);
    return Math.min(this.#burst, bucket.tokens + elapsed / this.#refillMs);
  }

  #evict(now: number): void {
    if (this.#buckets.size <= this.#maxKeys) return;
    // Down to 90% at once, so a flood of new keys costs one sweep per tenth, not one per key.
    const target = Math.floor(this.#maxKeys * 0.9);
    for (const [key, bucket] of this.#buckets) {
      if (this.#refilled(bucket, now) >= this.#burst) this.#buckets.delete(key);
    }
    // Still too many: the least recently touched go (Map keeps insertion order, and take re-inserts).
    for (const key of this.#buckets.keys()) {
      if (this.#buckets.size <= target) break;
      this.#buckets.delete(key);
    }
  }
}

/**
 * The rate-limit key of a source address: an IPv4 address itself (IPv4-mapped IPv6 as IPv4), an
 * IPv6 address by its /64 (one host usually holds a whole /64). Text that is no address keys as
 * itself.
 */
export function sourceAddressKey(remoteAddress: string | undefined): string {
  if (remoteAddress === undefined || remoteAddress === '') return 'unknown';
  let parsed;
  try {
    parsed = parseAddress(remoteAddress);
  } catch {
    return remoteAddress;
  }
  const bytes = parsed.address;
  if (parsed.family === 4) return bytes.join('.');
  const mapped =
    bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped) return Array.from(bytes.subarray(12)).join('.');
  const groups: string[] = [];
  for (let index = 0; index < 8; index += 2) {
    groups.push(((bytes[index]! << 8) | bytes[index + 1]!).toString(16));
  }
  return `${groups.join(':')}::/64`;
}

/** Longest user name (after normalising) a per-user rate-limit key keeps. */
const USER_KEY_MAX = 256;

/**
 * The rate-limit key of a sign-in to account `accountSlug` as `username`: the slug lowercased,
 * the user name trimmed, NFKC-normalised and lowercased (so "Alice@Example.com " and
 * "alice@example.com" share one bucket) and cut to 256 characters. The number of such keys is
 * bounded by the limiter's maxKeys.
 */
export function signInUserKey(accountSlug: string, username: string): string {
  const user = username.trim().normalize('NFKC').toLowerCase().slice(0, USER_KEY_MAX);
  return `${accountSlug.toLowerCase()}\0${user}`;
}
