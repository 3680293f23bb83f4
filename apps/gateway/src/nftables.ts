/**
 * The gateway's nftables table, `inet gatehouse_gateway`, the only table it
 * ever creates or deletes:
 *
 *   prerouting (nat, dstnat)   from the TUN: DNAT by the maps dnat4/dnat6,
 *                              keyed (client address . proxy address) → real address
 *   forward (filter)           from the TUN and still addressed to a proxy range
 *                              (no mapping): counted in `proxy_unmapped`, dropped
 *   postrouting (nat, srcnat)  from a tunnel range, leaving by another interface: masquerade
 *
 * renderTable is pure: the plan in, `nft -f` text out. Every apply is one
 * transaction that declares the table (a no-op when it exists), flushes its
 * chains and maps and fills them again, so the table changes atomically,
 * conntrack keeps every NAT binding already made, and the named counter keeps
 * counting. Anything else in the ruleset is never touched.
 */
import { formatAddress, normalizePrefix, parseAddress } from '@gatehouse/addresses';

import type { SystemCommand } from './system-commands.ts';
import { interfaceNameProblem } from './tun-interface.ts';

export const TABLE_FAMILY = 'inet';
export const TABLE_NAME = 'gatehouse_gateway';
export const PROXY_UNMAPPED_COUNTER = 'proxy_unmapped';

const TABLE = `${TABLE_FAMILY} ${TABLE_NAME}`;

/** What the table is made from (a GatewayPlan has these fields). */
export interface TablePlan {
  tunnelRanges: { ipv4: string; ipv6: string } | undefined;
  proxyRanges: { ipv4: string; ipv6: string } | undefined;
  dnat: readonly {
    family: 4 | 6;
    clientAddress: string;
    proxyAddress: string;
    realAddress: string;
  }[];
}

export interface RenderedTable {
  /** The `nft -f` input. */
  text: string;
  /** DNAT entries left out because an earlier one had the same (client, proxy) key. */
  duplicateMappings: number;
}

/**
 * The `nft -f` text that makes the table hold exactly `plan` for TUN
 * `interfaceName`. Throws a RangeError for an address, prefix or family that
 * is not what it claims (the plan is checked before, so that is a bug).
 */
export function renderTable(plan: TablePlan, interfaceName: string): RenderedTable {
  checkInterfaceName(interfaceName);
  const tun = `"${interfaceName}"`;
  const lines = [
    `table ${TABLE} {`,
    `\tcounter ${PROXY_UNMAPPED_COUNTER} {`,
    '\t}',
    '\tmap dnat4 {',
    '\t\ttype ipv4_addr . ipv4_addr : ipv4_addr',
    '\t}',
    '\tmap dnat6 {',
    '\t\ttype ipv6_addr . ipv6_addr : ipv6_addr',
    '\t}',
    '\tchain prerouting {',
    '\t\ttype nat hook prerouting priority dstnat; policy accept;',
    '\t}',
    '\tchain forward {',
    '\t\ttype filter hook forward priority filter; policy accept;',
    '\t}',
    '\tchain postrouting {',
    '\t\ttype nat hook postrouting priority srcnat; policy accept;',
    '\t}',
    '}',
    `flush chain ${TABLE} prerouting`,
    `flush chain ${TABLE} forward`,
    `flush chain ${TABLE} postrouting`,
    `flush map ${TABLE} dnat4`,
    `flush map ${TABLE} dnat6`,
  ];

  const elements: Record<4 | 6, string[]> = { 4: [], 6: [] };
  const keys = new Set<string>();
  let duplicateMappings = 0;
  for (const mapping of plan.dnat) {
    const client = address(mapping.clientAddress, mapping.family);
    const proxy = address(mapping.proxyAddress, mapping.family);
    const real = address(mapping.realAddress, mapping.family);
    const key = `${client} . ${proxy}`;
    if (keys.has(key)) {
      duplicateMappings++;
      continue;
    }
    keys.add(key);
    elements[mapping.family].push(`${key} : ${real}`);
  }
  for (const family of [4, 6] as const) {
    if (elements[family].length > 0) {
      lines.push(`add element ${TABLE} dnat${family} { ${elements[family].join(', ')} }`);
    }
  }

  lines.push(
    `add rule ${TABLE} prerouting iifname ${tun} dnat ip to ip saddr . ip daddr map @dnat4`,
    `add rule ${TABLE} prerouting iifname ${tun} dnat ip6 to ip6 saddr . ip6 daddr map @dnat6`,
  );
  if (plan.proxyRanges !== undefined) {
    const v4 = prefix(plan.proxyRanges.ipv4, 4);
    const v6 = prefix(plan.proxyRanges.ipv6, 6);
    lines.push(
      `add rule ${TABLE} forward iifname ${tun} ip daddr ${v4} counter name "${PROXY_UNMAPPED_COUNTER}" drop`,
      `add rule ${TABLE} forward iifname ${tun} ip6 daddr ${v6} counter name "${PROXY_UNMAPPED_COUNTER}" drop`,
    );
  }
  if (plan.tunnelRanges !== undefined) {
    const v4 = prefix(plan.tunnelRanges.ipv4, 4);
    const v6 = prefix(plan.tunnelRanges.ipv6, 6);
    lines.push(
      `add rule ${TABLE} postrouting ip saddr ${v4} oifname != ${tun} masquerade`,
      `add rule ${TABLE} postrouting ip6 saddr ${v6} oifname != ${tun} masquerade`,
    );
  }
  return { text: `${lines.join('\n')}\n`, duplicateMappings };
}

/** `nft -f` text that deletes the table if it exists (declaring it first makes the delete never fail). */
export function renderTableRemoval(): string {
  return `table ${TABLE}\ndelete table ${TABLE}\n`;
}

export interface UnmappedCount {
  packets: number;
  bytes: number;
}

/** Applies the table through `nft` (the system's unless told) and removes it. */
export class GatewayTable {
  readonly interfaceName: string;
  readonly #nft: SystemCommand;
  /** Applies that failed (nft refused the text or could not run). */
  applyFailures = 0;
  /** DNAT entries the last apply left out as duplicates. */
  duplicateMappings = 0;

  constructor(options: { interfaceName: string; nft: SystemCommand }) {
    checkInterfaceName(options.interfaceName);
    this.interfaceName = options.interfaceName;
    this.#nft = options.nft;
  }

  /** Makes the table hold exactly `plan`, in one transaction. */
  async apply(plan: TablePlan): Promise<void> {
    const rendered = renderTable(plan, this.interfaceName);
    this.duplicateMappings = rendered.duplicateMappings;
    try {
      await this.#nft(['-f', '-'], rendered.text);
    } catch (error) {
      this.applyFailures++;
      throw error;
    }
  }

  /** Deletes the table; nothing happens when it is not there. */
  async remove(): Promise<void> {
    await this.#nft(['-f', '-'], renderTableRemoval());
  }

  /** The `proxy_unmapped` counter; undefined when the table is not there. */
  async unmapped(): Promise<UnmappedCount | undefined> {
    let output: string;
    try {
      output = await this.#nft([
        '-j',
        'list',
        'counter',
        TABLE_FAMILY,
        TABLE_NAME,
        PROXY_UNMAPPED_COUNTER,
      ]);
    } catch {
      return undefined;
    }
    return parseCounter(output);
  }
}

/** The counter in `nft -j list counter` output; undefined when it is not there. */
export function parseCounter(json: string): UnmappedCount | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    return undefined;
  }
  const items = (parsed as { nftables?: unknown })?.nftables;
  if (!Array.isArray(items)) return undefined;
  for (const item of items) {
    const counter = (item as { counter?: { name?: unknown; packets?: unknown; bytes?: unknown } })
      ?.counter;
    if (
      counter?.name === PROXY_UNMAPPED_COUNTER &&
      typeof counter.packets === 'number' &&
      typeof counter.bytes === 'number'
    ) {
      return { packets: counter.packets, bytes: counter.bytes };
    }
  }
  return undefined;
}

/** nft gets the name quoted: nothing but an interface name's characters may get in. */
function checkInterfaceName(name: string): void {
  const problem = interfaceNameProblem(name);
  if (problem !== undefined) throw new RangeError(problem);
}

function address(text: string, family: 4 | 6): string {
  const parsed = parseAddress(text);
  if (parsed.family !== family) {
    throw new RangeError(`${JSON.stringify(text)} is not an IPv${family} address`);
  }
  return formatAddress(parsed.family, parsed.address);
}

function prefix(text: string, family: 4 | 6): string {
  const normalized = normalizePrefix(text);
  if (parseAddress(normalized.split('/')[0]!).family !== family) {
    throw new RangeError(`${JSON.stringify(text)} is not an IPv${family} prefix`);
  }
  return normalized;
}
