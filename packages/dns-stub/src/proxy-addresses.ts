/**
 * Proxy addresses for names that match DNS resources. Each name gets
 * `addressesPerName` IPv4 and IPv6 addresses, handed out in order from the
 * proxy ranges the first time the name is asked for, and kept while they
 * are used, even when the resource list changes, so that open connections
 * survive.
 *
 * A name's addresses are taken back (reclaimed) once its last answer's TTL
 * has passed and neither the name was asked for nor its addresses carried a
 * packet (the data path's activity probe) for `idleMs`; junk names under a
 * wildcard would otherwise use up the ranges and the memory. A reclaimed
 * address stays unused (quarantined) for `quarantineMs`, longer than a
 * gateway keeps its mapping, before another name may get it. Each resource
 * has at most `maxAssignmentsPerResource` names with addresses at a time.
 */
import type { IpAddress, IpRange } from './ip-address.ts';
import { formatIpAddress, parseIpRange, rangeContains, rangeSize } from './ip-address.ts';

export interface ProxyAddressConfig {
  ipv4Range: string;
  ipv6Range: string;
  addressesPerName: number;
  /** Ranges inside the proxy ranges that are never handed out (the sentinel resolvers). */
  reservedRanges: readonly string[];
  maxAssignmentsPerResource: number;
  idleMs: number;
  quarantineMs: number;
}

export interface ProxyAssignment {
  name: string;
  resourceId: string;
  ipv4: string[];
  ipv6: string[];
}

export type AssignResult =
  | { kind: 'assigned'; assignment: ProxyAssignment }
  | { kind: 'range-exhausted' }
  | { kind: 'assignment-cap' };

/** Milliseconds since an address last carried a packet; Infinity for never. */
export type AddressIdleProbe = (address: string) => number;

interface LiveAssignment extends ProxyAssignment {
  /** When reclaiming looks at it: `idleMs` after its last answer or its last look. */
  checkAt: number;
  ttlEndsAt: number;
}

interface QuarantinedAddresses {
  ipv4: string[];
  ipv6: string[];
  freeAt: number;
}

export class ProxyAddressPool {
  readonly ipv4Range: IpRange;
  readonly ipv6Range: IpRange;
  readonly #addressesPerName: number;
  readonly #reservedRanges: IpRange[];
  readonly #maxPerResource: number;
  readonly #idleMs: number;
  readonly #quarantineMs: number;
  /** In order of `checkAt`: a touched assignment moves to the end. */
  readonly #byName = new Map<string, LiveAssignment>();
  readonly #byAddress = new Map<string, LiveAssignment>();
  readonly #perResource = new Map<string, number>();
  /** In order of `freeAt`, from `#quarantineHead` on. */
  #quarantine: QuarantinedAddresses[] = [];
  #quarantineHead = 0;
  #nextIpv4Offset = 1n;
  #nextIpv6Offset = 1n;
  #reclaimed = 0;

  constructor(config: ProxyAddressConfig) {
    this.ipv4Range = parseIpRange(config.ipv4Range);
    this.ipv6Range = parseIpRange(config.ipv6Range);
    if (this.ipv4Range.family !== 4 || this.ipv6Range.family !== 6) {
      throw new Error('the proxy ranges must be one IPv4 and one IPv6 range');
    }
    for (const [name, value] of Object.entries({
      addressesPerName: config.addressesPerName,
      maxAssignmentsPerResource: config.maxAssignmentsPerResource,
    })) {
      if (!Number.isInteger(value) || value < 1)
        throw new Error(`${name} must be a positive integer`);
    }
    this.#addressesPerName = config.addressesPerName;
    this.#reservedRanges = config.reservedRanges.map(parseIpRange);
    this.#maxPerResource = config.maxAssignmentsPerResource;
    this.#idleMs = config.idleMs;
    this.#quarantineMs = config.quarantineMs;
  }

  has(name: string): boolean {
    return this.#byName.has(name);
  }

  /** The name's addresses, assigned now if it has none; `ttlMs`: how long the answer may be cached. */
  assign(name: string, resourceId: string, now: number, ttlMs: number): AssignResult {
    const existing = this.#byName.get(name);
    if (existing !== undefined) {
      this.#count(existing.resourceId, -1);
      existing.resourceId = resourceId;
      this.#count(resourceId, 1);
      this.#touch(existing, now, now + ttlMs);
      return { kind: 'assigned', assignment: existing };
    }
    if ((this.#perResource.get(resourceId) ?? 0) >= this.#maxPerResource)
      return { kind: 'assignment-cap' };
    const addresses = this.#takeFresh() ?? this.#takeQuarantined(now);
    if (addresses === undefined) return { kind: 'range-exhausted' };
    const assignment: LiveAssignment = {
      name,
      resourceId,
      ...addresses,
      checkAt: 0,
      ttlEndsAt: 0,
    };
    this.#count(resourceId, 1);
    this.#touch(assignment, now, now + ttlMs);
    for (const address of [...assignment.ipv4, ...assignment.ipv6])
      this.#byAddress.set(address, assignment);
    return { kind: 'assigned', assignment };
  }

  /** The name a proxy address stands for (canonical address text). */
  lookup(address: string): ProxyAssignment | undefined {
    return this.#byAddress.get(address);
  }

  isProxyAddress(address: IpAddress): boolean {
    return rangeContains(this.ipv4Range, address) || rangeContains(this.ipv6Range, address);
  }

  /**
   * Takes back assignments that are due and idle, looking at no more than
   * `budget` of them (the caller comes back at `nextReclaimAt()`). One still
   * in use is looked at again `idleMs` later.
   */
  reclaim(now: number, idleOf: AddressIdleProbe, budget: number): number {
    let reclaimed = 0;
    let looked = 0;
    for (const assignment of this.#byName.values()) {
      if (assignment.checkAt > now || looked >= budget) break;
      looked++;
      // Looked at again later even if the probe throws, so that a failing probe never spins.
      this.#touch(assignment, now, assignment.ttlEndsAt);
      const addresses = [...assignment.ipv4, ...assignment.ipv6];
      if (now < assignment.ttlEndsAt || addresses.some((address) => idleOf(address) < this.#idleMs))
        continue;
      this.#byName.delete(assignment.name);
      for (const address of addresses) this.#byAddress.delete(address);
      this.#count(assignment.resourceId, -1);
      this.#quarantine.push({
        ipv4: assignment.ipv4,
        ipv6: assignment.ipv6,
        freeAt: now + this.#quarantineMs,
      });
      reclaimed++;
    }
    this.#reclaimed += reclaimed;
    return reclaimed;
  }

  /** When `reclaim` has something to look at; undefined while nothing is assigned. */
  nextReclaimAt(): number | undefined {
    for (const assignment of this.#byName.values()) return assignment.checkAt;
    return undefined;
  }

  get stats(): { assignments: number; quarantined: number; reclaimed: number } {
    return {
      assignments: this.#byName.size,
      quarantined: this.#quarantine.length - this.#quarantineHead,
      reclaimed: this.#reclaimed,
    };
  }

  #touch(assignment: LiveAssignment, now: number, ttlEndsAt: number): void {
    assignment.checkAt = now + this.#idleMs;
    assignment.ttlEndsAt = Math.max(assignment.ttlEndsAt, ttlEndsAt);
    this.#byName.delete(assignment.name);
    this.#byName.set(assignment.name, assignment);
  }

  #count(resourceId: string, change: number): void {
    const count = (this.#perResource.get(resourceId) ?? 0) + change;
    if (count === 0) this.#perResource.delete(resourceId);
    else this.#perResource.set(resourceId, count);
  }

  #takeFresh(): { ipv4: string[]; ipv6: string[] } | undefined {
    const ipv4Taken = this.#take(this.ipv4Range, this.#nextIpv4Offset);
    const ipv6Taken = this.#take(this.ipv6Range, this.#nextIpv6Offset);
    if (ipv4Taken === undefined || ipv6Taken === undefined) return undefined;
    this.#nextIpv4Offset = ipv4Taken.nextOffset;
    this.#nextIpv6Offset = ipv6Taken.nextOffset;
    return { ipv4: ipv4Taken.addresses, ipv6: ipv6Taken.addresses };
  }

  #takeQuarantined(now: number): { ipv4: string[]; ipv6: string[] } | undefined {
    const oldest = this.#quarantine[this.#quarantineHead];
    if (oldest === undefined || oldest.freeAt > now) return undefined;
    this.#quarantineHead++;
    if (this.#quarantineHead * 2 > this.#quarantine.length) {
      this.#quarantine = this.#quarantine.slice(this.#quarantineHead);
      this.#quarantineHead = 0;
    }
    return { ipv4: oldest.ipv4, ipv6: oldest.ipv6 };
  }

  #take(
    range: IpRange,
    firstOffset: bigint,
  ): { addresses: string[]; nextOffset: bigint } | undefined {
    const addresses: string[] = [];
    const size = rangeSize(range);
    let offset = firstOffset;
    while (addresses.length < this.#addressesPerName) {
      if (offset >= size) return undefined;
      const address: IpAddress = { family: range.family, value: range.base + offset };
      offset += 1n;
      if (this.#reservedRanges.some((reserved) => rangeContains(reserved, address))) continue;
      addresses.push(formatIpAddress(address));
    }
    return { addresses, nextOffset: offset };
  }
}
