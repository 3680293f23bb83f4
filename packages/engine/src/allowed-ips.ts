/**
 * AllowedIPs: the longest-prefix-match table from IP prefixes to peer slots,
 * used to pick the peer for an outgoing packet (by destination) and to check
 * that a decrypted packet came from an address its peer may use (by source).
 *
 * The control thread edits an `AllowedIps` and compiles it into an immutable
 * `AllowedIpsTable`: one binary trie per address family in a
 * SharedArrayBuffer, which workers attach to and read without locks or
 * allocation. A change compiles a fresh table that replaces the old one.
 */
import { formatPrefix, parsePrefix } from '@gatehouse/addresses';
import type { Prefix } from '@gatehouse/addresses';

export const NO_PEER = -1;

/** Structured-cloneable form of a compiled table, for posting to workers. */
export interface SharedAllowedIpsTable {
  ipv4: SharedArrayBuffer;
  ipv6: SharedArrayBuffer;
}

export class AllowedIps {
  readonly #entries = new Map<string, { prefix: Prefix; peer: number }>();

  /** Routes `cidr` (host bits are cleared, as WireGuard does) to `peer`, replacing any previous owner. */
  set(cidr: string, peer: number): void {
    if (!Number.isInteger(peer) || peer < 0) throw new RangeError(`bad peer slot ${peer}`);
    const prefix = parsePrefix(cidr);
    this.#entries.set(formatPrefix(prefix), { prefix, peer });
  }

  delete(cidr: string): boolean {
    return this.#entries.delete(formatPrefix(parsePrefix(cidr)));
  }

  deletePeer(peer: number): void {
    for (const [key, entry] of this.#entries) if (entry.peer === peer) this.#entries.delete(key);
  }

  /** The prefixes (normalised, as `address/length`) routed to each peer. */
  entries(): { cidr: string; peer: number }[] {
    return [...this.#entries.values()].map(({ prefix, peer }) => ({
      cidr: formatPrefix(prefix),
      peer,
    }));
  }

  compile(): AllowedIpsTable {
    const tries = { 4: new TrieBuilder(), 6: new TrieBuilder() };
    for (const { prefix, peer } of this.#entries.values())
      tries[prefix.family].insert(prefix, peer);
    return new AllowedIpsTable({ ipv4: tries[4].toShared(), ipv6: tries[6].toShared() });
  }
}

// A trie node is three Int32 words: child for bit 0, child for bit 1 (0: none), peer (NO_PEER: none).
const NODE_WORDS = 3;

export class AllowedIpsTable {
  readonly shared: SharedAllowedIpsTable;
  readonly #ipv4: Int32Array;
  readonly #ipv6: Int32Array;

  constructor(shared: SharedAllowedIpsTable) {
    this.shared = shared;
    this.#ipv4 = new Int32Array(shared.ipv4);
    this.#ipv6 = new Int32Array(shared.ipv6);
  }

  /** The peer whose longest prefix holds the address at `bytes[offset]` (4 or 16 bytes), or NO_PEER. */
  lookup(family: number, bytes: Uint8Array, offset: number): number {
    const nodes = family === 4 ? this.#ipv4 : this.#ipv6;
    const bits = family === 4 ? 32 : 128;
    let node = 0;
    let best = nodes[2]!;
    for (let bit = 0; bit < bits; bit++) {
      const byte = bytes[offset + (bit >> 3)]!;
      const child = nodes[node + ((byte >> (7 - (bit & 7))) & 1)]!;
      if (child === 0) break;
      node = child;
      const peer = nodes[node + 2]!;
      if (peer !== NO_PEER) best = peer;
    }
    return best;
  }

  /** The peer for an IP packet's destination address; NO_PEER for non-IP. */
  lookupDestination(packet: Uint8Array, offset: number): number {
    const version = packet[offset]! >> 4;
    if (version === 4) return this.lookup(4, packet, offset + 16);
    if (version === 6) return this.lookup(6, packet, offset + 24);
    return NO_PEER;
  }

  /** The peer that owns an IP packet's source address; NO_PEER for non-IP. */
  lookupSource(packet: Uint8Array, offset: number): number {
    const version = packet[offset]! >> 4;
    if (version === 4) return this.lookup(4, packet, offset + 12);
    if (version === 6) return this.lookup(6, packet, offset + 8);
    return NO_PEER;
  }
}

class TrieBuilder {
  #nodes = new Int32Array(NODE_WORDS * 64);
  #used = NODE_WORDS;

  constructor() {
    this.#nodes[2] = NO_PEER;
  }

  insert(prefix: Prefix, peer: number): void {
    let node = 0;
    for (let bit = 0; bit < prefix.length; bit++) {
      const branch = (prefix.address[bit >> 3]! >> (7 - (bit & 7))) & 1;
      let child = this.#nodes[node + branch]!;
      if (child === 0) {
        child = this.#allocate();
        this.#nodes[node + branch] = child;
      }
      node = child;
    }
    this.#nodes[node + 2] = peer;
  }

  toShared(): SharedArrayBuffer {
    const shared = new SharedArrayBuffer(this.#used * 4);
    new Int32Array(shared).set(this.#nodes.subarray(0, this.#used));
    return shared;
  }

  #allocate(): number {
    if (this.#used + NODE_WORDS > this.#nodes.length) {
      const grown = new Int32Array(this.#nodes.length * 2);
      grown.set(this.#nodes);
      this.#nodes = grown;
    }
    const node = this.#used;
    this.#used += NODE_WORDS;
    this.#nodes[node + 2] = NO_PEER;
    return node;
  }
}
