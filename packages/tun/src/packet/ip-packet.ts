import { formatAddress } from '@gatehouse/addresses';

import { readUint16, readUint32 } from './byte-order.ts';
import {
  fixIpv4HeaderChecksum,
  fixTransportChecksum,
  verifyIpv4HeaderChecksum,
  verifyTransportChecksum,
} from './checksum.ts';
import {
  ICMP_CODE,
  ICMP_ECHO_IDENTIFIER,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_ECHO_SEQUENCE,
  ICMP_HEADER_LENGTH,
  ICMP_TYPE,
  ICMPV6_ECHO_REPLY,
  ICMPV6_ECHO_REQUEST,
  IPV4_ADDRESS_LENGTH,
  IPV4_DESTINATION,
  IPV4_FLAG_MORE_FRAGMENTS,
  IPV4_FLAGS_FRAGMENT_OFFSET,
  IPV4_FRAGMENT_OFFSET_MASK,
  IPV4_IDENTIFICATION,
  IPV4_MAX_PACKET_LENGTH,
  IPV4_MIN_HEADER_LENGTH,
  IPV4_PROTOCOL,
  IPV4_SOURCE,
  IPV4_TOTAL_LENGTH,
  IPV6_ADDRESS_LENGTH,
  IPV6_DESTINATION,
  IPV6_HEADER_LENGTH,
  IPV6_MAX_PAYLOAD_LENGTH,
  IPV6_PAYLOAD_LENGTH,
  IPV6_SOURCE,
  TCP_DATA_OFFSET,
  TCP_DESTINATION_PORT,
  TCP_FLAGS,
  TCP_MIN_HEADER_LENGTH,
  TCP_SEQUENCE,
  TCP_SOURCE_PORT,
  UDP_HEADER_LENGTH,
  UDP_LENGTH,
} from './header-layout.ts';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from './ip-protocol.ts';
import { Ipv6HeaderChain, walkIpv6HeaderChain } from './ipv6-extension-headers.ts';

/**
 * A reusable view of one IPv4 or IPv6 packet inside a larger buffer.
 *
 * `parse` points the view at (packet, offset, length) and validates the IP
 * header, the IPv6 extension-header chain and the TCP/UDP/ICMP header when
 * the packet carries one; it returns null, or why the packet is invalid.
 * It never throws and never allocates: keep one view per worker and parse
 * every packet into it. The fields are only meaningful after a parse that
 * returned null. Transport checksums are checked only on request.
 */
export class IpPacket {
  packet: Uint8Array = new Uint8Array(0);
  /** Where the IP header starts in `packet`. */
  offset = 0;
  /** 4 or 6. */
  version = 0;
  /** The IP packet's own length (total length), at most the length parsed. */
  length = 0;
  /** The upper-layer protocol: IPv4's protocol field, or the header after IPv6's extension headers. */
  protocol = 0;
  /** Absolute offset of the upper-layer header. */
  transportOffset = 0;
  /** Bytes from the upper-layer header to the end of the IP packet (the UDP length for UDP). */
  transportLength = 0;
  /** A fragment of a larger datagram (first or later). */
  fragmented = false;
  /** Where this fragment's data goes in the datagram, in bytes. */
  fragmentOffset = 0;
  moreFragments = false;
  fragmentId = 0;

  private readonly chain = new Ipv6HeaderChain();

  /** Points the view at a packet and validates it; null when valid, else the reason. */
  parse(
    packet: Uint8Array,
    offset: number,
    length: number,
    checkIpv4HeaderChecksum = true,
  ): string | null {
    this.version = 0;
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0) {
      return 'ip: offset or length not a non-negative integer';
    }
    if (offset + length > packet.length) return 'ip: range beyond the buffer';
    if (length === 0) return 'ip: empty packet';
    this.packet = packet;
    this.offset = offset;
    const version = packet[offset]! >> 4;
    const reason =
      version === 4
        ? this.parseIpv4(length, checkIpv4HeaderChecksum)
        : version === 6
          ? this.parseIpv6(length)
          : 'ip: version is neither 4 nor 6';
    if (reason !== null) return reason;
    const transportReason = this.parseTransport();
    if (transportReason !== null) return transportReason;
    this.version = version;
    return null;
  }

  /** Bytes of IP header, including IPv4 options or IPv6 extension headers. */
  get headerLength(): number {
    return this.transportOffset - this.offset;
  }

  /** Whether the upper-layer header is here: false for a fragment other than the first. */
  get hasTransportHeader(): boolean {
    return this.fragmentOffset === 0;
  }

  get addressLength(): number {
    return this.version === 4 ? IPV4_ADDRESS_LENGTH : IPV6_ADDRESS_LENGTH;
  }

  get sourceAddressOffset(): number {
    return this.offset + (this.version === 4 ? IPV4_SOURCE : IPV6_SOURCE);
  }

  get destinationAddressOffset(): number {
    return this.offset + (this.version === 4 ? IPV4_DESTINATION : IPV6_DESTINATION);
  }

  sourceAddressText(): string {
    return this.addressText(this.sourceAddressOffset);
  }

  destinationAddressText(): string {
    return this.addressText(this.destinationAddressOffset);
  }

  /** Whether the source address equals the address bytes at other[at]. */
  sourceAddressEquals(other: Uint8Array, at: number): boolean {
    return this.addressEquals(this.sourceAddressOffset, other, at);
  }

  destinationAddressEquals(other: Uint8Array, at: number): boolean {
    return this.addressEquals(this.destinationAddressOffset, other, at);
  }

  /** Copies the source address (4 or 16 bytes) to target[at]. */
  copySourceAddress(target: Uint8Array, at: number): void {
    this.copyAddress(this.sourceAddressOffset, target, at);
  }

  copyDestinationAddress(target: Uint8Array, at: number): void {
    this.copyAddress(this.destinationAddressOffset, target, at);
  }

  /** TCP or UDP source port; -1 when the packet has none. */
  get sourcePort(): number {
    return this.hasPorts ? readUint16(this.packet, this.transportOffset + TCP_SOURCE_PORT) : -1;
  }

  /** TCP or UDP destination port; -1 when the packet has none. */
  get destinationPort(): number {
    return this.hasPorts
      ? readUint16(this.packet, this.transportOffset + TCP_DESTINATION_PORT)
      : -1;
  }

  /** ICMP type (ICMPv6 for IPv6); -1 when the packet is not ICMP of its IP version. */
  get icmpType(): number {
    return this.isIcmp ? this.packet[this.transportOffset + ICMP_TYPE]! : -1;
  }

  get icmpCode(): number {
    return this.isIcmp ? this.packet[this.transportOffset + ICMP_CODE]! : -1;
  }

  /** Echo request or reply identifier; -1 for anything else. */
  get echoIdentifier(): number {
    return this.isEcho ? readUint16(this.packet, this.transportOffset + ICMP_ECHO_IDENTIFIER) : -1;
  }

  get echoSequence(): number {
    return this.isEcho ? readUint16(this.packet, this.transportOffset + ICMP_ECHO_SEQUENCE) : -1;
  }

  get isEcho(): boolean {
    if (!this.isIcmp || this.transportLength < ICMP_HEADER_LENGTH) return false;
    const type = this.packet[this.transportOffset + ICMP_TYPE]!;
    return this.version === 4
      ? type === ICMP_ECHO_REQUEST || type === ICMP_ECHO_REPLY
      : type === ICMPV6_ECHO_REQUEST || type === ICMPV6_ECHO_REPLY;
  }

  /** TCP header length in bytes; -1 when not TCP with its header here. */
  get tcpHeaderLength(): number {
    return this.isTcp ? (this.packet[this.transportOffset + TCP_DATA_OFFSET]! >> 4) * 4 : -1;
  }

  /** The TCP flags byte (CWR … FIN); -1 when not TCP. */
  get tcpFlags(): number {
    return this.isTcp ? this.packet[this.transportOffset + TCP_FLAGS]! : -1;
  }

  /** The TCP sequence number as an unsigned 32-bit value; -1 when not TCP. */
  get tcpSequence(): number {
    return this.isTcp ? readUint32(this.packet, this.transportOffset + TCP_SEQUENCE) : -1;
  }

  /** Verifies the TCP/UDP/ICMP/ICMPv6 checksum; false for fragments and other protocols. */
  verifyTransportChecksum(): boolean {
    if (this.fragmented) return false;
    return verifyTransportChecksum(
      this.packet,
      this.offset,
      this.transportOffset,
      this.transportLength,
      this.protocol,
    );
  }

  /** Rewrites the IPv4 header checksum and, unless fragmented, the upper-layer checksum. */
  fixChecksums(): void {
    if (this.version === 4) fixIpv4HeaderChecksum(this.packet, this.offset, this.headerLength);
    if (!this.fragmented) {
      fixTransportChecksum(
        this.packet,
        this.offset,
        this.transportOffset,
        this.transportLength,
        this.protocol,
      );
    }
  }

  private get hasPorts(): boolean {
    return (
      this.hasTransportHeader && (this.protocol === IPPROTO_TCP || this.protocol === IPPROTO_UDP)
    );
  }

  private get isTcp(): boolean {
    return this.hasTransportHeader && this.protocol === IPPROTO_TCP;
  }

  private get isIcmp(): boolean {
    return (
      this.hasTransportHeader &&
      this.protocol === (this.version === 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6)
    );
  }

  private parseIpv4(length: number, checkHeaderChecksum: boolean): string | null {
    const packet = this.packet;
    const offset = this.offset;
    if (length < IPV4_MIN_HEADER_LENGTH) return 'ipv4: truncated header';
    const headerLength = (packet[offset]! & 0x0f) * 4;
    if (headerLength < IPV4_MIN_HEADER_LENGTH) return 'ipv4: IHL below 5';
    if (headerLength > length) return 'ipv4: IHL beyond the buffer';
    const totalLength = readUint16(packet, offset + IPV4_TOTAL_LENGTH);
    if (totalLength < headerLength) return 'ipv4: total length shorter than the header';
    if (totalLength > length) return 'ipv4: total length beyond the buffer';
    if (checkHeaderChecksum && !verifyIpv4HeaderChecksum(packet, offset, headerLength)) {
      return 'ipv4: bad header checksum';
    }
    const flagsAndOffset = readUint16(packet, offset + IPV4_FLAGS_FRAGMENT_OFFSET);
    this.moreFragments = (flagsAndOffset & IPV4_FLAG_MORE_FRAGMENTS) !== 0;
    this.fragmentOffset = (flagsAndOffset & IPV4_FRAGMENT_OFFSET_MASK) * 8;
    this.fragmented = this.moreFragments || this.fragmentOffset !== 0;
    this.fragmentId = readUint16(packet, offset + IPV4_IDENTIFICATION);
    if (this.fragmentOffset + totalLength - headerLength > IPV4_MAX_PACKET_LENGTH) {
      return 'ipv4: fragment ends beyond 65535 bytes';
    }
    this.length = totalLength;
    this.protocol = packet[offset + IPV4_PROTOCOL]!;
    this.transportOffset = offset + headerLength;
    this.transportLength = totalLength - headerLength;
    return null;
  }

  private parseIpv6(length: number): string | null {
    const packet = this.packet;
    const offset = this.offset;
    if (length < IPV6_HEADER_LENGTH) return 'ipv6: truncated header';
    const totalLength = IPV6_HEADER_LENGTH + readUint16(packet, offset + IPV6_PAYLOAD_LENGTH);
    if (totalLength > length) return 'ipv6: payload length beyond the buffer';
    const chain = this.chain;
    const reason = walkIpv6HeaderChain(packet, offset, totalLength, chain);
    if (reason !== null) return reason;
    this.fragmented = chain.fragmented;
    this.fragmentOffset = chain.fragmentOffset;
    this.moreFragments = chain.moreFragments;
    this.fragmentId = chain.fragmentId;
    this.length = totalLength;
    this.protocol = chain.upperLayerProtocol;
    this.transportOffset = chain.upperLayerOffset;
    this.transportLength = offset + totalLength - chain.upperLayerOffset;
    if (this.fragmentOffset + this.transportLength > IPV6_MAX_PAYLOAD_LENGTH) {
      return 'ipv6: fragment ends beyond 65535 bytes';
    }
    return null;
  }

  private parseTransport(): string | null {
    if (!this.hasTransportHeader) return null;
    const at = this.transportOffset;
    const available = this.transportLength;
    switch (this.protocol) {
      case IPPROTO_TCP: {
        if (available < TCP_MIN_HEADER_LENGTH) return 'tcp: truncated header';
        const headerLength = (this.packet[at + TCP_DATA_OFFSET]! >> 4) * 4;
        if (headerLength < TCP_MIN_HEADER_LENGTH) return 'tcp: data offset below 5';
        if (headerLength > available) return 'tcp: data offset beyond the packet';
        return null;
      }
      case IPPROTO_UDP: {
        if (available < UDP_HEADER_LENGTH) return 'udp: truncated header';
        if (this.fragmented) return null;
        const udpLength = readUint16(this.packet, at + UDP_LENGTH);
        if (udpLength < UDP_HEADER_LENGTH) return 'udp: length below 8';
        if (udpLength > available) return 'udp: length beyond the packet';
        this.transportLength = udpLength;
        return null;
      }
      case IPPROTO_ICMP:
      case IPPROTO_ICMPV6:
        return available < 4 ? 'icmp: truncated header' : null;
      default:
        return null;
    }
  }

  private addressText(at: number): string {
    return formatAddress(this.version === 4 ? 4 : 6, this.packet, at);
  }

  private addressEquals(at: number, other: Uint8Array, otherAt: number): boolean {
    const length = this.addressLength;
    if (otherAt < 0 || otherAt + length > other.length) return false;
    for (let i = 0; i < length; i++) if (this.packet[at + i] !== other[otherAt + i]) return false;
    return true;
  }

  private copyAddress(at: number, target: Uint8Array, targetAt: number): void {
    const length = this.addressLength;
    for (let i = 0; i < length; i++) target[targetAt + i] = this.packet[at + i]!;
  }
}
