import { readUint16, readUint32, writeUint16, writeUint32 } from './byte-order.ts';
import { fixIpv4HeaderChecksum, fixTransportChecksum, onesComplementSum } from './checksum.ts';
import { copyBytes } from './copy-bytes.ts';
import {
  IPV4_IDENTIFICATION,
  IPV4_TOTAL_LENGTH,
  IPV6_HEADER_LENGTH,
  IPV6_PAYLOAD_LENGTH,
  TCP_CHECKSUM,
  TCP_FLAG_CWR,
  TCP_FLAG_FIN,
  TCP_FLAG_PSH,
  TCP_FLAGS,
  TCP_SEQUENCE,
  UDP_CHECKSUM,
  UDP_HEADER_LENGTH,
  UDP_LENGTH,
} from './header-layout.ts';
import { IpPacket } from './ip-packet.ts';
import { IPPROTO_TCP, IPPROTO_UDP } from './ip-protocol.ts';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VIRTIO_NET_HDR_LEN,
  VirtioNetHeader,
} from './virtio-net-header.ts';

/** Where split packets' lengths go: a plain array or a typed array. */
export interface WritableLengths {
  [index: number]: number;
  readonly length: number;
}

/**
 * Splits what one read from an IFF_VNET_HDR TUN returned — a virtio_net_hdr
 * and the packet after it, at input[inputOffset .. inputOffset+inputLength)
 * — into ordinary IP packets, copying packet i to outputs[i] at
 * `outputOffset` and its length to outputLengths[i].
 *
 * A TSO/USO super-packet (gso_type TCPV4, TCPV6, UDP_L4) becomes segments
 * of at most gso_size payload bytes each, with IPv4 total length and ID
 * (incremented per segment), IPv6 payload length, TCP sequence numbers, UDP
 * lengths and all checksums rewritten; FIN and PSH stay on the last TCP
 * segment only, CWR on the first only. A packet without GSO is copied to
 * outputs[0], its partial checksum completed when NEEDS_CSUM is set.
 *
 * Returns the number of packets written, or why the input cannot be split
 * (outputs are then unspecified). Never throws on hostile input; the only
 * allocation is a temporary subarray when input and outputs do not share an
 * ArrayBuffer (see copyBytes).
 */
export function gsoSplit(
  input: Uint8Array,
  inputOffset: number,
  inputLength: number,
  outputs: readonly Uint8Array[],
  outputOffset: number,
  outputLengths: WritableLengths,
): number | string {
  if (inputOffset < 0 || inputLength < 0 || inputOffset + inputLength > input.length) {
    return 'gso: input range beyond the buffer';
  }
  if (inputLength < VIRTIO_NET_HDR_LEN) return 'gso: shorter than a virtio_net_hdr';
  const header = splitHeader;
  header.decode(input, inputOffset);
  const packetOffset = inputOffset + VIRTIO_NET_HDR_LEN;
  const packetLength = inputLength - VIRTIO_NET_HDR_LEN;

  if (header.gsoType === VIRTIO_NET_HDR_GSO_NONE) {
    if (outputs.length < 1 || outputLengths.length < 1) return 'gso: no output slot';
    const output = outputs[0]!;
    if (outputOffset < 0 || outputOffset + packetLength > output.length)
      return 'gso: output slot too small';
    copyBytes(input, packetOffset, output, outputOffset, packetLength);
    if ((header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
      const reason = completePartialChecksum(output, outputOffset, packetLength, header);
      if (reason !== null) return reason;
    }
    outputLengths[0] = packetLength;
    return 1;
  }
  return splitSegments(
    input,
    packetOffset,
    packetLength,
    header,
    outputs,
    outputOffset,
    outputLengths,
  );
}

/**
 * Completes a partial checksum as virtio's NEEDS_CSUM asks: the field at
 * csum_start + csum_offset holds the pseudo-header sum, and the checksum
 * covers everything from csum_start to the end of the packet. A UDP result
 * of 0 is sent as 0xffff, as the kernel does. Null, or why it cannot.
 */
export function completePartialChecksum(
  packet: Uint8Array,
  offset: number,
  length: number,
  header: VirtioNetHeader,
): string | null {
  const start = header.csumStart;
  if (start >= length || header.csumOffset + 2 > length - start) {
    return 'gso: csum_start or csum_offset beyond the packet';
  }
  const field = offset + start + header.csumOffset;
  let checksum = ~onesComplementSum(packet, offset + start, length - start) & 0xffff;
  if (checksum === 0 && header.csumOffset === UDP_CHECKSUM) checksum = 0xffff;
  writeUint16(packet, field, checksum);
  return null;
}

const splitHeader = new VirtioNetHeader();
const view = new IpPacket();

function splitSegments(
  input: Uint8Array,
  packetOffset: number,
  packetLength: number,
  header: VirtioNetHeader,
  outputs: readonly Uint8Array[],
  outputOffset: number,
  outputLengths: WritableLengths,
): number | string {
  const gsoType = header.gsoType;
  if ((gsoType & VIRTIO_NET_HDR_GSO_ECN) !== 0) return 'gso: GSO_ECN was not offered';
  if (gsoType === VIRTIO_NET_HDR_GSO_UDP) return 'gso: UFO (GSO_UDP) was not offered';
  if (
    gsoType !== VIRTIO_NET_HDR_GSO_TCPV4 &&
    gsoType !== VIRTIO_NET_HDR_GSO_TCPV6 &&
    gsoType !== VIRTIO_NET_HDR_GSO_UDP_L4
  ) {
    return 'gso: unknown gso_type';
  }
  if (header.gsoSize === 0) return 'gso: gso_size is 0';
  if (header.hdrLen > packetLength) return 'gso: hdr_len beyond the packet';

  const reason = view.parse(input, packetOffset, packetLength, false);
  if (reason !== null) return reason;
  const isTcp = gsoType !== VIRTIO_NET_HDR_GSO_UDP_L4;
  if (isTcp && view.protocol !== IPPROTO_TCP) return 'gso: TCP gso_type on a non-TCP packet';
  if (!isTcp && view.protocol !== IPPROTO_UDP) return 'gso: UDP_L4 gso_type on a non-UDP packet';
  if (gsoType === VIRTIO_NET_HDR_GSO_TCPV4 && view.version !== 4)
    return 'gso: TCPV4 on an IPv6 packet';
  if (gsoType === VIRTIO_NET_HDR_GSO_TCPV6 && view.version !== 6)
    return 'gso: TCPV6 on an IPv4 packet';
  if (view.fragmented) return 'gso: fragmented super-packet';
  if (header.csumStart !== view.headerLength) return 'gso: csum_start is not the transport header';
  if (
    (header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 &&
    header.csumOffset !== (isTcp ? TCP_CHECKSUM : UDP_CHECKSUM)
  ) {
    return 'gso: csum_offset is not the transport checksum';
  }

  // hdr_len from the kernel is only a hint; the real headers decide.
  const ipHeaderLength = view.headerLength;
  const headersLength = ipHeaderLength + (isTcp ? view.tcpHeaderLength : UDP_HEADER_LENGTH);
  const payloadLength = view.length - headersLength;
  if (payloadLength <= 0) return 'gso: super-packet without payload';
  const gsoSize = header.gsoSize;
  const segmentCount = Math.ceil(payloadLength / gsoSize);
  if (segmentCount > outputs.length || segmentCount > outputLengths.length) {
    return 'gso: more segments than output slots';
  }
  const largestSegment = headersLength + Math.min(gsoSize, payloadLength);
  if (outputOffset < 0) return 'gso: output slot too small';
  for (let i = 0; i < segmentCount; i++) {
    if (outputOffset + largestSegment > outputs[i]!.length) return 'gso: output slot too small';
  }

  const isIpv4 = view.version === 4;
  const firstId = isIpv4 ? readUint16(input, packetOffset + IPV4_IDENTIFICATION) : 0;
  const transportAt = outputOffset + ipHeaderLength;
  const firstSequence = isTcp ? readUint32(input, view.transportOffset + TCP_SEQUENCE) : 0;
  const originalFlags = isTcp ? input[view.transportOffset + TCP_FLAGS]! : 0;
  const protocol = view.protocol;

  for (let i = 0; i < segmentCount; i++) {
    const output = outputs[i]!;
    const payloadStart = i * gsoSize;
    const chunk = Math.min(gsoSize, payloadLength - payloadStart);
    const segmentLength = headersLength + chunk;
    copyBytes(input, packetOffset, output, outputOffset, headersLength);
    copyBytes(
      input,
      packetOffset + headersLength + payloadStart,
      output,
      outputOffset + headersLength,
      chunk,
    );

    if (isIpv4) {
      writeUint16(output, outputOffset + IPV4_TOTAL_LENGTH, segmentLength);
      writeUint16(output, outputOffset + IPV4_IDENTIFICATION, (firstId + i) & 0xffff);
      fixIpv4HeaderChecksum(output, outputOffset, ipHeaderLength);
    } else {
      writeUint16(output, outputOffset + IPV6_PAYLOAD_LENGTH, segmentLength - IPV6_HEADER_LENGTH);
    }
    if (isTcp) {
      writeUint32(output, transportAt + TCP_SEQUENCE, (firstSequence + payloadStart) >>> 0);
      let flags = originalFlags;
      if (i !== segmentCount - 1) flags &= ~(TCP_FLAG_FIN | TCP_FLAG_PSH);
      if (i !== 0) flags &= ~TCP_FLAG_CWR;
      output[transportAt + TCP_FLAGS] = flags;
    } else {
      writeUint16(output, transportAt + UDP_LENGTH, segmentLength - ipHeaderLength);
    }
    fixTransportChecksum(
      output,
      outputOffset,
      transportAt,
      segmentLength - ipHeaderLength,
      protocol,
    );
    outputLengths[i] = segmentLength;
  }
  return segmentCount;
}
