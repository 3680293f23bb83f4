/**
 * UDP endpoints: where a peer's datagrams come from and go to.
 */

import { formatAddress, isAddress, parseAddress } from '@gatehouse/addresses';

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
    isAddress(endpoint.address)
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

/** The address's 4 or 16 bytes; undefined for text that is not an IP address. */
export function addressBytes(address: string): Uint8Array | undefined {
  return isAddress(address) ? parseAddress(address).address : undefined;
}

/** Text form of 4 or 16 address bytes (RFC 5952 for IPv6). */
export function formatAddressBytes(bytes: Uint8Array): string {
  return formatAddress(bytes.length === 4 ? 4 : 6, bytes);
}
