/**
 * When addresses of a few watched ranges (the DNS stub's proxy ranges) last
 * carried a packet, so that the stub can take back proxy addresses nobody
 * uses. The data path stamps the destination of outgoing and the source of
 * incoming packets; a packet outside the watched ranges costs a version
 * check and a prefix compare that fails on its first bytes.
 *
 * Stamps are whole seconds since `epochMs` (monotonicMs), 0 for never, one
 * Int32Array word per address of each range: packets to one address never
 * make another look active (with shared slots, pinging unassigned addresses
 * kept every assignment alive). A /11 costs 8 MiB of address space, of which
 * only the pages of stamped addresses become resident.
 */
import { parseAddress, parsePrefix } from '@gatehouse/addresses';

/** The largest watched range: 2^21 addresses, Firezone's proxy ranges (a /11 and a /107). */
export const MAX_WATCHED_RANGE_ADDRESSES = 1 << 21;

/** Structured-cloneable, for the workers. */
export interface SharedAddressActivity {
  stamps: SharedArrayBuffer;
  epochMs: number;
  /** At most one prefix per family. */
  ranges: readonly string[];
}

interface WatchedRange {
  prefix: Uint8Array;
  length: number;
  /** The range's first word in the stamps. */
  base: number;
  /** Addresses in the range, less one: an address's low bits are its offset. */
  offsetMask: number;
}

export class AddressActivity {
  readonly shared: SharedAddressActivity;
  readonly #stamps: Int32Array;
  readonly #ipv4: WatchedRange | undefined;
  readonly #ipv6: WatchedRange | undefined;

  /** Throws a RangeError for two ranges of one family or one larger than MAX_WATCHED_RANGE_ADDRESSES. */
  static create(ranges: readonly string[], epochMs: number): AddressActivity {
    const words = ranges.reduce((sum, range) => sum + watchedRangeSize(range), 0);
    const stamps = new SharedArrayBuffer(words * 4);
    return new AddressActivity({ stamps, epochMs, ranges: [...ranges] });
  }

  constructor(shared: SharedAddressActivity) {
    this.shared = shared;
    this.#stamps = new Int32Array(shared.stamps);
    const watched: Partial<Record<4 | 6, WatchedRange>> = {};
    let base = 0;
    for (const range of shared.ranges) {
      const size = watchedRangeSize(range);
      const { family, address, length } = parsePrefix(range);
      if (watched[family] !== undefined)
        throw new RangeError(`more than one watched IPv${family} range: ${range}`);
      watched[family] = { prefix: address, length, base, offsetMask: size - 1 };
      base += size;
    }
    this.#ipv4 = watched[4];
    this.#ipv6 = watched[6];
  }

  /** An IP packet at `offset` of `data` is leaving through the tunnel. */
  noteDestination(data: Uint8Array, offset: number, nowMs: number): void {
    const version = data[offset]! >> 4;
    if (version === 4) this.#note(this.#ipv4, data, offset + 16, 4, nowMs);
    else if (version === 6) this.#note(this.#ipv6, data, offset + 24, 16, nowMs);
  }

  /** An IP packet at `offset` of `data` arrived through the tunnel. */
  noteSource(data: Uint8Array, offset: number, nowMs: number): void {
    const version = data[offset]! >> 4;
    if (version === 4) this.#note(this.#ipv4, data, offset + 12, 4, nowMs);
    else if (version === 6) this.#note(this.#ipv6, data, offset + 8, 16, nowMs);
  }

  /** Milliseconds since `address` last carried a packet; Infinity for never or an unwatched address. */
  idleMs(address: string, nowMs: number): number {
    const { family, address: bytes } = parseAddress(address);
    const range = family === 4 ? this.#ipv4 : this.#ipv6;
    if (range === undefined || !inRange(range, bytes, 0)) return Infinity;
    const stamp = Atomics.load(this.#stamps, wordOf(range, bytes, 0, bytes.length));
    if (stamp === 0) return Infinity;
    // The end of the stamped second: idle time is never overestimated.
    return Math.max(0, nowMs - (this.shared.epochMs + stamp * 1000));
  }

  #note(
    range: WatchedRange | undefined,
    data: Uint8Array,
    at: number,
    size: number,
    nowMs: number,
  ): void {
    if (range === undefined || !inRange(range, data, at)) return;
    const stamp = Math.floor((nowMs - this.shared.epochMs) / 1000) + 1;
    Atomics.store(this.#stamps, wordOf(range, data, at, size), stamp);
  }
}

/** Addresses in `range`; a RangeError names the maximum when it has more. */
function watchedRangeSize(range: string): number {
  const { family, length } = parsePrefix(range);
  const bits = family === 4 ? 32 : 128;
  const hostBits = bits - length;
  const maxHostBits = Math.log2(MAX_WATCHED_RANGE_ADDRESSES);
  if (hostBits > maxHostBits) {
    throw new RangeError(
      `watched range ${range} has 2^${hostBits} addresses; at most 2^${maxHostBits} ` +
        `are watched (a /${bits - maxHostBits} or longer prefix)`,
    );
  }
  return 2 ** hostBits;
}

function inRange(range: WatchedRange, data: Uint8Array, at: number): boolean {
  const whole = range.length >> 3;
  for (let index = 0; index < whole; index++) {
    if (data[at + index] !== range.prefix[index]) return false;
  }
  const bits = range.length & 7;
  if (bits === 0) return true;
  const mask = (0xff << (8 - bits)) & 0xff;
  return (data[at + whole]! & mask) === range.prefix[whole];
}

/** A range has at most 2^21 addresses, so an offset lies in the address's last three bytes. */
function wordOf(range: WatchedRange, data: Uint8Array, at: number, size: number): number {
  const low24 = (data[at + size - 3]! << 16) | (data[at + size - 2]! << 8) | data[at + size - 1]!;
  return range.base + (low24 & range.offsetMask);
}
