/**
 * Endpoints on the hot path are numbers and bytes, never strings: a family
 * (4 or 6), 16 address bytes (IPv4 uses the first 4) and a port. These
 * helpers convert to and from text at the edges (configuration, logs).
 */
import { isIP } from 'node:net';

export type AddressFamily = 4 | 6;

export interface Endpoint {
  family: AddressFamily;
  /** 4 bytes for IPv4, 16 for IPv6. */
  address: Uint8Array;
  port: number;
}

export function parseEndpoint(text: string): Endpoint {
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(text);
  const plain = /^([^:]+):(\d+)$/.exec(text);
  const match = bracketed ?? plain;
  if (match === null) throw new SyntaxError(`not an endpoint (address:port or [v6]:port): ${text}`);
  const port = Number(match[2]);
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw new RangeError(`port out of range in ${text}`);
  }
  return { ...parseAddress(match[1]!), port };
}

export function parseAddress(text: string): { family: AddressFamily; address: Uint8Array } {
  const version = isIP(text);
  if (version === 4) return { family: 4, address: Uint8Array.from(text.split('.'), Number) };
  if (version === 6) return { family: 6, address: parseIpv6(text) };
  throw new SyntaxError(`not an IP address: ${text}`);
}

export function formatAddress(family: AddressFamily, bytes: Uint8Array, offset = 0): string {
  if (family === 4) return Array.from(bytes.subarray(offset, offset + 4)).join('.');
  const groups: string[] = [];
  for (let index = 0; index < 16; index += 2) {
    groups.push(((bytes[offset + index]! << 8) | bytes[offset + index + 1]!).toString(16));
  }
  return compressIpv6(groups);
}

export function formatEndpoint(endpoint: Endpoint): string {
  const address = formatAddress(endpoint.family, endpoint.address);
  return endpoint.family === 4 ? `${address}:${endpoint.port}` : `[${address}]:${endpoint.port}`;
}

function parseIpv6(text: string): Uint8Array {
  const bytes = new Uint8Array(16);
  let body = text;
  const embeddedV4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(body);
  if (embeddedV4 !== null) {
    const v4 = embeddedV4[1]!.split('.').map(Number);
    body = `${body.slice(0, -embeddedV4[1]!.length)}${((v4[0]! << 8) | v4[1]!).toString(16)}:${((v4[2]! << 8) | v4[3]!).toString(16)}`;
  }
  const [head = '', tail] = body.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined
      ? headGroups
      : [
          ...headGroups,
          ...Array<string>(8 - headGroups.length - tailGroups.length).fill('0'),
          ...tailGroups,
        ];
  groups.forEach((group, index) => {
    const value = parseInt(group, 16);
    bytes[index * 2] = value >> 8;
    bytes[index * 2 + 1] = value & 0xff;
  });
  return bytes;
}

function compressIpv6(groups: string[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < 8;) {
    let end = start;
    while (end < 8 && groups[end] === '0') end++;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end === start ? start + 1 : end;
  }
  if (bestStart < 0) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLength).join(':')}`;
}
