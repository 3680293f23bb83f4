/**
 * The real names DNS flows need resolved, for the gateway session: one entry per name shared by
 * every flow that names it, at most one resolution in flight per name and a bounded number in
 * flight in all (the rest wait their turn in order), re-resolution when the answer's TTL runs
 * out (clamped), retries with exponential backoff after a failure (the last good answer stays
 * in use meanwhile), and a resolution that never comes back counted as failed after a timeout.
 * Answers are kept sorted and deduplicated, so a resolver that rotates its records changes
 * nothing.
 */
import { formatAddress, parseAddress } from '@gatehouse/addresses';

export interface NameAnswer {
  ipv4: string[];
  ipv6: string[];
}

export interface NameTableOptions {
  minTtlMs: number;
  maxTtlMs: number;
  maxInFlight: number;
  resolveTimeoutMs: number;
  retryInitialMs: number;
  retryMaxMs: number;
  maxAddressesPerFamily: number;
}

export type ResolutionResult =
  | { kind: 'answer'; changed: boolean; flows: ReadonlySet<string>; invalidAddresses: number }
  | { kind: 'failed'; problem: string; retryInMs: number; invalidAddresses: number }
  /** Nothing asked for it (the name has no flow left, or no resolution of it is in flight). */
  | { kind: 'discarded' };

interface NameState {
  flows: Set<string>;
  answer: NameAnswer | undefined;
  phase: 'queued' | 'in-flight' | 'waiting';
  /** in-flight: when it gives up; waiting: when it resolves again. */
  at: number | undefined;
  failures: number;
}

export class NameTable {
  readonly #options: NameTableOptions;
  readonly #names = new Map<string, NameState>();
  /** Names waiting for a free resolution slot, oldest first; may hold names since gone. */
  #queue: string[] = [];
  #queueAt = 0;
  #inFlight = 0;
  #deadline: number | undefined;
  #deadlineStale = true;

  constructor(options: NameTableOptions) {
    this.#options = options;
  }

  get size(): number {
    return this.#names.size;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** `flow` needs `name` (normalised with normalizeName); a new name is queued for resolution. */
  subscribe(name: string, flow: string): void {
    const state = this.#names.get(name);
    if (state !== undefined) {
      state.flows.add(flow);
      return;
    }
    this.#names.set(name, {
      flows: new Set([flow]),
      answer: undefined,
      phase: 'queued',
      at: undefined,
      failures: 0,
    });
    this.#enqueue(name);
  }

  unsubscribe(name: string, flow: string): void {
    const state = this.#names.get(name);
    if (state === undefined) return;
    state.flows.delete(flow);
    if (state.flows.size > 0) return;
    if (state.phase === 'in-flight') this.#inFlight -= 1;
    this.#names.delete(name);
    this.#deadlineStale = true;
  }

  answer(name: string): NameAnswer | undefined {
    return this.#names.get(name)?.answer;
  }

  flows(name: string): ReadonlySet<string> {
    return this.#names.get(name)?.flows ?? new Set();
  }

  /** What a resolution of `name` came back with. */
  resolved(
    name: string,
    outcome:
      | { ok: true; ipv4: unknown; ipv6: unknown; ttlSeconds: unknown }
      | { ok: false; problem: string },
    nowMs: number,
  ): ResolutionResult {
    const state = this.#names.get(name);
    if (state === undefined || state.phase !== 'in-flight') return { kind: 'discarded' };
    this.#inFlight -= 1;
    this.#deadlineStale = true;
    let invalidAddresses = 0;
    let problem: string;
    if (outcome.ok) {
      const ipv4 = cleanAddresses(outcome.ipv4, 4, this.#options.maxAddressesPerFamily);
      const ipv6 = cleanAddresses(outcome.ipv6, 6, this.#options.maxAddressesPerFamily);
      invalidAddresses = ipv4.invalid + ipv6.invalid;
      if (ipv4.addresses.length > 0 || ipv6.addresses.length > 0) {
        const answer = { ipv4: ipv4.addresses, ipv6: ipv6.addresses };
        const changed = state.answer === undefined || !sameAnswer(state.answer, answer);
        state.answer = answer;
        state.failures = 0;
        state.phase = 'waiting';
        state.at = nowMs + this.#ttlMs(outcome.ttlSeconds);
        return { kind: 'answer', changed, flows: state.flows, invalidAddresses };
      }
      problem = 'no usable A or AAAA record';
    } else {
      problem = outcome.problem;
    }
    return { ...this.#fail(state, nowMs), problem, invalidAddresses };
  }

  /** Names whose time came: TTLs run out and retries due go back in the queue; a resolution past its timeout fails. */
  advance(nowMs: number): { timedOut: string[] } {
    const timedOut: string[] = [];
    if ((this.nextDeadline() ?? Infinity) > nowMs) return { timedOut };
    for (const [name, state] of this.#names) {
      if (state.at === undefined || state.at > nowMs) continue;
      if (state.phase === 'in-flight') {
        this.#inFlight -= 1;
        this.#fail(state, nowMs);
        timedOut.push(name);
      } else if (state.phase === 'waiting') {
        state.phase = 'queued';
        state.at = undefined;
        this.#enqueue(name);
      }
    }
    this.#deadlineStale = true;
    return { timedOut };
  }

  /** The names to resolve now, as slots allow; each is in flight until resolved() or its timeout. */
  takeRequests(nowMs: number): string[] {
    const names: string[] = [];
    while (this.#inFlight < this.#options.maxInFlight && this.#queueAt < this.#queue.length) {
      const name = this.#queue[this.#queueAt]!;
      this.#queueAt += 1;
      const state = this.#names.get(name);
      if (state === undefined || state.phase !== 'queued') continue;
      state.phase = 'in-flight';
      state.at = nowMs + this.#options.resolveTimeoutMs;
      this.#inFlight += 1;
      this.#deadlineStale = true;
      names.push(name);
    }
    if (this.#queueAt === this.#queue.length) {
      this.#queue = [];
      this.#queueAt = 0;
    }
    return names;
  }

  nextDeadline(): number | undefined {
    if (this.#deadlineStale) {
      let earliest: number | undefined;
      for (const state of this.#names.values()) {
        if (state.at !== undefined && (earliest === undefined || state.at < earliest))
          earliest = state.at;
      }
      this.#deadline = earliest;
      this.#deadlineStale = false;
    }
    return this.#deadline;
  }

  #enqueue(name: string): void {
    this.#queue.push(name);
    // Names that went while queued leave stale entries; a churning portal must not grow it.
    if (this.#queue.length - this.#queueAt > 2 * this.#names.size + 64) {
      this.#queue = this.#queue
        .slice(this.#queueAt)
        .filter((queued) => this.#names.get(queued)?.phase === 'queued');
      this.#queue = [...new Set(this.#queue)];
      this.#queueAt = 0;
    }
  }

  #fail(state: NameState, nowMs: number): { kind: 'failed'; retryInMs: number } {
    state.failures += 1;
    const retryInMs = Math.min(
      this.#options.retryMaxMs,
      this.#options.retryInitialMs * 2 ** Math.min(state.failures - 1, 30),
    );
    state.phase = 'waiting';
    state.at = nowMs + retryInMs;
    this.#deadlineStale = true;
    return { kind: 'failed', retryInMs };
  }

  #ttlMs(ttlSeconds: unknown): number {
    const seconds = typeof ttlSeconds === 'number' && Number.isFinite(ttlSeconds) ? ttlSeconds : 0;
    return Math.min(this.#options.maxTtlMs, Math.max(this.#options.minTtlMs, seconds * 1000));
  }
}

/** A DNS name as a key: lowercase, without the root's trailing dot. */
export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function cleanAddresses(
  list: unknown,
  family: 4 | 6,
  max: number,
): { addresses: string[]; invalid: number } {
  if (!Array.isArray(list)) return { addresses: [], invalid: list === undefined ? 0 : 1 };
  const addresses = new Set<string>();
  let invalid = 0;
  for (const item of list.slice(0, 4 * max)) {
    const canonical = typeof item === 'string' ? canonicalAddress(item, family) : undefined;
    if (canonical === undefined) invalid += 1;
    else addresses.add(canonical);
  }
  invalid += Math.max(0, list.length - 4 * max);
  const sorted = [...addresses].sort();
  return { addresses: sorted.slice(0, max), invalid: invalid + Math.max(0, sorted.length - max) };
}

/** `text` in canonical form when it is an address of `family`, else undefined. */
export function canonicalAddress(text: string, family: 4 | 6): string | undefined {
  if (text.length > 64) return undefined;
  try {
    const parsed = parseAddress(text);
    return parsed.family === family ? formatAddress(family, parsed.address) : undefined;
  } catch {
    return undefined;
  }
}

function sameAnswer(a: NameAnswer, b: NameAnswer): boolean {
  return a.ipv4.join() === b.ipv4.join() && a.ipv6.join() === b.ipv6.join();
}
