/**
 * UDP endpoints: on the hot path they are numbers and bytes, never strings
 * (a family, the address bytes and a port); text (`1.2.3.4:51820`,
 * `[fd00::1]:51820`) only at the edges.
 */
import { formatAddress, parseAddress } from './address.ts';
import type { AddressFamily } from './address.ts';

export interface Endpoint {
  family: AddressFamily;
  /** 4 bytes for IPv4, 16 for IPv6. */
  address: Uint8Array;
  port: number;
}

export function parseEndpoint(text: string): Endpoint {
  const match = /^\[([^\]]+)\]:([0-9]{1,5})$/.exec(text) ?? /^([^:[\]]+):([0-9]{1,5})$/.exec(text);
  if (match === null) {
    throw new SyntaxError(`not an endpoint (address:port or [v6]:port): ${JSON.stringify(text)}`);
  }
  const port = Number(match[2]);
  if (port > 0xffff) throw new RangeError(`port out of range in ${JSON.stringify(text)}`);
  const address = parseAddress(match[1]!);
  if (address.family === 4 && text.startsWith('[')) {
    throw new SyntaxError(`an IPv4 endpoint takes no brackets: ${JSON.stringify(text)}`);
  }
  return { ...address, port };
}

export function formatEndpoint(endpoint: Endpoint): string {
  const address = formatAddress(endpoint.family, endpoint.address);
  return endpoint.family === 4 ? `${address}:${endpoint.port}` : `[${address}]:${endpoint.port}`;
}
