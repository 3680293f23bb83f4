import { readUint16, readUint32 } from './byte-order.ts';
import { IPPROTO_TCP, IPPROTO_UDP } from './ip-protocol.ts';
import { IPV6_HEADER_LENGTH } from './header-layout.ts';
import { Ipv6HeaderChain, walkIpv6HeaderChain } from './ipv6-extension-headers.ts';

/**
 * A 32-bit hash of the packet's flow: IP version, protocol, both addresses
 * and, for TCP and UDP, both ports; addresses and protocol otherwise.
 *
 * Symmetric: a packet and its reply hash alike, because the two endpoints
 * are put in a canonical order first, so one worker can own both directions
 * of a flow. Fragments of one datagram leave the ports out (only the first
 * fragment carries them), so they all hash alike and are never reordered
 * against each other. Only the headers are read; lengths beyond them are
 * not checked, so a GSO super-packet hashes like its segments.
 *
 * Returns 0 for an unparseable packet, and never 0 otherwise. No allocation.
 */
export function flowHash(packet: Uint8Array, offset: number, length: number): number {
  if (offset < 0 || length < 1 || offset + length > packet.length) return 0;
  const version = packet[offset]! >> 4;
  if (version === 4) return ipv4FlowHash(packet, offset, length);
  if (version === 6) return ipv6FlowHash(packet, offset, length);
  return 0;
}

const SEED = 0x9e3779b9;
const IPV4_FRAGMENT_MASK = 0x3fff; // MF flag and fragment offset.

const chain = new Ipv6HeaderChain();

function ipv4FlowHash(packet: Uint8Array, offset: number, length: number): number {
  if (length < 20) return 0;
  const headerLength = (packet[offset]! & 0x0f) * 4;
  if (headerLength < 20 || headerLength > length) return 0;
  const protocol = packet[offset + 9]!;
  const source = readUint32(packet, offset + 12);
  const destination = readUint32(packet, offset + 16);
  const fragmented = (readUint16(packet, offset + 6) & IPV4_FRAGMENT_MASK) !== 0;
  const transport = offset + headerLength;
  const hasPorts =
    !fragmented &&
    (protocol === IPPROTO_TCP || protocol === IPPROTO_UDP) &&
    headerLength + 4 <= length;
  let sourcePort = hasPorts ? readUint16(packet, transport) : 0;
  let destinationPort = hasPorts ? readUint16(packet, transport + 2) : 0;

  let first = source;
  let second = destination;
  if (source > destination || (source === destination && sourcePort > destinationPort)) {
    first = destination;
    second = source;
    const port = sourcePort;
    sourcePort = destinationPort;
    destinationPort = port;
  }
  let hash = mix(SEED, (4 << 8) | protocol);
  hash = mix(hash, first);
  hash = mix(hash, second);
  hash = mix(hash, (sourcePort << 16) | destinationPort);
  return finish(hash);
}

function ipv6FlowHash(packet: Uint8Array, offset: number, length: number): number {
  if (length < IPV6_HEADER_LENGTH) return 0;
  if (walkIpv6HeaderChain(packet, offset, length, chain) !== null) return 0;
  const protocol = chain.upperLayerProtocol;
  const transport = chain.upperLayerOffset;
  const hasPorts =
    !chain.fragmented &&
    (protocol === IPPROTO_TCP || protocol === IPPROTO_UDP) &&
    transport + 4 <= offset + length;
  let sourcePort = hasPorts ? readUint16(packet, transport) : 0;
  let destinationPort = hasPorts ? readUint16(packet, transport + 2) : 0;

  let first = offset + 8;
  let second = offset + 24;
  const order = compareAddresses(packet, first, second);
  if (order > 0 || (order === 0 && sourcePort > destinationPort)) {
    first = offset + 24;
    second = offset + 8;
    const port = sourcePort;
    sourcePort = destinationPort;
    destinationPort = port;
  }
  let hash = mix(SEED, (6 << 8) | protocol);
  for (let i = 0; i < 16; i += 4) hash = mix(hash, readUint32(packet, first + i));
  for (let i = 0; i < 16; i += 4) hash = mix(hash, readUint32(packet, second + i));
  hash = mix(hash, (sourcePort << 16) | destinationPort);
  return finish(hash);
}

function compareAddresses(packet: Uint8Array, a: number, b: number): number {
  for (let i = 0; i < 16; i++) {
    const difference = packet[a + i]! - packet[b + i]!;
    if (difference !== 0) return difference;
  }
  return 0;
}

// MurmurHash3's 32-bit block mixing and finalizer.
function mix(hash: number, word: number): number {
  let k = Math.imul(word, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  let h = hash ^ k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function finish(hash: number): number {
  let h = hash;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0 || 1;
}
