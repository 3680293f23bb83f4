/**
 * An account's address ranges as numbers: checking them (family, no host bits, room for
 * hosts, tunnel and proxy ranges apart) and the address at a host index of a range.
 */
import { formatAddress, hasHostBits, parsePrefix, type AddressFamily } from '@gatehouse/addresses';
import { StorageError, type AccountRanges } from './storage.ts';

export interface AddressRange {
  family: AddressFamily;
  /** The network address as a number. */
  network: bigint;
  length: number;
  /** The largest host index handed out (1 is the first; IPv4's broadcast is never used). */
  maxIndex: number;
}

/** Host indexes beyond this are never used, whatever the prefix (they stay exact as numbers). */
const INDEX_CAP = 2 ** 48;

function toBigInt(bytes: Uint8Array): bigint {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  return value;
}

function toBytes(value: bigint, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = length - 1; i >= 0; i--) {
    bytes[i] = Number(value & 0xffn);
    value >>= 8n;
  }
  return bytes;
}

/**
 * The range of `text`, which must be a prefix of `family` without host bits. Tunnel ranges
 * need room for at least two hosts (IPv4 /30 or shorter, IPv6 /127 or shorter).
 */
export function parseRange(field: string, text: string, family: AddressFamily): AddressRange {
  let prefix;
  try {
    prefix = parsePrefix(text);
  } catch {
    throw new StorageError('invalid', `${field}: not an IP prefix: ${JSON.stringify(text)}`);
  }
  if (prefix.family !== family) {
    throw new StorageError('invalid', `${field}: must be an IPv${family} prefix, not ${text}`);
  }
  if (!text.includes('/')) {
    throw new StorageError('invalid', `${field}: needs a prefix length (${text}/…)`);
  }
  if (hasHostBits(text)) {
    throw new StorageError('invalid', `${field}: ${text} has bits set past its prefix length`);
  }
  const hostBits = (family === 4 ? 32 : 128) - prefix.length;
  const size = 2n ** BigInt(hostBits);
  // IPv4: neither the network address nor the broadcast; IPv6: not the network address.
  const last = family === 4 ? size - 2n : size - 1n;
  const maxIndex = last > BigInt(INDEX_CAP) ? INDEX_CAP : Number(last);
  if (maxIndex < 2) {
    throw new StorageError('invalid', `${field}: ${text} is too small for a tunnel range`);
  }
  return { family, network: toBigInt(prefix.address), length: prefix.length, maxIndex };
}

/** The address at host index `index` (1…maxIndex) of the range, in canonical text. */
export function addressAt(range: AddressRange, index: number): string {
  const bytes = toBytes(range.network + BigInt(index), range.family === 4 ? 4 : 16);
  return formatAddress(range.family, bytes);
}

function overlaps(a: AddressRange, b: AddressRange): boolean {
  const bits = a.family === 4 ? 32 : 128;
  const shorter = Math.min(a.length, b.length);
  const shift = BigInt(bits - shorter);
  return a.network >> shift === b.network >> shift;
}

/** Checks a whole set of ranges; throws StorageError('invalid') naming the field. */
export function checkRanges(ranges: AccountRanges): void {
  const tunnel4 = parseRange('tunnelIpv4', ranges.tunnelIpv4, 4);
  const tunnel6 = parseRange('tunnelIpv6', ranges.tunnelIpv6, 6);
  const proxy4 = parseRange('proxyIpv4', ranges.proxyIpv4, 4);
  const proxy6 = parseRange('proxyIpv6', ranges.proxyIpv6, 6);
  if (overlaps(tunnel4, proxy4)) {
    throw new StorageError(
      'invalid',
      `tunnelIpv4 ${ranges.tunnelIpv4} and proxyIpv4 ${ranges.proxyIpv4} overlap`,
    );
  }
  if (overlaps(tunnel6, proxy6)) {
    throw new StorageError(
      'invalid',
      `tunnelIpv6 ${ranges.tunnelIpv6} and proxyIpv6 ${ranges.proxyIpv6} overlap`,
    );
  }
}
