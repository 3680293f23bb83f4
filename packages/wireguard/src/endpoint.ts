/**
 * UDP endpoints: where a peer's datagrams come from and go to. The type is
 * `@gatehouse/addresses`' (a family, the address bytes and a port); these
 * are the checks and comparisons the device needs on it.
 */

import type { Endpoint } from '@gatehouse/addresses';

export type { Endpoint };

export function isValidEndpoint(endpoint: Endpoint): boolean {
  return (
    typeof endpoint === 'object' &&
    endpoint !== null &&
    Number.isInteger(endpoint.port) &&
    endpoint.port >= 0 &&
    endpoint.port <= 0xffff &&
    endpoint.address instanceof Uint8Array &&
    endpoint.address.length === (endpoint.family === 4 ? 4 : endpoint.family === 6 ? 16 : -1)
  );
}

export function sameEndpoint(a: Endpoint | undefined, b: Endpoint): boolean {
  if (a === undefined || a.port !== b.port || a.family !== b.family) return false;
  for (let i = 0; i < a.address.length; i++) if (a.address[i] !== b.address[i]) return false;
  return a.address.length === b.address.length;
}

/** The address bytes (4 for IPv4, 16 for IPv6) followed by the port in network order: what a cookie is bound to. */
export function endpointBytes(endpoint: Endpoint): Uint8Array {
  const bytes = new Uint8Array(endpoint.address.length + 2);
  bytes.set(endpoint.address);
  bytes[endpoint.address.length] = (endpoint.port >>> 8) & 0xff;
  bytes[endpoint.address.length + 1] = endpoint.port & 0xff;
  return bytes;
}
