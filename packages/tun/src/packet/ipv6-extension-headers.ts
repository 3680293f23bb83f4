import {
  IPPROTO_AH,
  IPPROTO_DSTOPTS,
  IPPROTO_FRAGMENT,
  IPPROTO_HOPOPTS,
  IPPROTO_ROUTING,
} from './ip-protocol.ts';
import { IPV6_HEADER_LENGTH, IPV6_NEXT_HEADER } from './header-layout.ts';

/**
 * How many extension headers a walk follows before it calls the chain
 * overlong. RFC 8200 §4.1 allows each header once (destination options
 * twice); with AH that is 6. A few more tolerate odd but legal senders.
 */
export const IPV6_MAX_EXTENSION_HEADERS = 8;

/**
 * What a walk over an IPv6 extension-header chain found. The caller owns
 * one instance and reuses it, so walking allocates nothing.
 */
export class Ipv6HeaderChain {
  /** The first header that is not an extension header (TCP, UDP, ICMPv6, ESP, No Next Header, …). */
  upperLayerProtocol = 0;
  /** Absolute offset in the buffer where the upper-layer header starts. */
  upperLayerOffset = 0;
  /** True when a Fragment header was seen. */
  fragmented = false;
  /** The Fragment header's offset field, in bytes (0 for the first fragment). */
  fragmentOffset = 0;
  /** The Fragment header's M flag. */
  moreFragments = false;
  /** The Fragment header's identification. */
  fragmentId = 0;
  /** How many extension headers were walked. */
  extensionHeaderCount = 0;
}

/**
 * Walks the extension headers after the fixed IPv6 header that starts at
 * `offset`, within `length` bytes (the caller has already bounded `length`
 * by the payload length). Returns null on success, or why the chain is
 * invalid. Headers after a non-first fragment belong to the reassembled
 * datagram, so the walk stops there.
 */
export function walkIpv6HeaderChain(
  packet: Uint8Array,
  offset: number,
  length: number,
  chain: Ipv6HeaderChain,
): string | null {
  const end = offset + length;
  let nextHeader = packet[offset + IPV6_NEXT_HEADER]!;
  let cursor = offset + IPV6_HEADER_LENGTH;
  chain.fragmented = false;
  chain.fragmentOffset = 0;
  chain.moreFragments = false;
  chain.fragmentId = 0;
  chain.extensionHeaderCount = 0;

  while (isExtensionHeader(nextHeader)) {
    if (chain.extensionHeaderCount === IPV6_MAX_EXTENSION_HEADERS) {
      return 'ipv6: extension-header chain longer than ' + IPV6_MAX_EXTENSION_HEADERS;
    }
    if (nextHeader === IPPROTO_HOPOPTS && chain.extensionHeaderCount !== 0) {
      return 'ipv6: hop-by-hop options header not first';
    }
    if (cursor + 8 > end) return 'ipv6: truncated extension header';
    let headerLength: number;
    if (nextHeader === IPPROTO_FRAGMENT) {
      if (chain.fragmented) return 'ipv6: more than one fragment header';
      headerLength = 8;
      const offsetAndFlags = (packet[cursor + 2]! << 8) | packet[cursor + 3]!;
      chain.fragmented = true;
      chain.fragmentOffset = offsetAndFlags & 0xfff8;
      chain.moreFragments = (offsetAndFlags & 1) === 1;
      chain.fragmentId =
        ((packet[cursor + 4]! << 24) |
          (packet[cursor + 5]! << 16) |
          (packet[cursor + 6]! << 8) |
          packet[cursor + 7]!) >>>
        0;
    } else if (nextHeader === IPPROTO_AH) {
      // RFC 4302 §2.2: length in 4-octet units, minus 2.
      headerLength = (packet[cursor + 1]! + 2) * 4;
    } else {
      // RFC 8200 §4.3–4.6: length in 8-octet units, not counting the first 8.
      headerLength = (packet[cursor + 1]! + 1) * 8;
    }
    if (cursor + headerLength > end) return 'ipv6: truncated extension header';
    chain.extensionHeaderCount++;
    nextHeader = packet[cursor]!;
    cursor += headerLength;
    if (chain.fragmentOffset !== 0) break;
  }
  chain.upperLayerProtocol = nextHeader;
  chain.upperLayerOffset = cursor;
  return null;
}

export function isExtensionHeader(protocol: number): boolean {
  return (
    protocol === IPPROTO_HOPOPTS ||
    protocol === IPPROTO_ROUTING ||
    protocol === IPPROTO_FRAGMENT ||
    protocol === IPPROTO_DSTOPTS ||
    protocol === IPPROTO_AH
  );
}
