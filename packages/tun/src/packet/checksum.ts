import { readUint16, writeUint16 } from './byte-order.ts';
import {
  ICMP_CHECKSUM,
  IPV4_HEADER_CHECKSUM,
  IPV4_SOURCE,
  IPV6_SOURCE,
  TCP_CHECKSUM,
  UDP_CHECKSUM,
} from './header-layout.ts';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from './ip-protocol.ts';

/**
 * The Internet checksum (RFC 1071) and its uses in IPv4, TCP, UDP, ICMP and
 * ICMPv6. "Sum" below means the 16-bit ones' complement sum, folded but not
 * complemented; "checksum" means the complemented value as sent on the wire.
 */

/** Adds bytes [offset, offset + length) to `initial` as big-endian 16-bit words; an odd last byte is padded with zero. */
export function onesComplementSum(
  packet: Uint8Array,
  offset: number,
  length: number,
  initial = 0,
): number {
  if (length < WORD_SUM_MIN_LENGTH) return foldSum(initial + byteSum(packet, offset, length, 0));
  // Bytes before the first 4-byte-aligned address of the underlying buffer, summed one by one.
  const start = packet.byteOffset + offset;
  const head = (4 - (start & 3)) & 3;
  const wordCount = (length - head) >>> 2;
  const firstWord = (start + head) >>> 2;
  const words = wordView(packet.buffer, firstWord + wordCount);
  // RFC 1071 §2(B): summing the 32-bit words' halves in host order yields the sum with its
  // bytes swapped whenever a word's first byte does not sit at an even distance from `offset`
  // in big-endian order; one byte swap of the folded result repairs it.
  let low = 0;
  let high = 0;
  for (let i = firstWord, end = firstWord + wordCount; i < end; i++) {
    const word = words[i]!;
    low += word & 0xffff;
    high += word >>> 16;
  }
  let middle = foldSum(low + high);
  if (LITTLE_ENDIAN === ((head & 1) === 0)) middle = ((middle >>> 8) | (middle << 8)) & 0xffff;
  const tailAt = head + wordCount * 4;
  const edges =
    byteSum(packet, offset, head, 0) + byteSum(packet, offset + tailAt, length - tailAt, tailAt);
  return foldSum(initial + middle + edges);
}

/**
 * Bytes [offset, offset + length) weighted as in big-endian 16-bit words, where the first byte
 * sits `parity` bytes (mod 2) after the start of the summed range. Unfolded.
 */
function byteSum(packet: Uint8Array, offset: number, length: number, parity: number): number {
  let sum = 0;
  let at = offset;
  const end = offset + length;
  if ((parity & 1) === 1 && at < end) sum += packet[at++]!;
  for (; at + 1 < end; at += 2) sum += (packet[at]! << 8) | packet[at + 1]!;
  if (at < end) sum += packet[at]! << 8;
  return sum;
}

// Below this, the word loop's set-up costs more than it saves.
const WORD_SUM_MIN_LENGTH = 32;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// 32-bit views over the last few buffers summed (a worker alternates between a handful of packet
// pools), so nothing is allocated per call once they are cached.
const WORD_VIEW_CACHE = 4;
const cachedBuffers: (ArrayBufferLike | null)[] = new Array<ArrayBufferLike | null>(
  WORD_VIEW_CACHE,
).fill(null);
const cachedWords: Uint32Array[] = Array.from(
  { length: WORD_VIEW_CACHE },
  () => new Uint32Array(0),
);
let nextEvicted = 0;

/** A Uint32Array over the whole of `buffer` holding at least `words` words. */
function wordView(buffer: ArrayBufferLike, words: number): Uint32Array {
  for (let i = 0; i < WORD_VIEW_CACHE; i++) {
    // A growable buffer may have grown since its view was made.
    if (cachedBuffers[i] === buffer && cachedWords[i]!.length >= words) return cachedWords[i]!;
  }
  const view = new Uint32Array(buffer, 0, buffer.byteLength >>> 2);
  const slot = cachedBuffers.indexOf(buffer);
  const at = slot >= 0 ? slot : nextEvicted;
  if (slot < 0) nextEvicted = (nextEvicted + 1) % WORD_VIEW_CACHE;
  cachedBuffers[at] = buffer;
  cachedWords[at] = view;
  return view;
}

/** The checksum of bytes [offset, offset + length), starting from a sum (e.g. a pseudo-header's). */
export function internetChecksum(
  packet: Uint8Array,
  offset: number,
  length: number,
  initial = 0,
): number {
  return ~onesComplementSum(packet, offset, length, initial) & 0xffff;
}

/**
 * RFC 1624 eqn. 3: the checksum after one 16-bit word it covers changed
 * from `oldWord` to `newWord`, without touching the rest of the data.
 */
export function updateChecksum16(checksum: number, oldWord: number, newWord: number): number {
  return ~foldSum((~checksum & 0xffff) + (~oldWord & 0xffff) + newWord) & 0xffff;
}

/** Like updateChecksum16 for a 32-bit field (an IPv4 address, a TCP sequence number). */
export function updateChecksum32(checksum: number, oldValue: number, newValue: number): number {
  const high = updateChecksum16(checksum, oldValue >>> 16, newValue >>> 16);
  return updateChecksum16(high, oldValue & 0xffff, newValue & 0xffff);
}

/** The IPv4 header checksum for the header at `offset` of `headerLength` bytes, ignoring the stored one. */
export function ipv4HeaderChecksum(
  packet: Uint8Array,
  offset: number,
  headerLength: number,
): number {
  const checksumAt = offset + IPV4_HEADER_CHECKSUM;
  const sum = onesComplementSum(packet, offset, IPV4_HEADER_CHECKSUM);
  return internetChecksum(packet, checksumAt + 2, offset + headerLength - checksumAt - 2, sum);
}

export function verifyIpv4HeaderChecksum(
  packet: Uint8Array,
  offset: number,
  headerLength: number,
): boolean {
  return onesComplementSum(packet, offset, headerLength) === 0xffff;
}

export function fixIpv4HeaderChecksum(
  packet: Uint8Array,
  offset: number,
  headerLength: number,
): void {
  writeUint16(
    packet,
    offset + IPV4_HEADER_CHECKSUM,
    ipv4HeaderChecksum(packet, offset, headerLength),
  );
}

/**
 * The sum of the pseudo-header (RFC 9293 §3.1 for IPv4, RFC 8200 §8.1 for
 * IPv6) of the IP packet at `ipOffset`, for an upper-layer packet of
 * `upperLayerLength` bytes. For IPv6 it uses the header's destination: a
 * packet with a routing header must be summed against its final destination
 * by the caller.
 */
export function pseudoHeaderSum(
  packet: Uint8Array,
  ipOffset: number,
  protocol: number,
  upperLayerLength: number,
): number {
  const isIpv6 = packet[ipOffset]! >> 4 === 6;
  const addresses = ipOffset + (isIpv6 ? IPV6_SOURCE : IPV4_SOURCE);
  const addressesLength = isIpv6 ? 32 : 8;
  return onesComplementSum(
    packet,
    addresses,
    addressesLength,
    protocol + (upperLayerLength >>> 16) + (upperLayerLength & 0xffff),
  );
}

/** Where the checksum sits in a header of this protocol, or -1 when Gatehouse does not compute it. */
export function transportChecksumField(protocol: number): number {
  if (protocol === IPPROTO_TCP) return TCP_CHECKSUM;
  if (protocol === IPPROTO_UDP) return UDP_CHECKSUM;
  if (protocol === IPPROTO_ICMP || protocol === IPPROTO_ICMPV6) return ICMP_CHECKSUM;
  return -1;
}

/**
 * The TCP, UDP, ICMP or ICMPv6 checksum of the upper-layer packet at
 * `transportOffset` (inside the IP packet at `ipOffset`), ignoring the
 * stored one; -1 for another protocol or a header too short to hold the
 * field. A UDP result of 0 is returned as 0xffff (RFC 768).
 */
export function transportChecksum(
  packet: Uint8Array,
  ipOffset: number,
  transportOffset: number,
  transportLength: number,
  protocol: number,
): number {
  const field = transportChecksumField(protocol);
  if (field < 0 || transportLength < field + 2) return -1;
  const initial =
    protocol === IPPROTO_ICMP ? 0 : pseudoHeaderSum(packet, ipOffset, protocol, transportLength);
  const before = onesComplementSum(packet, transportOffset, field, initial);
  const checksum = internetChecksum(
    packet,
    transportOffset + field + 2,
    transportLength - field - 2,
    before,
  );
  return protocol === IPPROTO_UDP && checksum === 0 ? 0xffff : checksum;
}

/**
 * Whether the stored upper-layer checksum is right. A zero UDP checksum
 * over IPv4 means "none" and passes; over IPv6 it is forbidden (RFC 8200
 * §8.1) and fails. Unknown protocols fail.
 */
export function verifyTransportChecksum(
  packet: Uint8Array,
  ipOffset: number,
  transportOffset: number,
  transportLength: number,
  protocol: number,
): boolean {
  const field = transportChecksumField(protocol);
  if (field < 0 || transportLength < field + 2) return false;
  if (protocol === IPPROTO_UDP && readUint16(packet, transportOffset + field) === 0) {
    return packet[ipOffset]! >> 4 === 4;
  }
  const initial =
    protocol === IPPROTO_ICMP ? 0 : pseudoHeaderSum(packet, ipOffset, protocol, transportLength);
  return onesComplementSum(packet, transportOffset, transportLength, initial) === 0xffff;
}

/** Writes the right upper-layer checksum; false (nothing written) when the protocol or length does not allow one. */
export function fixTransportChecksum(
  packet: Uint8Array,
  ipOffset: number,
  transportOffset: number,
  transportLength: number,
  protocol: number,
): boolean {
  const checksum = transportChecksum(packet, ipOffset, transportOffset, transportLength, protocol);
  if (checksum < 0) return false;
  writeUint16(packet, transportOffset + transportChecksumField(protocol), checksum);
  return true;
}

function foldSum(sum: number): number {
  let folded = sum;
  while (folded > 0xffff) folded = (folded % 0x10000) + Math.floor(folded / 0x10000);
  return folded;
}
