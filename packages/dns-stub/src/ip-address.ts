/**
 * IPv4 and IPv6 addresses as big integers, CIDR ranges, and the
 * canonical text form (RFC 5952 for IPv6) so that the same address always
 * prints the same way in answers, PTR names and maps.
 */
import { isIPv4, isIPv6 } from 'node:net';

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
  if (isIPv4(text)) return { family: 4, value: parseIpv4(text) };
  if (isIPv6(text)) return { family: 6, value: parseIpv6(text) };
  throw new Error(`not an IP address: ${JSON.stringify(text)}`);
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
  return address.family === 4 ? formatIpv4(address.value) : formatIpv6(address.value);
}

export function formatIpRange(range: IpRange): string {
  return `${formatIpAddress({ family: range.family, value: range.base })}/${range.prefixLength}`;
}

function parseIpv4(text: string): bigint {
  return text.split('.').reduce((value, octet) => (value << 8n) | BigInt(Number(octet)), 0n);
}

function parseIpv6(text: string): bigint {
  let head = text;
  let embeddedIpv4: bigint | undefined;
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    embeddedIpv4 = parseIpv4(text.slice(lastColon + 1));
    head = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const [left = '', right] = head.split('::');
  const leftGroups = left === '' ? [] : left.split(':');
  const rightGroups = right === undefined || right === '' ? [] : right.split(':');
  const missing = 8 - leftGroups.length - rightGroups.length;
  const groups = [
    ...leftGroups,
    ...Array<string>(right === undefined ? 0 : missing).fill('0'),
    ...rightGroups,
  ];
  let value = groups.reduce((acc, group) => (acc << 16n) | BigInt(parseInt(group, 16)), 0n);
  if (embeddedIpv4 !== undefined) value = (value & ~0xffffffffn) | embeddedIpv4;
  return value;
}

function formatIpv4(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join('.');
}

function formatIpv6(value: bigint): string {
  const groups: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(Number((value >> shift) & 0xffffn));
  // RFC 5952: compress the longest run (first on a tie) of at least two zero groups.
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < 8;) {
    if (groups[start] !== 0) {
      start += 1;
      continue;
    }
    let end = start;
    while (end < 8 && groups[end] === 0) end += 1;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end;
  }
  const hex = groups.map((group) => group.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}
