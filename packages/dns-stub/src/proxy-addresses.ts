/**
 * Stable proxy addresses for names that match DNS resources. Each name gets
 * `addressesPerName` IPv4 and IPv6 addresses, handed out in order from the
 * proxy ranges the first time the name is asked for, and kept for the whole
 * session so that connections already opened to a proxy address survive a
 * changed resource list.
 */
import type { IpAddress, IpRange } from './ip-address.ts';
import { formatIpAddress, parseIpRange, rangeContains, rangeSize } from './ip-address.ts';

export interface ProxyAddressConfig {
  ipv4Range: string;
  ipv6Range: string;
  addressesPerName: number;
  /** Ranges inside the proxy ranges that are never handed out (the sentinel resolvers). */
  reservedRanges: readonly string[];
}

export interface ProxyAssignment {
  name: string;
  resourceId: string;
  ipv4: string[];
  ipv6: string[];
}

export class ProxyAddressPool {
  readonly ipv4Range: IpRange;
  readonly ipv6Range: IpRange;
  readonly #addressesPerName: number;
  readonly #reservedRanges: IpRange[];
  readonly #byName = new Map<string, ProxyAssignment>();
  readonly #byAddress = new Map<string, ProxyAssignment>();
  #nextIpv4Offset = 1n;
  #nextIpv6Offset = 1n;

  constructor(config: ProxyAddressConfig) {
    this.ipv4Range = parseIpRange(config.ipv4Range);
    this.ipv6Range = parseIpRange(config.ipv6Range);
    if (this.ipv4Range.family !== 4 || this.ipv6Range.family !== 6) {
      throw new Error('the proxy ranges must be one IPv4 and one IPv6 range');
    }
    if (!Number.isInteger(config.addressesPerName) || config.addressesPerName < 1) {
      throw new Error('addressesPerName must be a positive integer');
    }
    this.#addressesPerName = config.addressesPerName;
    this.#reservedRanges = config.reservedRanges.map(parseIpRange);
  }

  /** The name's addresses, assigned now if it has none; undefined when a range is exhausted. */
  assign(name: string, resourceId: string): ProxyAssignment | undefined {
    const existing = this.#byName.get(name);
    if (existing !== undefined) {
      existing.resourceId = resourceId;
      return existing;
    }
    const ipv4Taken = this.#take(this.ipv4Range, this.#nextIpv4Offset);
    const ipv6Taken = this.#take(this.ipv6Range, this.#nextIpv6Offset);
    if (ipv4Taken === undefined || ipv6Taken === undefined) return undefined;
    const { addresses: ipv4 } = ipv4Taken;
    const { addresses: ipv6 } = ipv6Taken;
    this.#nextIpv4Offset = ipv4Taken.nextOffset;
    this.#nextIpv6Offset = ipv6Taken.nextOffset;
    const assignment: ProxyAssignment = { name, resourceId, ipv4, ipv6 };
    this.#byName.set(name, assignment);
    for (const address of [...ipv4, ...ipv6]) this.#byAddress.set(address, assignment);
    return assignment;
  }

  /** The name a proxy address stands for (canonical address text). */
  lookup(address: string): ProxyAssignment | undefined {
    return this.#byAddress.get(address);
  }

  isProxyAddress(address: IpAddress): boolean {
    return rangeContains(this.ipv4Range, address) || rangeContains(this.ipv6Range, address);
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
