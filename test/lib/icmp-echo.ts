/**
 * IPv4 ICMP echo request/reply packets for tests that push pings through a
 * tunnel by hand: building them with correct IPv4 header and ICMP checksums,
 * and parsing them strictly (every checksum and length verified).
 */

const IPV4_HEADER_LENGTH = 20;
const ICMP_HEADER_LENGTH = 8;
const PROTOCOL_ICMP = 1;
const ICMP_ECHO_REPLY = 0;
const ICMP_ECHO_REQUEST = 8;
const DONT_FRAGMENT = 0x4000;

export interface IcmpEcho {
  kind: 'request' | 'reply';
  /** dotted-quad IPv4 addresses */
  source: string;
  destination: string;
  identifier: number;
  sequence: number;
  payload: Uint8Array;
  /** defaults to 64 when building */
  ttl?: number;
}

/** RFC 1071 one's-complement sum of 16-bit big-endian words, complemented. */
export function internetChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += ((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0);
  if (bytes.length % 2 === 1) sum += (bytes[bytes.length - 1] ?? 0) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function writeAddress(view: DataView, offset: number, address: string): void {
  const octets = address.split('.').map(Number);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255)) {
    throw new Error(`not an IPv4 address: ${address}`);
  }
  octets.forEach((octet, i) => view.setUint8(offset + i, octet));
}

function readAddress(bytes: Uint8Array, offset: number): string {
  return Array.from(bytes.subarray(offset, offset + 4)).join('.');
}

let nextIpIdentification = 1;

export function buildIcmpEcho(echo: IcmpEcho): Uint8Array {
  const totalLength = IPV4_HEADER_LENGTH + ICMP_HEADER_LENGTH + echo.payload.length;
  const packet = new Uint8Array(totalLength);
  const view = new DataView(packet.buffer);
  view.setUint8(0, 0x45); // version 4, header length 5 words
  view.setUint16(2, totalLength);
  view.setUint16(4, nextIpIdentification++ & 0xffff);
  view.setUint16(6, DONT_FRAGMENT);
  view.setUint8(8, echo.ttl ?? 64);
  view.setUint8(9, PROTOCOL_ICMP);
  writeAddress(view, 12, echo.source);
  writeAddress(view, 16, echo.destination);
  view.setUint16(10, internetChecksum(packet.subarray(0, IPV4_HEADER_LENGTH)));

  const icmp = IPV4_HEADER_LENGTH;
  view.setUint8(icmp, echo.kind === 'request' ? ICMP_ECHO_REQUEST : ICMP_ECHO_REPLY);
  view.setUint16(icmp + 4, echo.identifier);
  view.setUint16(icmp + 6, echo.sequence);
  packet.set(echo.payload, icmp + ICMP_HEADER_LENGTH);
  view.setUint16(icmp + 2, internetChecksum(packet.subarray(icmp)));
  return packet;
}

export class NotAnIcmpEcho extends Error {}

/**
 * Parses an IPv4 ICMP echo request or reply. Bytes after the IPv4 total
 * length (WireGuard's padding) are ignored. Throws NotAnIcmpEcho naming the
 * first thing that is wrong.
 */
export function parseIcmpEcho(packet: Uint8Array): IcmpEcho {
  const fail = (reason: string): never => {
    throw new NotAnIcmpEcho(reason);
  };
  if (packet.length < IPV4_HEADER_LENGTH) fail(`too short for IPv4: ${packet.length} bytes`);
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  const versionAndLength = view.getUint8(0);
  if (versionAndLength >> 4 !== 4) fail(`IP version ${versionAndLength >> 4}`);
  const headerLength = (versionAndLength & 0x0f) * 4;
  const totalLength = view.getUint16(2);
  if (headerLength < IPV4_HEADER_LENGTH || totalLength < headerLength + ICMP_HEADER_LENGTH) {
    fail(`bad IPv4 lengths: header ${headerLength}, total ${totalLength}`);
  }
  if (totalLength > packet.length)
    fail(`truncated: total length ${totalLength} > ${packet.length}`);
  if (internetChecksum(packet.subarray(0, headerLength)) !== 0) fail('bad IPv4 header checksum');
  if ((view.getUint16(6) & 0x3fff) !== 0) fail('fragment');
  if (view.getUint8(9) !== PROTOCOL_ICMP) fail(`IP protocol ${view.getUint8(9)}, not ICMP`);

  const icmp = packet.subarray(headerLength, totalLength);
  if (internetChecksum(icmp) !== 0) fail('bad ICMP checksum');
  const type = icmp[0];
  if (type !== ICMP_ECHO_REQUEST && type !== ICMP_ECHO_REPLY) fail(`ICMP type ${type}`);
  if (icmp[1] !== 0) fail(`ICMP code ${icmp[1]}`);
  const icmpView = new DataView(icmp.buffer, icmp.byteOffset, icmp.byteLength);
  return {
    kind: type === ICMP_ECHO_REQUEST ? 'request' : 'reply',
    source: readAddress(packet, 12),
    destination: readAddress(packet, 16),
    identifier: icmpView.getUint16(4),
    sequence: icmpView.getUint16(6),
    payload: icmp.slice(ICMP_HEADER_LENGTH),
    ttl: view.getUint8(8),
  };
}

/** The echo reply a host owes for `request`. */
export function echoReplyFor(request: IcmpEcho): IcmpEcho {
  return {
    kind: 'reply',
    source: request.destination,
    destination: request.source,
    identifier: request.identifier,
    sequence: request.sequence,
    payload: request.payload,
  };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** Why `reply` does not answer `request`, or undefined when it does. */
export function echoReplyMismatch(request: IcmpEcho, reply: IcmpEcho): string | undefined {
  if (reply.kind !== 'reply') return 'not an echo reply';
  if (reply.source !== request.destination)
    return `reply from ${reply.source}, sent to ${request.destination}`;
  if (reply.destination !== request.source)
    return `reply to ${reply.destination}, sent from ${request.source}`;
  if (reply.identifier !== request.identifier)
    return `identifier ${reply.identifier} != ${request.identifier}`;
  if (reply.sequence !== request.sequence)
    return `sequence ${reply.sequence} != ${request.sequence}`;
  if (!sameBytes(reply.payload, request.payload)) return 'payload differs';
  return undefined;
}
