/** PTR query names (`in-addr.arpa`, nibble `ip6.arpa`) to addresses and back. */
import type { IpAddress } from './ip-address.ts';

export function addressFromReverseName(name: string): IpAddress | undefined {
  const labels = name.toLowerCase().replace(/\.$/, '').split('.');
  if (labels.length === 6 && labels[4] === 'in-addr' && labels[5] === 'arpa') {
    const octets = labels.slice(0, 4).reverse();
    if (!octets.every((octet) => /^(0|[1-9]\d{0,2})$/.test(octet) && Number(octet) <= 255))
      return undefined;
    return {
      family: 4,
      value: octets.reduce((value, octet) => (value << 8n) | BigInt(Number(octet)), 0n),
    };
  }
  if (labels.length === 34 && labels[32] === 'ip6' && labels[33] === 'arpa') {
    const nibbles = labels.slice(0, 32).reverse();
    if (!nibbles.every((nibble) => /^[0-9a-f]$/.test(nibble))) return undefined;
    return { family: 6, value: BigInt(`0x${nibbles.join('')}`) };
  }
  return undefined;
}

export function reverseNameFor(address: IpAddress): string {
  if (address.family === 4) {
    const octets = [0n, 8n, 16n, 24n].map((shift) => String((address.value >> shift) & 0xffn));
    return `${octets.join('.')}.in-addr.arpa`;
  }
  const hex = address.value.toString(16).padStart(32, '0');
  return `${[...hex].reverse().join('.')}.ip6.arpa`;
}
