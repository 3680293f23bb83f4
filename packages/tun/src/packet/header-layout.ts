/**
 * Byte offsets and sizes of the header fields Gatehouse reads or rewrites,
 * from RFC 791 (IPv4), RFC 8200 (IPv6), RFC 9293 (TCP), RFC 768 (UDP),
 * RFC 792 (ICMP) and RFC 4443 (ICMPv6). Offsets are from the header start.
 */

export const IPV4_MIN_HEADER_LENGTH = 20;
export const IPV4_TOS = 1;
export const IPV4_TOTAL_LENGTH = 2;
export const IPV4_IDENTIFICATION = 4;
export const IPV4_FLAGS_FRAGMENT_OFFSET = 6;
export const IPV4_TTL = 8;
export const IPV4_PROTOCOL = 9;
export const IPV4_HEADER_CHECKSUM = 10;
export const IPV4_SOURCE = 12;
export const IPV4_DESTINATION = 16;
export const IPV4_ADDRESS_LENGTH = 4;
export const IPV4_FLAG_RESERVED = 0x8000;
export const IPV4_FLAG_DONT_FRAGMENT = 0x4000;
export const IPV4_FLAG_MORE_FRAGMENTS = 0x2000;
export const IPV4_FRAGMENT_OFFSET_MASK = 0x1fff;
export const IPV4_MAX_PACKET_LENGTH = 0xffff;

export const IPV6_HEADER_LENGTH = 40;
export const IPV6_PAYLOAD_LENGTH = 4;
export const IPV6_NEXT_HEADER = 6;
export const IPV6_HOP_LIMIT = 7;
export const IPV6_SOURCE = 8;
export const IPV6_DESTINATION = 24;
export const IPV6_ADDRESS_LENGTH = 16;
export const IPV6_MAX_PAYLOAD_LENGTH = 0xffff;

export const TCP_MIN_HEADER_LENGTH = 20;
export const TCP_SOURCE_PORT = 0;
export const TCP_DESTINATION_PORT = 2;
export const TCP_SEQUENCE = 4;
export const TCP_ACKNOWLEDGMENT = 8;
export const TCP_DATA_OFFSET = 12;
export const TCP_FLAGS = 13;
export const TCP_WINDOW = 14;
export const TCP_CHECKSUM = 16;
export const TCP_FLAG_FIN = 0x01;
export const TCP_FLAG_SYN = 0x02;
export const TCP_FLAG_RST = 0x04;
export const TCP_FLAG_PSH = 0x08;
export const TCP_FLAG_ACK = 0x10;
export const TCP_FLAG_URG = 0x20;
export const TCP_FLAG_ECE = 0x40;
export const TCP_FLAG_CWR = 0x80;

export const UDP_HEADER_LENGTH = 8;
export const UDP_SOURCE_PORT = 0;
export const UDP_DESTINATION_PORT = 2;
export const UDP_LENGTH = 4;
export const UDP_CHECKSUM = 6;

export const ICMP_HEADER_LENGTH = 8;
export const ICMP_TYPE = 0;
export const ICMP_CODE = 1;
export const ICMP_CHECKSUM = 2;
export const ICMP_ECHO_IDENTIFIER = 4;
export const ICMP_ECHO_SEQUENCE = 6;
export const ICMP_ECHO_REPLY = 0;
export const ICMP_ECHO_REQUEST = 8;
export const ICMPV6_ECHO_REQUEST = 128;
export const ICMPV6_ECHO_REPLY = 129;
