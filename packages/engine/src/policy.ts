/**
 * The per-peer policy stage (the gateway fills it): which destinations a
 * peer's packets may reach once decrypted — prefixes, each with a protocol
 * and destination port ranges. A peer without rules may reach whatever its
 * AllowedIPs let it send from; with rules, only what one of them allows.
 *
 * The control thread compiles every peer's rules into one flat table in a
 * SharedArrayBuffer that workers scan without allocating. A table with no
 * rules at all costs the data path one check of its "empty" word.
 * Port rules need the transport header: an IPv4 fragment other than the
 * first, or an IPv6 packet whose next header is not TCP/UDP/ICMPv6
 * (extension headers are not walked), matches only protocol-"any" rules.
 */
import { parsePrefix } from '@gatehouse/addresses';

export const POLICY_PROTOCOLS = ['tcp', 'udp', 'icmp', 'any'] as const;
export type PolicyProtocol = (typeof POLICY_PROTOCOLS)[number];

export interface PortRange {
  from: number;
  to: number;
}

export interface PolicyRule {
  /** Destination prefix, e.g. `10.0.0.0/24` or `fd00::/64`. */
  destination: string;
  protocol: PolicyProtocol;
  /** Destination ports (tcp and udp only); absent or empty: every port. */
  ports?: readonly PortRange[];
}

const IP_PROTOCOL_ICMP = 1;
const IP_PROTOCOL_TCP = 6;
const IP_PROTOCOL_UDP = 17;
const IP_PROTOCOL_ICMPV6 = 58;
const ANY = 0;
const PROTOCOL_CODES: Record<PolicyProtocol, number> = {
  tcp: IP_PROTOCOL_TCP,
  udp: IP_PROTOCOL_UDP,
  icmp: IP_PROTOCOL_ICMP,
  any: ANY,
};

// Table: word 0 the rule count (0: empty), then per peer slot its first rule and rule count,
// then rules of RULE_WORDS: family, prefix length, four address words, protocol, ports.
const RULES_AT = 1;
const RULE_WORDS = 8;
/** Ports word of a rule without port ranges. */
const ALL_PORTS = 0;

/** Throws a RangeError naming what is wrong with `rule`. */
export function checkPolicyRule(rule: PolicyRule): void {
  parsePrefix(rule.destination);
  if (!POLICY_PROTOCOLS.includes(rule.protocol)) {
    throw new RangeError(`policy protocol must be one of ${POLICY_PROTOCOLS.join(', ')}`);
  }
  const ports = rule.ports ?? [];
  if (ports.length > 0 && rule.protocol !== 'tcp' && rule.protocol !== 'udp') {
    throw new RangeError(`policy ports need tcp or udp, not ${rule.protocol}`);
  }
  for (const { from, to } of ports) {
    if (!Number.isInteger(from) || !Number.isInteger(to) || from < 1 || to > 65535 || from > to) {
      throw new RangeError(`bad policy port range ${from}-${to} (1-65535, from <= to)`);
    }
  }
}

/** Compiles each peer slot's rules (checked with checkPolicyRule) into a table for PolicyTable. */
export function compilePolicy(
  peers: readonly { slot: number; rules: readonly PolicyRule[] }[],
  peerSlots: number,
): SharedArrayBuffer {
  const rows: number[][] = [];
  const ranges = new Int32Array(2 * peerSlots);
  for (const { slot, rules } of peers) {
    ranges[2 * slot] = rows.length;
    for (const rule of rules) {
      const prefix = parsePrefix(rule.destination);
      const view = new DataView(new Uint8Array(16).buffer);
      new Uint8Array(view.buffer).set(prefix.address);
      const words = [0, 4, 8, 12].map((at) => view.getInt32(at));
      const base = [prefix.family, prefix.length, ...words, PROTOCOL_CODES[rule.protocol]];
      const ports = rule.ports ?? [];
      if (ports.length === 0) rows.push([...base, ALL_PORTS]);
      for (const { from, to } of ports) rows.push([...base, (from << 16) | to]);
    }
    ranges[2 * slot + 1] = rows.length - ranges[2 * slot]!;
  }
  const headerWords = RULES_AT + 2 * peerSlots;
  const table = new Int32Array(new SharedArrayBuffer((headerWords + rows.length * RULE_WORDS) * 4));
  table[0] = rows.length;
  table.set(ranges, RULES_AT);
  rows.forEach((row, index) => table.set(row, headerWords + index * RULE_WORDS));
  return table.buffer as SharedArrayBuffer;
}

export class PolicyTable {
  readonly shared: SharedArrayBuffer;
  /** No peer has rules: everything AllowedIPs let through passes. */
  readonly empty: boolean;
  readonly #words: Int32Array;
  readonly #rulesAt: number;

  constructor(shared: SharedArrayBuffer) {
    this.shared = shared;
    this.#words = new Int32Array(shared);
    this.empty = this.#words[0] === 0;
    this.#rulesAt = this.#words.length - this.#words[0]! * RULE_WORDS;
  }

  /** Whether `peer` may send the IP packet of `length` bytes at `packet[offset]` to its destination. */
  allows(peer: number, packet: Uint8Array, offset: number, length: number): boolean {
    const words = this.#words;
    const count = words[RULES_AT + 2 * peer + 1]!;
    if (count === 0) return true;
    const version = packet[offset]! >> 4;
    let protocol: number;
    let transport: number;
    let addressAt: number;
    if (version === 4) {
      protocol = packet[offset + 9]!;
      const fragmentOffset = ((packet[offset + 6]! & 0x1f) << 8) | packet[offset + 7]!;
      transport = fragmentOffset === 0 ? offset + (packet[offset]! & 0x0f) * 4 : -1;
      addressAt = offset + 16;
    } else {
      protocol = packet[offset + 6]!;
      transport = offset + 40;
      addressAt = offset + 24;
      if (protocol === IP_PROTOCOL_ICMPV6) protocol = IP_PROTOCOL_ICMP;
    }
    const hasPorts =
      transport >= 0 &&
      transport + 4 <= offset + length &&
      (protocol === IP_PROTOCOL_TCP || protocol === IP_PROTOCOL_UDP);
    const port = hasPorts ? (packet[transport + 2]! << 8) | packet[transport + 3]! : -1;
    const family = version === 4 ? 4 : 6;
    const first = this.#rulesAt + words[RULES_AT + 2 * peer]! * RULE_WORDS;
    for (let rule = first; rule < first + count * RULE_WORDS; rule += RULE_WORDS) {
      if (words[rule] !== family) continue;
      const ruleProtocol = words[rule + 6]!;
      if (ruleProtocol !== ANY && ruleProtocol !== protocol) continue;
      const ports = words[rule + 7]!;
      if (ports !== ALL_PORTS && (port < ports >>> 16 || port > (ports & 0xffff))) continue;
      if (inPrefix(words, rule, packet, addressAt)) return true;
    }
    return false;
  }
}

/** Whether the address at `packet[at]` lies in rule `rule`'s prefix. */
function inPrefix(words: Int32Array, rule: number, packet: Uint8Array, at: number): boolean {
  let remaining = words[rule + 1]!;
  for (let word = 0; remaining > 0; word++, remaining -= 32) {
    const index = at + word * 4;
    const address =
      (packet[index]! << 24) |
      (packet[index + 1]! << 16) |
      (packet[index + 2]! << 8) |
      packet[index + 3]!;
    const mask = remaining >= 32 ? -1 : ~(-1 >>> remaining);
    if (((address ^ words[rule + 2 + word]!) & mask) !== 0) return false;
  }
  return true;
}
