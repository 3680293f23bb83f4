import type { AddressFamily, Endpoint } from '@gatehouse/addresses';

/** Largest UDP payload the kernel hands over in one (GRO-coalesced) receive. */
export const MAX_DATAGRAM_BYTES = 65_535;
/** Datagrams moved per `sendBatch`/`receiveBatch` call by default. */
export const DEFAULT_BATCH_SIZE = 64;

/**
 * Preallocated slots for a batch of datagrams plus, per slot, where the
 * datagram starts, its length, the GRO segment size, the IP TOS / traffic
 * class byte (ECN in its low two bits) and the remote endpoint.
 *
 * `data` may be any view the caller owns, typically over a SharedArrayBuffer
 * shared with the TUN side, so a packet is read, sealed and sent from one
 * place. Slot `i` spans `[i * slotSize, (i + 1) * slotSize)` of `data`;
 * `offsets[i]` is an absolute index into `data` inside that span, so callers
 * can keep headroom in front of the datagram.
 */
export class DatagramBatch {
  readonly data: Uint8Array;
  readonly slotSize: number;
  readonly capacity: number;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  /**
   * On receive: the size of each coalesced segment when the kernel merged
   * several datagrams from one sender (UDP GRO), else 0. Segment k covers
   * `[offsets[i] + k * size, min(offsets[i] + lengths[i], ... + size))`.
   * Ignored on send: the socket decides about GSO itself.
   */
  readonly segmentSizes: Uint32Array;
  /** The TOS (IPv4) or traffic class (IPv6) byte; ECN lives in its low two bits. */
  readonly tos: Uint8Array;
  readonly families: Uint8Array;
  /** 16 bytes per slot; IPv4 uses the first four. */
  readonly addresses: Uint8Array;
  readonly ports: Uint16Array;

  constructor(capacity: number, slotSize: number, data?: Uint8Array) {
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new RangeError(`bad capacity ${capacity}`);
    if (!Number.isInteger(slotSize) || slotSize < 1)
      throw new RangeError(`bad slot size ${slotSize}`);
    this.data = data ?? new Uint8Array(new SharedArrayBuffer(capacity * slotSize));
    if (this.data.length < capacity * slotSize) {
      throw new RangeError(
        `data holds ${this.data.length} bytes, ${capacity} slots need ${capacity * slotSize}`,
      );
    }
    this.capacity = capacity;
    this.slotSize = slotSize;
    this.offsets = new Uint32Array(capacity);
    this.lengths = new Uint32Array(capacity);
    this.segmentSizes = new Uint32Array(capacity);
    this.tos = new Uint8Array(capacity);
    this.families = new Uint8Array(capacity);
    this.addresses = new Uint8Array(capacity * 16);
    this.ports = new Uint16Array(capacity);
    this.resetOffsets(0);
  }

  /** Puts every slot's datagram `headroom` bytes after the slot's start. */
  resetOffsets(headroom: number): void {
    for (let slot = 0; slot < this.capacity; slot++)
      this.offsets[slot] = slot * this.slotSize + headroom;
  }

  /** Bytes available from `offsets[slot]` to the end of the slot. */
  room(slot: number): number {
    return (slot + 1) * this.slotSize - this.offsets[slot]!;
  }

  setEndpoint(slot: number, endpoint: Endpoint): void {
    this.families[slot] = endpoint.family;
    this.addresses.fill(0, slot * 16, slot * 16 + 16);
    this.addresses.set(endpoint.address, slot * 16);
    this.ports[slot] = endpoint.port;
  }

  /** Copies slot `from` of `source`'s endpoint into slot `to` of this batch. */
  copyEndpoint(to: number, source: DatagramBatch, from: number): void {
    this.families[to] = source.families[from]!;
    for (let index = 0; index < 16; index++)
      this.addresses[to * 16 + index] = source.addresses[from * 16 + index]!;
    this.ports[to] = source.ports[from]!;
  }

  endpoint(slot: number): Endpoint {
    const family = this.families[slot] as AddressFamily;
    const length = family === 4 ? 4 : 16;
    return {
      family,
      address: this.addresses.slice(slot * 16, slot * 16 + length),
      port: this.ports[slot]!,
    };
  }

  /** True when slots `a` and `b` go to (or came from) the same endpoint. */
  sameEndpoint(a: number, b: number): boolean {
    if (this.ports[a] !== this.ports[b] || this.families[a] !== this.families[b]) return false;
    const length = this.families[a] === 4 ? 4 : 16;
    for (let index = 0; index < length; index++) {
      if (this.addresses[a * 16 + index] !== this.addresses[b * 16 + index]) return false;
    }
    return true;
  }
}
