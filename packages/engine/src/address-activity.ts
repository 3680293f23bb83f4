/**
 * When addresses of a few watched ranges (the DNS stub's proxy ranges) last
 * carried a packet, so that the stub can take back proxy addresses nobody
 * uses. The data path stamps the destination of outgoing and the source of
 * incoming packets; a packet outside the watched ranges costs a version
 * check and a prefix compare that fails on its first bytes.
 *
 * Stamps are whole seconds since `epochMs` (monotonicMs), 0 for never, in
 * one Int32Array slot per address offset modulo the table size per family.
 * Addresses that share a slot share a stamp: a collision can only make an
 * address look active, never idle, so it is never taken back wrongly.
 */
import { parseAddress } from '@gatehouse/udp';

import { parsePrefix } from './allowed-ips.ts';

export const ACTIVITY_SLOTS_PER_FAMILY = 1 << 16;

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
  /** The prefix's last 16 bits: offsets count from the range's first address. */
  low16: number;
}

export class AddressActivity {
  readonly shared: SharedAddressActivity;
  readonly #stamps: Int32Array;
  readonly #ipv4: WatchedRange | undefined;
  readonly #ipv6: WatchedRange | undefined;

  static create(ranges: readonly string[], epochMs: number): AddressActivity {
    const stamps = new SharedArrayBuffer(2 * ACTIVITY_SLOTS_PER_FAMILY * 4);
    return new AddressActivity({ stamps, epochMs, ranges: [...ranges] });
  }

  constructor(shared: SharedAddressActivity) {
    this.shared = shared;
    this.#stamps = new Int32Array(shared.stamps);
    const watched: Partial<Record<4 | 6, WatchedRange>> = {};
    for (const range of shared.ranges) {
      const { family, address, length } = parsePrefix(range);
      if (watched[family] !== undefined)
        throw new RangeError(`more than one watched IPv${family} range: ${range}`);
      const size = address.length;
      watched[family] = {
        prefix: address,
        length,
        low16: (address[size - 2]! << 8) | address[size - 1]!,
      };
    }
    this.#ipv4 = watched[4];
    this.#ipv6 = watched[6];
  }

  /** An IP packet at `offset` of `data` is leaving through the tunnel. */
  noteDestination(data: Uint8Array, offset: number, nowMs: number): void {
    const version = data[offset]! >> 4;
    if (version === 4) this.#note(this.#ipv4, 0, data, offset + 16, 4, nowMs);
    else if (version === 6) this.#note(this.#ipv6, 1, data, offset + 24, 16, nowMs);
  }

  /** An IP packet at `offset` of `data` arrived through the tunnel. */
  noteSource(data: Uint8Array, offset: number, nowMs: number): void {
    const version = data[offset]! >> 4;
    if (version === 4) this.#note(this.#ipv4, 0, data, offset + 12, 4, nowMs);
    else if (version === 6) this.#note(this.#ipv6, 1, data, offset + 8, 16, nowMs);
  }

  /** Milliseconds since `address` last carried a packet; Infinity for never or an unwatched address. */
  idleMs(address: string, nowMs: number): number {
    const { family, address: bytes } = parseAddress(address);
    const range = family === 4 ? this.#ipv4 : this.#ipv6;
    if (range === undefined || !inRange(range, bytes, 0)) return Infinity;
    const stamp = Atomics.load(
      this.#stamps,
      slotOf(range, family === 4 ? 0 : 1, bytes, 0, bytes.length),
    );
    if (stamp === 0) return Infinity;
    // The end of the stamped second: idle time is never overestimated.
    return Math.max(0, nowMs - (this.shared.epochMs + stamp * 1000));
  }

  #note(
    range: WatchedRange | undefined,
    table: number,
    data: Uint8Array,
    at: number,
    size: number,
    nowMs: number,
  ): void {
    if (range === undefined || !inRange(range, data, at)) return;
    const stamp = Math.floor((nowMs - this.shared.epochMs) / 1000) + 1;
    Atomics.store(this.#stamps, slotOf(range, table, data, at, size), stamp);
  }
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

function slotOf(
  range: WatchedRange,
  table: number,
  data: Uint8Array,
  at: number,
  size: number,
): number {
  const low16 = (data[at + size - 2]! << 8) | data[at + size - 1]!;
  return (
    table * ACTIVITY_SLOTS_PER_FAMILY + ((low16 - range.low16) & (ACTIVITY_SLOTS_PER_FAMILY - 1))
  );
}
