/**
 * struct virtio_net_hdr (linux/virtio_net.h), which a TUN opened with
 * IFF_VNET_HDR puts before every packet. Its 16-bit fields are in the
 * host's byte order for a legacy (non-VERSION_1) header, which is what TUN
 * uses unless TUNSETVNETBE is set: Gatehouse only runs on little-endian
 * hosts, so they are read and written little-endian.
 */

export const VIRTIO_NET_HDR_LEN = 10;

export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;

export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

const FLAGS = 0;
const GSO_TYPE = 1;
const HDR_LEN = 2;
const GSO_SIZE = 4;
const CSUM_START = 6;
const CSUM_OFFSET = 8;

/** A decoded virtio_net_hdr; reuse one instance rather than allocating per packet. */
export class VirtioNetHeader {
  flags = 0;
  gsoType = VIRTIO_NET_HDR_GSO_NONE;
  /** Length of the headers (IP + transport) that every segment repeats. */
  hdrLen = 0;
  /** Payload bytes per segment. */
  gsoSize = 0;
  /** Where checksumming starts, from the start of the packet. */
  csumStart = 0;
  /** Where the checksum goes, from csumStart. */
  csumOffset = 0;

  decode(buffer: Uint8Array, at: number): void {
    this.flags = buffer[at + FLAGS]!;
    this.gsoType = buffer[at + GSO_TYPE]!;
    this.hdrLen = readUint16Le(buffer, at + HDR_LEN);
    this.gsoSize = readUint16Le(buffer, at + GSO_SIZE);
    this.csumStart = readUint16Le(buffer, at + CSUM_START);
    this.csumOffset = readUint16Le(buffer, at + CSUM_OFFSET);
  }

  encode(buffer: Uint8Array, at: number): void {
    buffer[at + FLAGS] = this.flags;
    buffer[at + GSO_TYPE] = this.gsoType;
    writeUint16Le(buffer, at + HDR_LEN, this.hdrLen);
    writeUint16Le(buffer, at + GSO_SIZE, this.gsoSize);
    writeUint16Le(buffer, at + CSUM_START, this.csumStart);
    writeUint16Le(buffer, at + CSUM_OFFSET, this.csumOffset);
  }

  clear(): void {
    this.flags = 0;
    this.gsoType = VIRTIO_NET_HDR_GSO_NONE;
    this.hdrLen = 0;
    this.gsoSize = 0;
    this.csumStart = 0;
    this.csumOffset = 0;
  }
}

function readUint16Le(buffer: Uint8Array, at: number): number {
  return buffer[at]! | (buffer[at + 1]! << 8);
}

function writeUint16Le(buffer: Uint8Array, at: number, value: number): void {
  buffer[at] = value;
  buffer[at + 1] = value >>> 8;
}
