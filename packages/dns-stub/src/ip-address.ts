/**
 * IPv4 and IPv6 addresses as big integers and CIDR ranges, for the proxy
 * address arithmetic; text goes through @gatehouse/addresses (RFC 5952), so
 * the same address always prints the same way in answers, PTR names and maps.
 */
import { formatAddress, parseAddress } from '@gatehouse/addresses';

export type IpFamily = 4 | 6;

export interface IpAddress {
  family: IpFamily;
  value: bigint;
}

export interface IpRange {
  family: IpFamily;
  base: bigint;
  prefixLength: number;
}

export function bitLength(family: IpFamily): number {
  return family === 4 ? 32 : 128;
}

export function parseIpAddress(text: string): IpAddress {
  const { family, address } = parseAddress(text);
  return { family, value: address.reduce((value, byte) => (value << 8n) | BigInt(byte), 0n) };
}

/** `address/prefix`; the host bits must be zero. */
export function parseIpRange(text: string): IpRange {
  const slash = text.indexOf('/');
  if (slash < 0) throw new Error(`not a CIDR range (no prefix length): ${JSON.stringify(text)}`);
  const address = parseIpAddress(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  const prefixLength = Number(prefixText);
  const bits = bitLength(address.family);
  if (!/^\d+$/.test(prefixText) || prefixLength > bits) {
    throw new Error(`bad prefix length in ${JSON.stringify(text)}`);
  }
  const hostBits = BigInt(bits - prefixLength);
  if ((address.value & ((1n << hostBits) - 1n)) !== 0n) {
    throw new Error(`host bits set in ${JSON.stringify(text)}`);
  }
  return { family: address.family, base: address.value, prefixLength };
}

export function rangeSize(range: IpRange): bigint {
  return 1n << BigInt(bitLength(range.family) - range.prefixLength);
}

export function rangeContains(range: IpRange, address: IpAddress): boolean {
  return (
    address.family === range.family &&
    address.value >= range.base &&
    address.value < range.base + rangeSize(range)
  );
}

export function formatIpAddress(address: IpAddress): string {
  const bytes = new Uint8Array(bitLength(address.family) / 8);
  for (let index = bytes.length - 1, value = address.value; index >= 0; index--, value >>= 8n) {
    bytes[index] = Number(value & 0xffn);
  }
  return formatAddress(address.family, bytes);
}

export function formatIpRange(range: IpRange): string {
  return `${formatIpAddress({ family: range.family, value: range.base })}/${range.prefixLength}`;
}
