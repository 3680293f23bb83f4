/**
 * Text forms of addresses, for logs and the control plane; never on the
 * per-packet path. IPv6 follows RFC 5952: lowercase, no leading zeros, the
 * longest run of two or more zero groups (the first on a tie) as "::", and
 * IPv4-mapped addresses in dotted form.
 */

export function ipv4AddressText(bytes: Uint8Array, at: number): string {
  return `${bytes[at]!}.${bytes[at + 1]!}.${bytes[at + 2]!}.${bytes[at + 3]!}`;
}

export function ipv6AddressText(bytes: Uint8Array, at: number): string {
  const group = (i: number): number => (bytes[at + i * 2]! << 8) | bytes[at + i * 2 + 1]!;
  if (isIpv4Mapped(bytes, at)) return '::ffff:' + ipv4AddressText(bytes, at + 12);

  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (group(i) !== 0) {
      i++;
      continue;
    }
    let end = i;
    while (end < 8 && group(end) === 0) end++;
    if (end - i > bestLength) {
      bestStart = i;
      bestLength = end - i;
    }
    i = end;
  }

  const hex = (from: number, to: number): string[] => {
    const parts: string[] = [];
    for (let i = from; i < to; i++) parts.push(group(i).toString(16));
    return parts;
  };
  if (bestStart < 0) return hex(0, 8).join(':');
  return hex(0, bestStart).join(':') + '::' + hex(bestStart + bestLength, 8).join(':');
}

function isIpv4Mapped(bytes: Uint8Array, at: number): boolean {
  for (let i = 0; i < 10; i++) if (bytes[at + i] !== 0) return false;
  return bytes[at + 10] === 0xff && bytes[at + 11] === 0xff;
}
