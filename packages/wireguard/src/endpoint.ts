/**
 * UDP endpoints: where a peer's datagrams come from and go to.
 */

import { isIPv4, isIPv6 } from 'node:net';

export interface Endpoint {
  /** IPv4 or IPv6 address in text form. */
  address: string;
  port: number;
}

export function isValidEndpoint(endpoint: Endpoint): boolean {
  return (
    typeof endpoint === 'object' &&
    endpoint !== null &&
    Number.isInteger(endpoint.port) &&
    endpoint.port >= 0 &&
    endpoint.port <= 0xffff &&
    (isIPv4(endpoint.address) || isIPv6(endpoint.address))
  );
}

export function sameEndpoint(a: Endpoint | undefined, b: Endpoint): boolean {
  return a !== undefined && a.port === b.port && a.address === b.address;
}

/**
 * The address bytes (4 for IPv4, 16 for IPv6) followed by the port in
 * network order: what a cookie is bound to. Undefined for text that is not
 * an IP address.
 */
export function endpointBytes(endpoint: Endpoint): Uint8Array | undefined {
  const address = addressBytes(endpoint.address);
  if (address === undefined || !Number.isInteger(endpoint.port)) return undefined;
  const bytes = new Uint8Array(address.length + 2);
  bytes.set(address);
  bytes[address.length] = (endpoint.port >>> 8) & 0xff;
  bytes[address.length + 1] = endpoint.port & 0xff;
  return bytes;
}

export function addressBytes(address: string): Uint8Array | undefined {
  if (isIPv4(address)) return Uint8Array.from(address.split('.'), Number);
  const zoneless = address.split('%')[0] ?? '';
  if (!isIPv6(zoneless)) return undefined;
  return ipv6Bytes(zoneless);
}

/** Text form of 4 or 16 address bytes (IPv6 compressed as RFC 5952, by the URL serializer). */
export function formatAddressBytes(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return new URL(`http://[${groups.join(':')}]`).hostname.slice(1, -1);
}

function ipv6Bytes(address: string): Uint8Array {
  let text = address;
  const groups: number[] = [];
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  let embeddedIPv4: Uint8Array | undefined;
  if (isIPv4(tail)) {
    embeddedIPv4 = Uint8Array.from(tail.split('.'), Number);
    text = text.slice(0, lastColon + 1) + '0:0';
  }
  const [head = '', rest] = text.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const restGroups = rest === undefined || rest === '' ? [] : rest.split(':');
  const missing = 8 - headGroups.length - restGroups.length;
  for (const group of headGroups) groups.push(parseInt(group, 16));
  for (let i = 0; i < missing; i++) groups.push(0);
  for (const group of restGroups) groups.push(parseInt(group, 16));
  const bytes = new Uint8Array(16);
  groups.forEach((group, i) => {
    bytes[i * 2] = group >>> 8;
    bytes[i * 2 + 1] = group & 0xff;
  });
  if (embeddedIPv4 !== undefined) bytes.set(embeddedIPv4, 12);
  return bytes;
}
