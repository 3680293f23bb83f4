/**
 * IP addresses as bytes (4 for IPv4, 16 for IPv6) and as text. Parsing is
 * strict: dotted quads without leading zeros, no IPv6 zone index (an address
 * here names a host, not a link). Formatting follows RFC 5952: lowercase,
 * no leading zeros, the longest run of two or more zero groups (the first
 * of equals) as `::`, and IPv4-mapped addresses with their dotted quad.
 */

export type AddressFamily = 4 | 6;

export interface Address {
  family: AddressFamily;
  /** 4 bytes for IPv4, 16 for IPv6. */
  address: Uint8Array;
}

export function parseAddress(text: string): Address {
  const problem = `not an IP address: ${JSON.stringify(text)}`;
  if (text.includes(':')) {
    const address = parseIpv6(text);
    if (address === undefined) throw new SyntaxError(problem);
    return { family: 6, address };
  }
  const address = parseIpv4(text);
  if (address === undefined) throw new SyntaxError(problem);
  return { family: 4, address };
}

export function isAddress(text: string): boolean {
  return (text.includes(':') ? parseIpv6(text) : parseIpv4(text)) !== undefined;
}

/** The address of `family` at `offset` of `bytes`, as text. */
export function formatAddress(family: AddressFamily, bytes: Uint8Array, offset = 0): string {
  if (family === 4) return formatIpv4(bytes, offset);
  const groups: number[] = [];
  for (let index = 0; index < 16; index += 2) {
    groups.push((bytes[offset + index]! << 8) | bytes[offset + index + 1]!);
  }
  if (groups.slice(0, 6).join() === '0,0,0,0,0,65535') {
    return `::ffff:${formatIpv4(bytes, offset + 12)}`;
  }
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < 8; start++) {
    let end = start;
    while (end < 8 && groups[end] === 0) end++;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
  }
  const hex = groups.map((group) => group.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

function formatIpv4(bytes: Uint8Array, offset: number): string {
  return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
}

const IPV4_OCTET = /^(0|[1-9][0-9]{0,2})$/;
const IPV6_GROUP = /^[0-9a-fA-F]{1,4}$/;

function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  const bytes = new Uint8Array(4);
  for (let index = 0; index < 4; index++) {
    const part = parts[index]!;
    if (!IPV4_OCTET.test(part) || Number(part) > 255) return undefined;
    bytes[index] = Number(part);
  }
  return bytes;
}

function parseIpv6(text: string): Uint8Array | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const head = splitGroups(halves[0]!);
  const tail = halves.length === 2 ? splitGroups(halves[1]!) : [];
  if (head === undefined || tail === undefined) return undefined;
  const last = halves.length === 2 ? tail : head;
  let embeddedIpv4: Uint8Array | undefined;
  if (last.length > 0 && last[last.length - 1]!.includes('.')) {
    embeddedIpv4 = parseIpv4(last.pop()!);
    if (embeddedIpv4 === undefined) return undefined;
  }
  const groupCount = 8 - (embeddedIpv4 === undefined ? 0 : 2);
  const given = head.length + tail.length;
  if (halves.length === 2 ? given >= groupCount : given !== groupCount) return undefined;
  const bytes = new Uint8Array(16);
  const place = (groups: string[], first: number): boolean => {
    for (let index = 0; index < groups.length; index++) {
      if (!IPV6_GROUP.test(groups[index]!)) return false;
      const value = parseInt(groups[index]!, 16);
      bytes[(first + index) * 2] = value >> 8;
      bytes[(first + index) * 2 + 1] = value & 0xff;
    }
    return true;
  };
  if (!place(head, 0) || !place(tail, groupCount - tail.length)) return undefined;
  if (embeddedIpv4 !== undefined) bytes.set(embeddedIpv4, 12);
  return bytes;
}

function splitGroups(text: string): string[] | undefined {
  if (text === '') return [];
  const groups = text.split(':');
  return groups.includes('') ? undefined : groups;
}
