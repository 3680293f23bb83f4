/**
 * A peer's policy as the engine takes it: the union of its flows' rules, each flow's
 * destinations crossed with its resource's filters. The union is normalised — one rule per
 * destination and protocol, port ranges merged, a protocol-"any" rule absorbing the others of
 * its destination, destinations in canonical text and sorted — so the same flows always give
 * the same rules, whatever order they came in (the engine keeps a session when its peer's
 * config is unchanged).
 */
import type { PolicyRule, PortRange } from '@gatehouse/engine';
import type { PortalFilter } from '@gatehouse/protocol';

type Protocol = 'tcp' | 'udp' | 'icmp';
type Ports = PortRange[] | 'all';

export class PolicyUnion {
  readonly #byDestination = new Map<string, Map<Protocol, Ports> | 'any'>();
  /** Filter entries that allow only port 0, which the engine cannot express (dropped). */
  unenforceable = 0;

  /** Adds what `filters` allow to each of `destinations` (canonical prefixes); returns whether it allowed anything. */
  add(destinations: readonly string[], filters: readonly PortalFilter[]): boolean {
    if (destinations.length === 0) return false;
    const allowed = filterAllowances(filters);
    this.unenforceable += allowed.unenforceable;
    if (allowed.any) {
      for (const destination of destinations) this.#byDestination.set(destination, 'any');
      return true;
    }
    if (allowed.protocols.size === 0) return false;
    for (const destination of destinations) {
      let protocols = this.#byDestination.get(destination);
      if (protocols === 'any') continue;
      if (protocols === undefined) {
        protocols = new Map();
        this.#byDestination.set(destination, protocols);
      }
      for (const [protocol, ports] of allowed.protocols) {
        const current = protocols.get(protocol);
        if (current === 'all' || ports === 'all') protocols.set(protocol, 'all');
        else protocols.set(protocol, [...(current ?? []), ...ports]);
      }
    }
    return true;
  }

  /** The rules, and the rows they cost the engine's table (one per port range). */
  rules(): { rules: PolicyRule[]; rows: number } {
    const rules: PolicyRule[] = [];
    let rows = 0;
    const destinations = [...this.#byDestination.keys()].sort(compareText);
    for (const destination of destinations) {
      const protocols = this.#byDestination.get(destination)!;
      if (protocols === 'any') {
        rules.push({ destination, protocol: 'any' });
        rows += 1;
        continue;
      }
      for (const protocol of ['tcp', 'udp', 'icmp'] as const) {
        const ports = protocols.get(protocol);
        if (ports === undefined) continue;
        if (ports === 'all') {
          rules.push({ destination, protocol });
          rows += 1;
        } else {
          const merged = mergeRanges(ports);
          rules.push({ destination, protocol, ports: merged });
          rows += merged.length;
        }
      }
    }
    return { rules, rows };
  }
}

/** A stable text key of a rule list (for telling whether a peer's policy changed). */
export function rulesKey(rules: readonly PolicyRule[]): string {
  return rules
    .map(
      (rule) =>
        `${rule.destination} ${rule.protocol}${(rule.ports ?? []).map((r) => ` ${r.from}-${r.to}`).join('')}`,
    )
    .join(',');
}

interface Allowances {
  any: boolean;
  protocols: Map<Protocol, Ports>;
  unenforceable: number;
}

function filterAllowances(filters: readonly PortalFilter[]): Allowances {
  const protocols = new Map<Protocol, Ports>();
  if (filters.length === 0) return { any: true, protocols, unenforceable: 0 };
  let unenforceable = 0;
  for (const filter of filters) {
    if (filter.protocol === 'icmp') {
      protocols.set('icmp', 'all');
      continue;
    }
    // The engine's port ranges start at 1: port 0 is no port a connection uses.
    const from = Math.max(1, filter.port_range_start ?? 0);
    const to = filter.port_range_end ?? 65535;
    if (from > to) {
      unenforceable += 1;
      continue;
    }
    const current = protocols.get(filter.protocol);
    if (current === 'all') continue;
    if (from === 1 && to === 65535) protocols.set(filter.protocol, 'all');
    else protocols.set(filter.protocol, [...(current ?? []), { from, to }]);
  }
  return { any: false, protocols, unenforceable };
}

function mergeRanges(ranges: readonly PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((a, b) => a.from - b.from || a.to - b.to);
  const merged: PortRange[] = [];
  for (const range of sorted) {
    const last = merged[merged.length - 1];
    if (last !== undefined && range.from <= last.to + 1) last.to = Math.max(last.to, range.to);
    else merged.push({ from: range.from, to: range.to });
  }
  return merged;
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
