/**
 * Test-only packet construction. Allocates freely; the code under test
 * never uses these.
 */
import { readFileSync } from 'node:fs';

import { IpPacket } from '../src/packet/ip-packet.ts';

export function ipv4Address(text: string): Uint8Array {
  return Uint8Array.from(text.split('.').map(Number));
}

export function ipv6Address(text: string): Uint8Array {
  const [head = '', tail] = text.split('::');
  const groups = (part: string): number[] =>
    part === '' ? [] : part.split(':').map((g) => parseInt(g, 16));
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const all = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  const bytes = new Uint8Array(16);
  all.forEach((group, i) => {
    bytes[i * 2] = group >> 8;
    bytes[i * 2 + 1] = group & 0xff;
  });
  return bytes;
}

export interface Ipv4Options {
  source?: string;
  destination?: string;
  protocol: number;
  payload: Uint8Array;
  identification?: number;
  /** The 16-bit flags + fragment offset field. */
  flagsAndFragmentOffset?: number;
  tos?: number;
  ttl?: number;
  options?: Uint8Array;
}

/** An IPv4 packet with a zero header checksum (fill it with the checksum module). */
export function ipv4Packet(o: Ipv4Options): Uint8Array {
  const options = o.options ?? new Uint8Array(0);
  const headerLength = 20 + options.length;
  const packet = new Uint8Array(headerLength + o.payload.length);
  packet[0] = 0x40 | (headerLength / 4);
  packet[1] = o.tos ?? 0;
  put16(packet, 2, packet.length);
  put16(packet, 4, o.identification ?? 0x1234);
  put16(packet, 6, o.flagsAndFragmentOffset ?? 0x4000);
  packet[8] = o.ttl ?? 64;
  packet[9] = o.protocol;
  packet.set(ipv4Address(o.source ?? '10.0.0.1'), 12);
  packet.set(ipv4Address(o.destination ?? '10.0.0.2'), 16);
  packet.set(options, 20);
  packet.set(o.payload, headerLength);
  return packet;
}

export interface Ipv6Options {
  source?: string;
  destination?: string;
  /** The upper-layer protocol (after any extension headers). */
  protocol: number;
  payload: Uint8Array;
  trafficClass?: number;
  flowLabel?: number;
  hopLimit?: number;
  /** Extension headers in order, each as [protocol number, body without its next-header byte]. */
  extensionHeaders?: Array<[number, Uint8Array]>;
}

/**
 * An IPv6 packet. Extension header bodies are given without their first
 * byte (next header); the builder fills it.
 */
export function ipv6Packet(o: Ipv6Options): Uint8Array {
  const extensions = o.extensionHeaders ?? [];
  const extensionLength = extensions.reduce((sum, [, body]) => sum + 1 + body.length, 0);
  const packet = new Uint8Array(40 + extensionLength + o.payload.length);
  const trafficClass = o.trafficClass ?? 0;
  const flowLabel = o.flowLabel ?? 0;
  packet[0] = 0x60 | (trafficClass >> 4);
  packet[1] = ((trafficClass & 0x0f) << 4) | ((flowLabel >> 16) & 0x0f);
  put16(packet, 2, flowLabel & 0xffff);
  put16(packet, 4, extensionLength + o.payload.length);
  packet[6] = extensions[0]?.[0] ?? o.protocol;
  packet[7] = o.hopLimit ?? 64;
  packet.set(ipv6Address(o.source ?? 'fd00::1'), 8);
  packet.set(ipv6Address(o.destination ?? 'fd00::2'), 24);
  let at = 40;
  extensions.forEach(([, body], i) => {
    packet[at] = extensions[i + 1]?.[0] ?? o.protocol;
    packet.set(body, at + 1);
    at += 1 + body.length;
  });
  packet.set(o.payload, at);
  return packet;
}

/** A hop-by-hop / routing / destination-options body (7 + 8n bytes) with the length byte set. */
export function optionsHeaderBody(units: number): Uint8Array {
  const body = new Uint8Array(7 + units * 8);
  body[0] = units;
  if (body.length > 1) body[1] = 1; // PadN covering the rest.
  if (body.length > 2) body[2] = body.length - 3;
  return body;
}

/** A Fragment header body (7 bytes). */
export function fragmentHeaderBody(fragmentOffset: number, more: boolean, id: number): Uint8Array {
  const body = new Uint8Array(7);
  put16(body, 1, fragmentOffset | (more ? 1 : 0));
  body[3] = id >>> 24;
  body[4] = id >>> 16;
  body[5] = id >>> 8;
  body[6] = id;
  return body;
}

export interface TcpOptions {
  sourcePort?: number;
  destinationPort?: number;
  sequence?: number;
  acknowledgment?: number;
  flags?: number;
  window?: number;
  options?: Uint8Array;
  payload?: Uint8Array;
}

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

/** A TCP segment with a zero checksum. */
export function tcpSegment(o: TcpOptions): Uint8Array {
  const options = o.options ?? new Uint8Array(0);
  const payload = o.payload ?? new Uint8Array(0);
  const headerLength = 20 + options.length;
  const segment = new Uint8Array(headerLength + payload.length);
  put16(segment, 0, o.sourcePort ?? 40000);
  put16(segment, 2, o.destinationPort ?? 443);
  put32(segment, 4, o.sequence ?? 1000);
  put32(segment, 8, o.acknowledgment ?? 5000);
  segment[12] = (headerLength / 4) << 4;
  segment[13] = o.flags ?? TCP_ACK;
  put16(segment, 14, o.window ?? 65535);
  segment.set(options, 20);
  segment.set(payload, headerLength);
  return segment;
}

/** A UDP datagram with a zero checksum. */
export function udpDatagram(
  sourcePort: number,
  destinationPort: number,
  payload: Uint8Array,
): Uint8Array {
  const datagram = new Uint8Array(8 + payload.length);
  put16(datagram, 0, sourcePort);
  put16(datagram, 2, destinationPort);
  put16(datagram, 4, datagram.length);
  datagram.set(payload, 8);
  return datagram;
}

/** Deterministic filler bytes. */
export function patternBytes(length: number, seed = 1): Uint8Array {
  const bytes = new Uint8Array(length);
  let state = seed;
  for (let i = 0; i < length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    bytes[i] = state >>> 24;
  }
  return bytes;
}

export function put16(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 8;
  bytes[at + 1] = value & 0xff;
}

export function put32(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 24;
  bytes[at + 1] = (value >>> 16) & 0xff;
  bytes[at + 2] = (value >>> 8) & 0xff;
  bytes[at + 3] = value & 0xff;
}

/** Fills the IPv4 header checksum and the transport checksum, via the code under test. */
export function withChecksums(packet: Uint8Array): Uint8Array {
  const view = new IpPacket();
  const reason = view.parse(packet, 0, packet.length, false);
  if (reason !== null) throw new Error(`builder made an invalid packet: ${reason}`);
  view.fixChecksums();
  return packet;
}

/** The hex lines of a fixture file, without comments. */
export function readHexFixture(name: string): Uint8Array[] {
  const text = readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');
  return text
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => Uint8Array.from(Buffer.from(line, 'hex')));
}
