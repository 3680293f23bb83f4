import { readUint16, readUint32, writeUint16 } from './byte-order.ts';
import { fixIpv4HeaderChecksum, pseudoHeaderSum } from './checksum.ts';
import { copyBytes } from './copy-bytes.ts';
import { flowHash } from './flow.ts';
import type { WritableLengths } from './gso-split.ts';
import {
  IPV4_FLAGS_FRAGMENT_OFFSET,
  IPV4_MAX_PACKET_LENGTH,
  IPV4_MIN_HEADER_LENGTH,
  IPV4_PROTOCOL,
  IPV4_SOURCE,
  IPV4_TOS,
  IPV4_TOTAL_LENGTH,
  IPV4_TTL,
  IPV6_HEADER_LENGTH,
  IPV6_HOP_LIMIT,
  IPV6_MAX_PAYLOAD_LENGTH,
  IPV6_NEXT_HEADER,
  IPV6_PAYLOAD_LENGTH,
  IPV6_SOURCE,
  TCP_ACKNOWLEDGMENT,
  TCP_CHECKSUM,
  TCP_FLAG_ACK,
  TCP_FLAG_PSH,
  TCP_FLAGS,
  TCP_MIN_HEADER_LENGTH,
  TCP_SEQUENCE,
  UDP_CHECKSUM,
  UDP_HEADER_LENGTH,
  UDP_LENGTH,
} from './header-layout.ts';
import { IpPacket } from './ip-packet.ts';
import { IPPROTO_TCP, IPPROTO_UDP } from './ip-protocol.ts';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VIRTIO_NET_HDR_LEN,
  VirtioNetHeader,
} from './virtio-net-header.ts';

export interface GroOptions {
  /** The most packets one `coalesce` call takes. */
  maxPackets: number;
  /** Coalesce UDP too; needs TUN_F_USO4/TUN_F_USO6 accepted by TUNSETOFFLOAD (Linux 6.2+). */
  udp: boolean;
}

/**
 * GRO for writes to an IFF_VNET_HDR TUN with TCP (and optionally UDP)
 * segmentation offload: merges consecutive segments of one flow in a batch
 * into one super-packet with a virtio_net_hdr, so the kernel takes many
 * segments in one write.
 *
 * TCP segments merge when they share addresses, ports, IP header fields
 * (TOS/traffic class incl. ECN, TTL/hop limit, DF, flow label), ACK number,
 * TCP options and flags (ACK, with PSH allowed only on the last), continue
 * the sequence exactly, and all carry the first one's payload size except a
 * smaller last one. UDP datagrams merge on the same rules minus the TCP
 * ones. Only packets whose checksums verify merge: the kernel trusts a
 * super-packet's NEEDS_CSUM and would otherwise launder a corrupt segment.
 * Packets with IPv4 options, IPv6 extension headers, fragments, SYN, FIN,
 * RST, URG, ECE or CWR pass through alone. Within a flow, order is kept;
 * flows interleave freely. Per-batch state is preallocated: no allocation.
 */
export class GroCoalescer {
  readonly maxPackets: number;
  readonly udp: boolean;

  private readonly view = new IpPacket();
  private readonly header = new VirtioNetHeader();
  private readonly kind: Uint8Array;
  private readonly hash: Uint32Array;
  private readonly head: Int32Array;
  private readonly headersLength: Uint16Array;
  private readonly payloadLength: Uint16Array;
  private readonly totalLength: Uint32Array;
  private readonly segmentSize: Uint16Array;
  private readonly segments: Uint16Array;
  private readonly nextSequence: Uint32Array;
  private readonly closed: Uint8Array;

  constructor(options: GroOptions) {
    const n = options.maxPackets;
    this.maxPackets = n;
    this.udp = options.udp;
    this.kind = new Uint8Array(n);
    this.hash = new Uint32Array(n);
    this.head = new Int32Array(n);
    this.headersLength = new Uint16Array(n);
    this.payloadLength = new Uint16Array(n);
    this.totalLength = new Uint32Array(n);
    this.segmentSize = new Uint16Array(n);
    this.segments = new Uint16Array(n);
    this.nextSequence = new Uint32Array(n);
    this.closed = new Uint8Array(n);
  }

  /**
   * Packet i is the IP packet at packets[i][offsets[i] .. +lengths[i]), with
   * VIRTIO_NET_HDR_LEN bytes of headroom before it; its slot may grow up to
   * packets[i].length. On return, writeLengths[i] is 0 for a packet merged
   * into an earlier one, else the length to write from
   * offsets[i] - VIRTIO_NET_HDR_LEN: the virtio_net_hdr written there and
   * the (possibly grown) packet. Returns the number of writes, or why the
   * arguments are unusable (then nothing was changed). Invalid IP packets
   * are not an error: they pass through alone for the kernel to judge.
   */
  coalesce(
    packets: readonly Uint8Array[],
    offsets: ArrayLike<number>,
    lengths: ArrayLike<number>,
    count: number,
    writeLengths: WritableLengths,
  ): number | string {
    if (count < 0 || count > this.maxPackets) return 'gro: count beyond maxPackets';
    if (
      packets.length < count ||
      offsets.length < count ||
      lengths.length < count ||
      writeLengths.length < count
    ) {
      return 'gro: fewer array entries than count';
    }
    for (let i = 0; i < count; i++) {
      const packet = packets[i]!;
      const offset = offsets[i]!;
      const length = lengths[i]!;
      if (offset < VIRTIO_NET_HDR_LEN) return 'gro: no headroom for the virtio_net_hdr';
      if (length < 0 || offset + length > packet.length)
        return 'gro: packet range beyond its buffer';
    }

    for (let i = 0; i < count; i++) {
      this.classify(packets[i]!, offsets[i]!, lengths[i]!, i);
      this.head[i] = i;
      if (this.kind[i] === NOT_COALESCABLE) continue;
      const previous = this.previousOfFlow(packets, offsets, i);
      if (previous >= 0 && this.tryMerge(packets, offsets, this.head[previous]!, i)) {
        this.head[i] = this.head[previous]!;
      }
    }

    let writes = 0;
    for (let i = 0; i < count; i++) {
      if (this.head[i] !== i) {
        writeLengths[i] = 0;
        continue;
      }
      const length = this.finish(packets[i]!, offsets[i]!, lengths[i]!, i);
      writeLengths[i] = VIRTIO_NET_HDR_LEN + length;
      writes++;
    }
    return writes;
  }

  private classify(packet: Uint8Array, offset: number, length: number, i: number): void {
    this.kind[i] = NOT_COALESCABLE;
    this.hash[i] = flowHash(packet, offset, length);
    const view = this.view;
    if (view.parse(packet, offset, length) !== null || view.fragmented) return;
    if (
      view.version === 4
        ? view.headerLength !== IPV4_MIN_HEADER_LENGTH
        : view.headerLength !== IPV6_HEADER_LENGTH
    ) {
      return;
    }
    let headersLength: number;
    let kind: number;
    if (view.protocol === IPPROTO_TCP) {
      const flags = view.tcpFlags;
      if (flags !== TCP_FLAG_ACK && flags !== (TCP_FLAG_ACK | TCP_FLAG_PSH)) return;
      headersLength = view.headerLength + view.tcpHeaderLength;
      kind = TCP;
    } else if (view.protocol === IPPROTO_UDP && this.udp) {
      if (readUint16(packet, view.transportOffset + UDP_CHECKSUM) === 0) return;
      headersLength = view.headerLength + UDP_HEADER_LENGTH;
      kind = UDP;
    } else {
      return;
    }
    // A UDP length shorter than the IP payload would leave trailing bytes out of the merge.
    if (view.transportOffset + view.transportLength !== offset + view.length) return;
    const payloadLength = view.length - headersLength;
    if (payloadLength <= 0 || !view.verifyTransportChecksum()) return;

    this.kind[i] = kind;
    this.headersLength[i] = headersLength;
    this.payloadLength[i] = payloadLength;
    this.totalLength[i] = view.length;
    this.segmentSize[i] = payloadLength;
    this.segments[i] = 1;
    this.nextSequence[i] = kind === TCP ? (view.tcpSequence + payloadLength) >>> 0 : 0;
    this.closed[i] = kind === TCP && (view.tcpFlags & TCP_FLAG_PSH) !== 0 ? 1 : 0;
  }

  /**
   * The latest earlier packet of the same flow (same direction) if it can
   * take a follower, else -1. A packet of the flow that cannot merge is a
   * barrier: merging past it would reorder the flow. Barriers are matched
   * on addresses and protocol only, so a packet whose ports sit elsewhere
   * (IP options, extension headers) still blocks.
   */
  private previousOfFlow(
    packets: readonly Uint8Array[],
    offsets: ArrayLike<number>,
    i: number,
  ): number {
    const hash = this.hash[i]!;
    const packet = packets[i]!;
    const offset = offsets[i]!;
    for (let j = i - 1; j >= 0; j--) {
      if (this.hash[j] !== hash || !sameAddresses(packets[j]!, offsets[j]!, packet, offset))
        continue;
      if (this.kind[j] === NOT_COALESCABLE) return -1;
      if (samePorts(packets[j]!, offsets[j]!, packet, offset)) return j;
    }
    return -1;
  }

  private tryMerge(
    packets: readonly Uint8Array[],
    offsets: ArrayLike<number>,
    h: number,
    i: number,
  ): boolean {
    if (this.kind[h] !== this.kind[i] || this.closed[h] === 1) return false;
    const headPacket = packets[h]!;
    const headOffset = offsets[h]!;
    const packet = packets[i]!;
    const offset = offsets[i]!;
    const headersLength = this.headersLength[i]!;
    const payloadLength = this.payloadLength[i]!;
    if (headersLength !== this.headersLength[h] || payloadLength > this.segmentSize[h]!)
      return false;
    const isIpv4 = packet[offset]! >> 4 === 4;
    const newTotal = this.totalLength[h]! + payloadLength;
    const limit = isIpv4 ? IPV4_MAX_PACKET_LENGTH : IPV6_HEADER_LENGTH + IPV6_MAX_PAYLOAD_LENGTH;
    if (newTotal > limit || headOffset + newTotal > headPacket.length) return false;
    if (!sameIpFields(headPacket, headOffset, packet, offset, isIpv4)) return false;

    const isTcp = this.kind[i] === TCP;
    const ipHeaderLength = isIpv4 ? IPV4_MIN_HEADER_LENGTH : IPV6_HEADER_LENGTH;
    if (isTcp) {
      const tcp = offset + ipHeaderLength;
      const headTcp = headOffset + ipHeaderLength;
      if (readUint32(packet, tcp + TCP_SEQUENCE) !== this.nextSequence[h]) return false;
      if (
        !bytesEqual(headPacket, headTcp + TCP_ACKNOWLEDGMENT, packet, tcp + TCP_ACKNOWLEDGMENT, 4)
      )
        return false;
      const optionsLength = headersLength - ipHeaderLength - TCP_MIN_HEADER_LENGTH;
      if (
        !bytesEqual(
          headPacket,
          headTcp + TCP_MIN_HEADER_LENGTH,
          packet,
          tcp + TCP_MIN_HEADER_LENGTH,
          optionsLength,
        )
      ) {
        return false;
      }
      if ((packet[tcp + TCP_FLAGS]! & TCP_FLAG_PSH) !== 0) {
        headPacket[headTcp + TCP_FLAGS] = headPacket[headTcp + TCP_FLAGS]! | TCP_FLAG_PSH;
        this.closed[h] = 1;
      }
      this.nextSequence[h] = (this.nextSequence[h]! + payloadLength) >>> 0;
    }

    copyBytes(
      packet,
      offset + headersLength,
      headPacket,
      headOffset + this.totalLength[h]!,
      payloadLength,
    );
    this.totalLength[h] = newTotal;
    this.segments[h] = this.segments[h]! + 1;
    if (payloadLength < this.segmentSize[h]!) this.closed[h] = 1;
    return true;
  }

  /** Writes the head's virtio_net_hdr and final IP/transport lengths; returns the packet length. */
  private finish(packet: Uint8Array, offset: number, length: number, i: number): number {
    const header = this.header;
    header.clear();
    if (this.kind[i] === NOT_COALESCABLE || this.segments[i] === 1) {
      header.encode(packet, offset - VIRTIO_NET_HDR_LEN);
      return length;
    }
    const isIpv4 = packet[offset]! >> 4 === 4;
    const isTcp = this.kind[i] === TCP;
    const ipHeaderLength = isIpv4 ? IPV4_MIN_HEADER_LENGTH : IPV6_HEADER_LENGTH;
    const total = this.totalLength[i]!;
    const transportLength = total - ipHeaderLength;
    if (isIpv4) {
      writeUint16(packet, offset + IPV4_TOTAL_LENGTH, total);
      fixIpv4HeaderChecksum(packet, offset, ipHeaderLength);
    } else {
      writeUint16(packet, offset + IPV6_PAYLOAD_LENGTH, transportLength);
    }
    const protocol = isTcp ? IPPROTO_TCP : IPPROTO_UDP;
    if (!isTcp) writeUint16(packet, offset + ipHeaderLength + UDP_LENGTH, transportLength);
    // NEEDS_CSUM: the field holds the pseudo-header sum; the kernel finishes it per segment.
    const checksumOffset = isTcp ? TCP_CHECKSUM : UDP_CHECKSUM;
    writeUint16(
      packet,
      offset + ipHeaderLength + checksumOffset,
      pseudoHeaderSum(packet, offset, protocol, transportLength),
    );

    header.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    header.gsoType = isTcp
      ? isIpv4
        ? VIRTIO_NET_HDR_GSO_TCPV4
        : VIRTIO_NET_HDR_GSO_TCPV6
      : VIRTIO_NET_HDR_GSO_UDP_L4;
    header.hdrLen = this.headersLength[i]!;
    header.gsoSize = this.segmentSize[i]!;
    header.csumStart = ipHeaderLength;
    header.csumOffset = checksumOffset;
    header.encode(packet, offset - VIRTIO_NET_HDR_LEN);
    return total;
  }
}

const NOT_COALESCABLE = 0;
const TCP = 1;
const UDP = 2;

/** Same version, protocol and addresses, in the same direction. */
function sameAddresses(a: Uint8Array, aOffset: number, b: Uint8Array, bOffset: number): boolean {
  const version = a[aOffset]! >> 4;
  if (version !== b[bOffset]! >> 4) return false;
  const isIpv4 = version === 4;
  const addresses = isIpv4 ? IPV4_SOURCE : IPV6_SOURCE;
  const protocolAt = isIpv4 ? IPV4_PROTOCOL : IPV6_NEXT_HEADER;
  return (
    a[aOffset + protocolAt] === b[bOffset + protocolAt] &&
    bytesEqual(a, aOffset + addresses, b, bOffset + addresses, isIpv4 ? 8 : 32)
  );
}

/** Same ports, for two coalescable packets (fixed-size IP headers, same version). */
function samePorts(a: Uint8Array, aOffset: number, b: Uint8Array, bOffset: number): boolean {
  const ipHeaderLength = a[aOffset]! >> 4 === 4 ? IPV4_MIN_HEADER_LENGTH : IPV6_HEADER_LENGTH;
  return bytesEqual(a, aOffset + ipHeaderLength, b, bOffset + ipHeaderLength, 4);
}

/** The IP header fields a super-packet repeats in every segment. */
function sameIpFields(
  a: Uint8Array,
  aOffset: number,
  b: Uint8Array,
  bOffset: number,
  isIpv4: boolean,
): boolean {
  if (isIpv4) {
    return (
      a[aOffset + IPV4_TOS] === b[bOffset + IPV4_TOS] &&
      a[aOffset + IPV4_TTL] === b[bOffset + IPV4_TTL] &&
      a[aOffset + IPV4_FLAGS_FRAGMENT_OFFSET] === b[bOffset + IPV4_FLAGS_FRAGMENT_OFFSET]
    );
  }
  // Version, traffic class and flow label, then the hop limit.
  return (
    bytesEqual(a, aOffset, b, bOffset, 4) &&
    a[aOffset + IPV6_HOP_LIMIT] === b[bOffset + IPV6_HOP_LIMIT]
  );
}

function bytesEqual(
  a: Uint8Array,
  aAt: number,
  b: Uint8Array,
  bAt: number,
  length: number,
): boolean {
  for (let i = 0; i < length; i++) if (a[aAt + i] !== b[bAt + i]) return false;
  return true;
}
