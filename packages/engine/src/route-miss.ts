/**
 * Route misses: packets to an address no peer's AllowedIPs cover. A data
 * worker holds the first few per destination (the portal authorizes on the
 * first packet and then configures a peer for it) and reports each new
 * destination once through a ring to the control thread; when a new
 * AllowedIPs table covers a held destination, its packets go on in order.
 * Memory is allocated once, at the first miss; nothing per packet.
 */
import { Doorbell } from '@gatehouse/wireguard';
import type { SharedTransportMemory } from '@gatehouse/wireguard';

import { NO_PEER } from './allowed-ips.ts';
import type { AllowedIpsTable } from './allowed-ips.ts';

/** Packets held per destination; later ones are dropped (route-miss-overflow). */
export const ROUTE_MISS_PACKETS_PER_DESTINATION = 4;
/** Destinations held at once per worker; a new one evicts the oldest (its packets: route-miss-overflow). */
export const ROUTE_MISS_DESTINATIONS = 256;
/** A held packet older than this is dropped (route-miss-expired). */
export const ROUTE_MISS_HOLD_MS = 10_000;

const FREE = 0;

/** What happened to held packets, for the caller's drop counters. */
export interface RouteMissDrops {
  overflow: number;
  expired: number;
}

export class RouteMissHold {
  readonly #packetBytes: number;
  readonly #ring: RouteMissRing;
  #arena: Uint8Array | undefined;
  readonly #family = new Uint8Array(ROUTE_MISS_DESTINATIONS);
  readonly #address = new Uint8Array(ROUTE_MISS_DESTINATIONS * 16);
  readonly #count = new Uint8Array(ROUTE_MISS_DESTINATIONS);
  /** When each destination was first held: the oldest is evicted first. */
  readonly #since = new Float64Array(ROUTE_MISS_DESTINATIONS);
  readonly #heldAt = new Float64Array(ROUTE_MISS_DESTINATIONS * ROUTE_MISS_PACKETS_PER_DESTINATION);
  readonly #lengths = new Uint16Array(ROUTE_MISS_DESTINATIONS * ROUTE_MISS_PACKETS_PER_DESTINATION);
  #used = 0;
  readonly drops: RouteMissDrops = { overflow: 0, expired: 0 };

  constructor(mtu: number, ring: RouteMissRing) {
    this.#packetBytes = mtu;
    this.#ring = ring;
  }

  /** Packets held now. */
  get holding(): number {
    let held = 0;
    for (let index = 0; index < ROUTE_MISS_DESTINATIONS; index++) held += this.#count[index]!;
    return held;
  }

  /**
   * Holds the IP packet at `packet[offset]` (`length` bytes, at most the
   * MTU), whose destination no peer covers. Multicast and broadcast (the
   * kernel's own neighbour discovery and MLD among them) name no resource:
   * they are neither held nor reported, only counted by the caller.
   */
  hold(packet: Uint8Array, offset: number, length: number, nowMs: number): void {
    const version = packet[offset]! >> 4;
    if ((version !== 4 && version !== 6) || length > this.#packetBytes) {
      this.drops.overflow++;
      return;
    }
    const family = version;
    const at = offset + (family === 4 ? 16 : 24);
    if (family === 4 ? packet[at]! >= 224 : packet[at] === 0xff) return;
    const size = family === 4 ? 4 : 16;
    let index = this.#find(family, packet, at, size);
    if (index < 0) {
      index = this.#claim(nowMs);
      this.#family[index] = family;
      this.#address.fill(0, index * 16, index * 16 + 16);
      for (let byte = 0; byte < size; byte++) this.#address[index * 16 + byte] = packet[at + byte]!;
      this.#since[index] = nowMs;
      this.#ring.push(family, this.#address, index * 16);
    }
    const count = this.#count[index]!;
    if (count === ROUTE_MISS_PACKETS_PER_DESTINATION) {
      this.drops.overflow++;
      return;
    }
    const entry = index * ROUTE_MISS_PACKETS_PER_DESTINATION + count;
    this.#arena ??= new Uint8Array(
      ROUTE_MISS_DESTINATIONS * ROUTE_MISS_PACKETS_PER_DESTINATION * this.#packetBytes,
    );
    this.#arena.set(packet.subarray(offset, offset + length), entry * this.#packetBytes);
    this.#lengths[entry] = length;
    this.#heldAt[entry] = nowMs;
    this.#count[index] = count + 1;
  }

  /**
   * Hands the packets of every destination `table` now covers to
   * `deliver`, in the order they came, and forgets those destinations.
   */
  release(
    table: AllowedIpsTable,
    deliver: (peer: number, packet: Uint8Array, offset: number, length: number) => void,
  ): void {
    if (this.#used === 0) return;
    for (let index = 0; index < ROUTE_MISS_DESTINATIONS; index++) {
      const family = this.#family[index]!;
      if (family === FREE) continue;
      const peer = table.lookup(family, this.#address, index * 16);
      if (peer === NO_PEER) continue;
      for (let packet = 0; packet < this.#count[index]!; packet++) {
        const entry = index * ROUTE_MISS_PACKETS_PER_DESTINATION + packet;
        deliver(peer, this.#arena!, entry * this.#packetBytes, this.#lengths[entry]!);
      }
      this.#free(index);
    }
  }

  /** Drops held packets older than ROUTE_MISS_HOLD_MS; a destination left without packets is forgotten. */
  expire(nowMs: number): void {
    if (this.#used === 0) return;
    for (let index = 0; index < ROUTE_MISS_DESTINATIONS; index++) {
      if (this.#family[index] === FREE) continue;
      const first = index * ROUTE_MISS_PACKETS_PER_DESTINATION;
      const count = this.#count[index]!;
      let stale = 0;
      while (stale < count && nowMs - this.#heldAt[first + stale]! >= ROUTE_MISS_HOLD_MS) stale++;
      if (stale === 0) continue;
      this.drops.expired += stale;
      if (stale === count) {
        this.#free(index);
        continue;
      }
      const bytes = this.#packetBytes;
      this.#arena!.copyWithin(first * bytes, (first + stale) * bytes, (first + count) * bytes);
      this.#lengths.copyWithin(first, first + stale, first + count);
      this.#heldAt.copyWithin(first, first + stale, first + count);
      this.#count[index] = count - stale;
    }
  }

  #find(family: number, packet: Uint8Array, at: number, size: number): number {
    if (this.#used === 0) return -1;
    for (let index = 0; index < ROUTE_MISS_DESTINATIONS; index++) {
      if (this.#family[index] !== family) continue;
      let byte = 0;
      while (byte < size && this.#address[index * 16 + byte] === packet[at + byte]) byte++;
      if (byte === size) return index;
    }
    return -1;
  }

  /** A free entry, or the oldest one emptied (its packets counted as overflow). */
  #claim(nowMs: number): number {
    let oldest = 0;
    for (let index = 0; index < ROUTE_MISS_DESTINATIONS; index++) {
      if (this.#family[index] === FREE) {
        this.#used++;
        return index;
      }
      if (this.#since[index]! < this.#since[oldest]!) oldest = index;
    }
    this.drops.overflow += this.#count[oldest]!;
    this.#count[oldest] = 0;
    this.#since[oldest] = nowMs;
    return oldest;
  }

  #free(index: number): void {
    this.#family[index] = FREE;
    this.#count[index] = 0;
    this.#used--;
  }
}

const HEAD = 0;
const TAIL = 1;
const DROPPED = 2;
const HEADER_WORDS = 4;
const ENTRIES = 64;
// Per entry: the family, then 16 address bytes.
const ENTRY_BYTES = 20;

/**
 * New route-miss destinations from one worker to the control thread: a
 * single-producer single-consumer ring that rings the WireGuard device's
 * doorbell. A full ring drops the report (counted); the packets stay held.
 */
export class RouteMissRing {
  readonly buffer: SharedArrayBuffer;
  readonly #words: Int32Array;
  readonly #bytes: Uint8Array;
  readonly #doorbell: Doorbell;

  constructor(device: SharedTransportMemory, buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(HEADER_WORDS * 4 + ENTRIES * ENTRY_BYTES);
    this.#words = new Int32Array(this.buffer);
    this.#bytes = new Uint8Array(this.buffer);
    this.#doorbell = new Doorbell(device);
  }

  /** Reports the ring had no room for. */
  get dropped(): number {
    return Atomics.load(this.#words, DROPPED);
  }

  push(family: number, address: Uint8Array, offset: number): void {
    const words = this.#words;
    const head = words[HEAD]!;
    if (head - Atomics.load(words, TAIL) >= ENTRIES) {
      Atomics.add(words, DROPPED, 1);
      return;
    }
    const entry = HEADER_WORDS * 4 + (head & (ENTRIES - 1)) * ENTRY_BYTES;
    this.#bytes[entry] = family;
    for (let byte = 0; byte < 16; byte++) this.#bytes[entry + 4 + byte] = address[offset + byte]!;
    Atomics.store(words, HEAD, head + 1);
    this.#doorbell.ring();
  }

  /** Hands each reported destination (family, address bytes at `bytes[offset]`) to `handle`. */
  drain(handle: (family: 4 | 6, bytes: Uint8Array, offset: number) => void): void {
    const words = this.#words;
    const head = Atomics.load(words, HEAD);
    for (let tail = words[TAIL]!; tail !== head; tail++) {
      const entry = HEADER_WORDS * 4 + (tail & (ENTRIES - 1)) * ENTRY_BYTES;
      handle(this.#bytes[entry] === 6 ? 6 : 4, this.#bytes, entry + 4);
      Atomics.store(words, TAIL, tail + 1);
    }
  }
}
