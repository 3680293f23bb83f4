/**
 * IP prefixes (`address/length`; a bare address is a host prefix). Parsing
 * clears the host bits, as WireGuard's AllowedIPs do; `hasHostBits` tells a
 * check that wants to refuse them instead.
 */
import { formatAddress, parseAddress } from './address.ts';
import type { AddressFamily } from './address.ts';

export interface Prefix {
  family: AddressFamily;
  /** The network address: host bits cleared. */
  address: Uint8Array;
  length: number;
}

export function parsePrefix(text: string): Prefix {
  const { family, address, length } = parseAddressAndLength(text);
  clearHostBits(address, length);
  return { family, address, length };
}

/** Whether `text`'s address has bits set past its prefix length (`10.0.0.1/24`). */
export function hasHostBits(text: string): boolean {
  const { address, length } = parseAddressAndLength(text);
  const network = address.slice();
  clearHostBits(network, length);
  return network.some((byte, index) => byte !== address[index]);
}

/** `address/length` with the network address in canonical text. */
export function formatPrefix(prefix: Prefix): string {
  return `${formatAddress(prefix.family, prefix.address)}/${prefix.length}`;
}

/** `10.1.2.3/8` → `10.0.0.0/8`, `fd00::1` → `fd00::1/128`. */
export function normalizePrefix(text: string): string {
  return formatPrefix(parsePrefix(text));
}

/** Whether the address at `offset` of `bytes` (of the prefix's family) lies inside `prefix`. */
export function prefixContains(prefix: Prefix, bytes: Uint8Array, offset = 0): boolean {
  const wholeBytes = prefix.length >> 3;
  for (let index = 0; index < wholeBytes; index++) {
    if (bytes[offset + index] !== prefix.address[index]) return false;
  }
  const restBits = prefix.length & 7;
  if (restBits === 0) return true;
  const mask = (0xff << (8 - restBits)) & 0xff;
  return (bytes[offset + wholeBytes]! & mask) === prefix.address[wholeBytes];
}

function parseAddressAndLength(text: string): Prefix {
  const parts = text.split('/');
  if (parts.length > 2)
    throw new SyntaxError(`not a prefix (more than one "/"): ${JSON.stringify(text)}`);
  const { family, address } = parseAddress(parts[0]!);
  const maxLength = family === 4 ? 32 : 128;
  if (parts.length === 1) return { family, address, length: maxLength };
  const lengthText = parts[1]!;
  if (!/^(0|[1-9][0-9]{0,2})$/.test(lengthText) || Number(lengthText) > maxLength) {
    throw new RangeError(
      `bad prefix length in ${JSON.stringify(text)}: IPv${family} takes 0–${maxLength}`,
    );
  }
  return { family, address, length: Number(lengthText) };
}

function clearHostBits(address: Uint8Array, length: number): void {
  for (let bit = length; bit < address.length * 8; bit++)
    address[bit >> 3]! &= ~(0x80 >> (bit & 7));
}
