/**
 * A token bucket per client (source address) for the queries that cost the
 * stub state: names that would get new proxy addresses, and PTR lookups of
 * proxy addresses. Time is an input (milliseconds).
 */

export interface ClientRateLimitConfig {
  perSecond: number;
  burst: number;
  /** Buckets kept at most; the least recently used goes first (it is full again, or nearly). */
  maxClients: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class ClientRateLimit {
  readonly #config: ClientRateLimitConfig;
  /** Least recently used first. */
  readonly #buckets = new Map<string, Bucket>();

  constructor(config: ClientRateLimitConfig) {
    if (!(config.perSecond > 0) || !(config.burst >= 1) || !(config.maxClients >= 1))
      throw new Error('a client rate limit needs a positive rate, burst and client count');
    this.#config = config;
  }

  /** Takes one token of `client`'s; false when it has none left. */
  take(client: string, now: number): boolean {
    const { perSecond, burst, maxClients } = this.#config;
    const bucket = this.#buckets.get(client) ?? { tokens: burst, at: now };
    this.#buckets.delete(client);
    bucket.tokens = Math.min(
      burst,
      bucket.tokens + (Math.max(0, now - bucket.at) * perSecond) / 1000,
    );
    bucket.at = now;
    const allowed = bucket.tokens >= 1;
    if (allowed) bucket.tokens -= 1;
    this.#buckets.set(client, bucket);
    if (this.#buckets.size > maxClients) {
      for (const oldest of this.#buckets.keys()) {
        this.#buckets.delete(oldest);
        break;
      }
    }
    return allowed;
  }
}
