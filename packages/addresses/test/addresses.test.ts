import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  formatAddress,
  formatEndpoint,
  hasHostBits,
  isAddress,
  normalizePrefix,
  parseAddress,
  parseEndpoint,
  parsePrefix,
  prefixContains,
} from '@gatehouse/addresses';

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values);
const v6 = (...groups: number[]): Uint8Array =>
  Uint8Array.from(groups.flatMap((group) => [group >> 8, group & 0xff]));

void test('addresses: text to bytes and back to RFC 5952 text', () => {
  const cases: [text: string, family: 4 | 6, address: Uint8Array, canonical: string][] = [
    ['0.0.0.0', 4, bytes(0, 0, 0, 0), '0.0.0.0'],
    ['192.168.1.254', 4, bytes(192, 168, 1, 254), '192.168.1.254'],
    ['255.255.255.255', 4, bytes(255, 255, 255, 255), '255.255.255.255'],
    ['::', 6, v6(0, 0, 0, 0, 0, 0, 0, 0), '::'],
    ['::1', 6, v6(0, 0, 0, 0, 0, 0, 0, 1), '::1'],
    ['fe80:0:0:0:0:0:0:0', 6, v6(0xfe80, 0, 0, 0, 0, 0, 0, 0), 'fe80::'],
    ['2001:DB8:AAAA:0:0:0:0:0', 6, v6(0x2001, 0xdb8, 0xaaaa, 0, 0, 0, 0, 0), '2001:db8:aaaa::'],
    ['2001:0:0:1:0:0:0:1', 6, v6(0x2001, 0, 0, 1, 0, 0, 0, 1), '2001:0:0:1::1'],
    ['1::', 6, v6(1, 0, 0, 0, 0, 0, 0, 0), '1::'],
    ['FD00:0:0:0:0:0:0:0001', 6, v6(0xfd00, 0, 0, 0, 0, 0, 0, 1), 'fd00::1'],
    ['2001:db8:0:0:1:0:0:1', 6, v6(0x2001, 0xdb8, 0, 0, 1, 0, 0, 1), '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:0:0:0:1', 6, v6(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1), '2001:db8:0:1::1'],
    ['2001:db8:0:1:1:1:1:1', 6, v6(0x2001, 0xdb8, 0, 1, 1, 1, 1, 1), '2001:db8:0:1:1:1:1:1'],
    ['2001:0db8::0010', 6, v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10), '2001:db8::10'],
    ['::ffff:1.2.3.4', 6, v6(0, 0, 0, 0, 0, 0xffff, 0x102, 0x304), '::ffff:1.2.3.4'],
    ['::ffff:102:304', 6, v6(0, 0, 0, 0, 0, 0xffff, 0x102, 0x304), '::ffff:1.2.3.4'],
    ['64:ff9b::10.0.0.1', 6, v6(0x64, 0xff9b, 0, 0, 0, 0, 0xa00, 1), '64:ff9b::a00:1'],
    ['1:2:3:4:5:6:1.2.3.4', 6, v6(1, 2, 3, 4, 5, 6, 0x102, 0x304), '1:2:3:4:5:6:102:304'],
  ];
  for (const [text, family, address, canonical] of cases) {
    assert.deepEqual(parseAddress(text), { family, address }, text);
    assert.equal(formatAddress(family, address), canonical, text);
    assert.equal(isAddress(text), true, text);
  }
});

void test('addresses: malformed text, zone ids and leading zeros are refused', () => {
  const refused = [
    '',
    '1.2.3',
    '1.2.3.4.5',
    '1.2.3.256',
    '01.2.3.4',
    '1.2.3.04',
    '1.2.3.-1',
    ' 1.2.3.4',
    '0x1.2.3.4',
    'fe80::1%eth0',
    'fe80::1%1',
    ':::',
    '1:::2',
    '::1::',
    ':1::',
    '1::2:',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:8:9',
    '1::2:3:4:5:6:7:8',
    '12345::',
    'g::',
    '::1.2.3',
    '1.2.3.4::',
    '::1.2.3.4:5',
    'example.com',
  ];
  for (const text of refused) {
    assert.throws(() => parseAddress(text), SyntaxError, JSON.stringify(text));
    assert.equal(isAddress(text), false, JSON.stringify(text));
  }
});

void test('addresses: formatting reads at an offset', () => {
  const packet = bytes(9, 9, 10, 0, 0, 7, 9);
  assert.equal(formatAddress(4, packet, 2), '10.0.0.7');
});

void test('prefixes: parsing clears host bits, normalising prints the network', () => {
  const cases: [text: string, normal: string, hostBits: boolean][] = [
    ['10.1.2.3/8', '10.0.0.0/8', true],
    ['10.0.0.0/8', '10.0.0.0/8', false],
    ['10.0.0.1', '10.0.0.1/32', false],
    ['0.0.0.0/0', '0.0.0.0/0', false],
    ['1.2.3.4/0', '0.0.0.0/0', true],
    ['192.168.1.129/25', '192.168.1.128/25', true],
    ['fd00::1/64', 'fd00::/64', true],
    ['FD00:0::/16', 'fd00::/16', false],
    ['::/0', '::/0', false],
    ['fd00::1', 'fd00::1/128', false],
    ['2001:db8::ff/121', '2001:db8::80/121', true],
  ];
  for (const [text, normal, hostBits] of cases) {
    assert.equal(normalizePrefix(text), normal, text);
    assert.equal(hasHostBits(text), hostBits, text);
  }
  assert.deepEqual(parsePrefix('10.1.2.3/8'), {
    family: 4,
    address: bytes(10, 0, 0, 0),
    length: 8,
  });
});

void test('prefixes: bad lengths and shapes are refused', () => {
  for (const text of ['10.0.0.0/33', 'fd00::/129', '10.0.0.0/', '10.0.0.0/08', '10.0.0.0/-1']) {
    assert.throws(() => parsePrefix(text), RangeError, text);
  }
  for (const text of ['10.0.0.0/8/8', 'fe80::%eth0/64', '/8', 'default']) {
    assert.throws(() => parsePrefix(text), SyntaxError, text);
  }
});

void test('prefixes: containment, at whole and partial bytes', () => {
  const cases: [prefix: string, address: string, inside: boolean][] = [
    ['10.0.0.0/8', '10.255.0.1', true],
    ['10.0.0.0/8', '11.0.0.0', false],
    ['192.168.1.128/25', '192.168.1.200', true],
    ['192.168.1.128/25', '192.168.1.127', false],
    ['0.0.0.0/0', '203.0.113.9', true],
    ['10.0.0.1/32', '10.0.0.1', true],
    ['10.0.0.1/32', '10.0.0.2', false],
    ['fd00::/15', 'fd01::1', true],
    ['fd00::/16', 'fd01::1', false],
    ['::/0', '::1', true],
  ];
  for (const [prefix, address, inside] of cases) {
    assert.equal(
      prefixContains(parsePrefix(prefix), parseAddress(address).address),
      inside,
      `${prefix} ∋ ${address}`,
    );
  }
  const packet = bytes(0, 0, 192, 168, 1, 200);
  assert.equal(prefixContains(parsePrefix('192.168.1.128/25'), packet, 2), true);
});

void test('endpoints: addr:port and [v6]:port, both ways', () => {
  const cases: [text: string, canonical: string, port: number][] = [
    ['1.2.3.4:51820', '1.2.3.4:51820', 51820],
    ['[::1]:0', '[::1]:0', 0],
    ['[FD00:0::1]:65535', '[fd00::1]:65535', 65535],
    ['[::ffff:1.2.3.4]:53', '[::ffff:1.2.3.4]:53', 53],
  ];
  for (const [text, canonical, port] of cases) {
    const endpoint = parseEndpoint(text);
    assert.equal(endpoint.port, port, text);
    assert.equal(formatEndpoint(endpoint), canonical, text);
  }
  assert.throws(() => parseEndpoint('1.2.3.4:65536'), RangeError);
  for (const text of [
    '1.2.3.4',
    '::1:53',
    '[1.2.3.4]:53',
    '[fe80::1%eth0]:53',
    '1.2.3.4:',
    'host:53',
    '[::1]:123456',
  ]) {
    assert.throws(() => parseEndpoint(text), SyntaxError, text);
  }
});
