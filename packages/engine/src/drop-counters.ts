/**
 * Per-peer drop counters in shared memory: workers count with Atomics.add,
 * the control thread reads whenever it likes. No per-packet messages. The
 * byte and packet totals live in the WireGuard worker contract's peer slots.
 * Reasons the WireGuard core also counts carry its names, so the two sets
 * merge by name.
 */

export const DROP_REASONS = [
  /** The decrypted packet's source address is outside the peer's AllowedIPs. */
  'source-not-allowed',
  'replay',
  'decrypt-failed',
  'unknown-receiver',
  'expired-keypair',
  'invalid-inner-packet',
  /** RFC 6040: CE on the outer header of a Not-ECT inner packet. */
  'ecn-not-ect',
  /** Held for a handshake while the hold queue was full. */
  'hold-overflow',
  /** The TUN queue refused the packet. */
  'tun-full',
  'udp-send-failed',
  /** Shorter than a message type, or a transport message shorter than its header and tag. */
  'malformed',
  /** The first little-endian word is no WireGuard message type. */
  'unknown-type',
  /** A handshake message whose MAC1 is not for our public key, refused before the control thread. */
  'bad-mac1',
  /** TUN reads dropped: super-packets that could not be split, oversize packets. */
  'tun-read-dropped',
  /** TUN writes the kernel refused as malformed (EINVAL, EIO, EMSGSIZE). */
  'tun-write-rejected',
  /** Packets no peer covers beyond what is held for their destination (or evicted with the oldest one). */
  'route-miss-overflow',
  /** Packets no peer covers, held longer than ROUTE_MISS_HOLD_MS. */
  'route-miss-expired',
  /** A decrypted packet's destination, protocol or port that the peer's policy does not allow. */
  'policy-denied',
] as const;

export type DropReason = (typeof DROP_REASONS)[number];
export type DropCounts = Record<DropReason, number>;

export const DROP_SOURCE_NOT_ALLOWED = 0;
export const DROP_REPLAY = 1;
export const DROP_DECRYPT_FAILED = 2;
export const DROP_UNKNOWN_RECEIVER = 3;
export const DROP_EXPIRED = 4;
export const DROP_INVALID_INNER_PACKET = 5;
export const DROP_ECN_NOT_ECT = 6;
export const DROP_HOLD_OVERFLOW = 7;
export const DROP_TUN_FULL = 8;
export const DROP_UDP_SEND_FAILED = 9;
export const DROP_MALFORMED = 10;
export const DROP_UNKNOWN_TYPE = 11;
export const DROP_BAD_MAC1 = 12;
export const DROP_TUN_READ_DROPPED = 13;
export const DROP_TUN_WRITE_REJECTED = 14;
export const DROP_ROUTE_MISS_OVERFLOW = 15;
export const DROP_ROUTE_MISS_EXPIRED = 16;
export const DROP_POLICY_DENIED = 17;

/** Drops not attributable to a peer (unknown receiver index, bad input, TUN queue drops) are counted on this row. */
export const UNATTRIBUTED = -1;

export class DropCounters {
  readonly buffer: SharedArrayBuffer;
  readonly peers: number;
  readonly #words: Int32Array;

  constructor(peersOrBuffer: number | SharedArrayBuffer) {
    if (typeof peersOrBuffer === 'number') {
      this.buffer = new SharedArrayBuffer(((peersOrBuffer + 1) * DROP_REASONS.length + 1) * 4);
    } else {
      this.buffer = peersOrBuffer;
    }
    this.peers = (this.buffer.byteLength / 4 - 1) / DROP_REASONS.length - 1;
    this.#words = new Int32Array(this.buffer);
  }

  add(peer: number, reason: number, count = 1): void {
    Atomics.add(this.#words, (peer + 1) * DROP_REASONS.length + reason, count);
  }

  /** Zeroes a peer slot's counters (the slot is being given to a new peer). */
  reset(peer: number): void {
    for (let reason = 0; reason < DROP_REASONS.length; reason++) {
      Atomics.store(this.#words, (peer + 1) * DROP_REASONS.length + reason, 0);
    }
  }

  read(peer: number): DropCounts {
    const counts = {} as DropCounts;
    DROP_REASONS.forEach((reason, index) => {
      counts[reason] = Atomics.load(this.#words, (peer + 1) * DROP_REASONS.length + index) >>> 0;
    });
    return counts;
  }

  /** Packets to destinations no peer's AllowedIPs cover. */
  noRoute(): number {
    return Atomics.load(this.#words, this.#words.length - 1) >>> 0;
  }

  addNoRoute(count = 1): void {
    Atomics.add(this.#words, this.#words.length - 1, count);
  }
}
