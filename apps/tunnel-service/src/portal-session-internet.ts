/**
 * The Internet resource's networks on its gateway's peer (pure): both families' whole address
 * space except the other resources' networks (every CIDR resource's prefix, and the proxy
 * ranges when there are DNS resources), written as the fewest prefixes. With 0.0.0.0/0 itself
 * on the peer, a packet to a resource not yet authorized would match it and go to the Internet
 * gateway instead of missing its route and asking for that resource; packets to proxy
 * addresses would go to a gateway with no mapping for them.
 */

import { formatAddress, prefixContains } from '@gatehouse/addresses';
import type { Prefix } from '@gatehouse/addresses';
import type { IpNetwork } from './tunnel-spec.ts';

/** More than this many prefixes for the rest of one family: the whole family instead. */
export const MAX_INTERNET_NETWORKS = 8_192;

/**
 * Each family's space minus `excluded`, as prefixes in address order; a family whose rest
 * would take more than MAX_INTERNET_NETWORKS prefixes is taken whole (`overflow` says so).
 */
export function internetNetworks(excluded: readonly Prefix[]): {
  networks: IpNetwork[];
  overflow: boolean;
} {
  const networks: IpNetwork[] = [];
  let overflow = false;
  for (const family of [4, 6] as const) {
    const size = family === 4 ? 4 : 16;
    const own = excluded.filter((prefix) => prefix.family === family);
    const rest: Prefix[] = [];
    const whole: Prefix = { family, address: new Uint8Array(size), length: 0 };
    if (!complement(whole, own, rest)) {
      overflow = true;
      rest.length = 0;
      rest.push(whole);
    }
    for (const prefix of rest) {
      networks.push({
        family,
        address: formatAddress(family, prefix.address),
        prefixLength: prefix.length,
      });
    }
  }
  return { networks, overflow };
}

/** Adds to `out` the parts of `prefix` outside every one of `excluded`; false past the cap. */
function complement(prefix: Prefix, excluded: readonly Prefix[], out: Prefix[]): boolean {
  const overlapping = excluded.filter((other) => overlaps(prefix, other));
  if (overlapping.length === 0) {
    out.push(prefix);
    return out.length <= MAX_INTERNET_NETWORKS;
  }
  if (overlapping.some((other) => other.length <= prefix.length)) return true;
  for (const half of halves(prefix)) if (!complement(half, overlapping, out)) return false;
  return true;
}

function overlaps(a: Prefix, b: Prefix): boolean {
  return a.length <= b.length ? prefixContains(a, b.address) : prefixContains(b, a.address);
}

function halves(prefix: Prefix): [Prefix, Prefix] {
  const upper = prefix.address.slice();
  const index = prefix.length >> 3;
  upper[index] = (upper[index] ?? 0) | (0x80 >> (prefix.length & 7));
  return [
    { family: prefix.family, address: prefix.address, length: prefix.length + 1 },
    { family: prefix.family, address: upper, length: prefix.length + 1 },
  ];
}
