/**
 * The gateway's own resolution of a DNS resource's real name: A and AAAA
 * with their TTLs, through node:dns's Resolver (c-ares), which reads the
 * system's /etc/resolv.conf. A new resolver per name, so a changed
 * resolv.conf applies to the next resolution. The TTL of an answer is the
 * smallest of its records'; the session clamps it.
 */
import { Resolver } from 'node:dns/promises';

/** What the session's handleResolution takes (the same shape as gateway-session.ts's ResolveOutcome). */
export type ResolveOutcome =
  { ok: true; ipv4: string[]; ipv6: string[]; ttlSeconds: number } | { ok: false; problem: string };

export type ResolveName = (name: string) => Promise<ResolveOutcome>;

export interface NameResolutionOptions {
  /** Per query attempt, ms (default 3000). */
  timeoutMs?: number;
  /** Attempts per server (default 2). */
  tries?: number;
  /** `address` or `address:port` servers instead of resolv.conf's (tests). */
  servers?: string[];
}

/** Answers that mean "no such records", not "could not ask". */
const NO_RECORDS = new Set(['ENODATA', 'ENOTFOUND']);

/** One family's lookup: its addresses (none for NODATA or NXDOMAIN), or why it could not be asked. */
export type FamilyAnswer =
  { ok: true; addresses: string[]; ttl: number | undefined } | { ok: false; code: string };

/** Resolves names through the system's resolvers (or `options.servers`); never rejects. */
export function systemNameResolution(options: NameResolutionOptions = {}): ResolveName {
  return async (name) => {
    const resolver = new Resolver({
      timeout: options.timeoutMs ?? 3_000,
      tries: options.tries ?? 2,
    });
    if (options.servers !== undefined) resolver.setServers(options.servers);
    const [v4, v6] = await Promise.all([
      ask(() => resolver.resolve4(name, { ttl: true })),
      ask(() => resolver.resolve6(name, { ttl: true })),
    ]);
    return outcome(name, v4, v6);
  };
}

/** The outcome of a name's two lookups. */
export function outcome(name: string, v4: FamilyAnswer, v6: FamilyAnswer): ResolveOutcome {
  const answered = [v4, v6].filter((answer) => answer.ok && answer.addresses.length > 0);
  if (answered.length === 0) {
    for (const answer of [v4, v6]) {
      if (!answer.ok) return { ok: false, problem: `resolving ${name} failed (${answer.code})` };
    }
    return { ok: false, problem: `${name} has no A or AAAA records` };
  }
  const ttls = answered.flatMap((answer) =>
    answer.ok && answer.ttl !== undefined ? [answer.ttl] : [],
  );
  return {
    ok: true,
    ipv4: v4.ok ? v4.addresses : [],
    ipv6: v6.ok ? v6.addresses : [],
    ttlSeconds: ttls.length === 0 ? 0 : Math.min(...ttls),
  };
}

async function ask(
  lookup: () => Promise<{ address: string; ttl: number }[]>,
): Promise<FamilyAnswer> {
  try {
    const records = await lookup();
    const addresses = [...new Set(records.map((record) => record.address))];
    const ttl = records.length === 0 ? undefined : Math.min(...records.map((record) => record.ttl));
    return { ok: true, addresses, ttl };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
    if (NO_RECORDS.has(code)) return { ok: true, addresses: [], ttl: undefined };
    return { ok: false, code };
  }
}
