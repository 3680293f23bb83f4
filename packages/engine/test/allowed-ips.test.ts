import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { parseAddress } from '@gatehouse/addresses';

import { AllowedIps, AllowedIpsTable, NO_PEER } from '../src/allowed-ips.ts';

function lookup(table: AllowedIpsTable, text: string): number {
  const { family, address } = parseAddress(text);
  const padded = new Uint8Array(20);
  padded.set(address, 3); // an offset inside a larger buffer, like a packet header
  return table.lookup(family, padded, 3);
}

const routes: [string, number][] = [
  ['0.0.0.0/0', 9],
  ['10.0.0.0/8', 1],
  ['10.1.0.0/16', 2],
  ['10.1.2.3/32', 3],
  ['10.1.2.128/25', 4],
  ['192.168.77.99/24', 5], // host bits cleared: 192.168.77.0/24
  ['::/0', 19],
  ['fd00::/8', 11],
  ['fd00:1234::/32', 12],
  ['fd00:1234::1/128', 13],
  ['2001:db8::/127', 14],
];

const cases: [string, number][] = [
  ['10.9.9.9', 1],
  ['10.1.9.9', 2],
  ['10.1.2.3', 3],
  ['10.1.2.2', 2],
  ['10.1.2.200', 4],
  ['10.1.2.127', 2],
  ['192.168.77.1', 5],
  ['192.168.78.1', 9],
  ['11.0.0.0', 9],
  ['fd00:1::1', 11],
  ['fd00:1234:5::', 12],
  ['fd00:1234::1', 13],
  ['fd00:1234::2', 12],
  ['2001:db8::1', 14],
  ['2001:db8::2', 19],
  ['fe80::1', 19],
];

void describe('AllowedIps', () => {
  const allowed = new AllowedIps();
  for (const [cidr, peer] of routes) allowed.set(cidr, peer);
  const table = allowed.compile();

  for (const [address, peer] of cases) {
    void it(`routes ${address} to peer ${peer}`, () => assert.equal(lookup(table, address), peer));
  }

  void it('finds nothing in an empty table or outside every prefix', () => {
    const empty = new AllowedIps().compile();
    assert.equal(lookup(empty, '10.0.0.1'), NO_PEER);
    assert.equal(lookup(empty, '::1'), NO_PEER);
    const narrow = new AllowedIps();
    narrow.set('10.0.0.0/24', 1);
    assert.equal(lookup(narrow.compile(), '10.0.1.0'), NO_PEER);
    assert.equal(lookup(narrow.compile(), '::a00:0'), NO_PEER, 'IPv6 never matches an IPv4 prefix');
  });

  void it('normalises prefixes, replaces owners and deletes by prefix or by peer', () => {
    const edited = new AllowedIps();
    edited.set('10.1.2.3/8', 1);
    edited.set('10.0.0.0/8', 2);
    edited.set('10.1.0.0/16', 1);
    edited.set('fd00::1/64', 1);
    assert.deepEqual(edited.entries(), [
      { cidr: '10.0.0.0/8', peer: 2 },
      { cidr: '10.1.0.0/16', peer: 1 },
      { cidr: 'fd00::/64', peer: 1 },
    ]);
    assert.equal(edited.delete('10.1.0.0/16'), true);
    assert.equal(lookup(edited.compile(), '10.1.0.1'), 2);
    edited.deletePeer(2);
    assert.equal(lookup(edited.compile(), '10.1.0.1'), NO_PEER);
    assert.equal(lookup(edited.compile(), 'fd00::9'), 1);
  });

  void it('rejects malformed prefixes', () => {
    const allowed = new AllowedIps();
    for (const bad of [
      '10.0.0.0/33',
      '10.0.0.0/',
      'fd00::/129',
      '10.0.0/8',
      'x/1',
      '10.0.0.0/-1',
    ]) {
      assert.throws(() => allowed.set(bad, 1), Error, bad);
    }
  });

  void it('reads destination and source addresses out of IPv4 and IPv6 headers', () => {
    const packet4 = new Uint8Array(8 + 20);
    packet4[8] = 0x45;
    packet4.set([10, 1, 2, 3], 8 + 12);
    packet4.set([192, 168, 77, 5], 8 + 16);
    assert.equal(table.lookupSource(packet4, 8), 3);
    assert.equal(table.lookupDestination(packet4, 8), 5);
    const packet6 = new Uint8Array(40);
    packet6[0] = 0x60;
    packet6.set(parseAddress('fd00:1234::1').address, 8);
    packet6.set(parseAddress('2001:db8::1').address, 24);
    assert.equal(table.lookupSource(packet6, 0), 13);
    assert.equal(table.lookupDestination(packet6, 0), 14);
    assert.equal(table.lookupDestination(new Uint8Array([0x10]), 0), NO_PEER);
  });

  void it('a worker-side copy attached from the shared buffers answers the same', () => {
    const attached = new AllowedIpsTable(structuredClone(table.shared));
    for (const [address, peer] of cases) assert.equal(lookup(attached, address), peer);
  });

  void it('matches a brute-force longest-prefix search on random tables', () => {
    let seed = 12345;
    const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    const prefixes: { address: number; length: number; peer: number }[] = [];
    const randomTable = new AllowedIps();
    for (let index = 0; index < 200; index++) {
      const length = Math.floor(random() * 33);
      const address =
        length === 0 ? 0 : (Math.floor(random() * 2 ** 32) >>> (32 - length)) << (32 - length);
      const peer = index;
      const text = [24, 16, 8, 0].map((shift) => (address >>> shift) & 0xff).join('.');
      randomTable.set(`${text}/${length}`, peer);
      const existing = prefixes.findIndex(
        (prefix) => prefix.length === length && prefix.address >>> 0 === address >>> 0,
      );
      if (existing >= 0) prefixes.splice(existing, 1);
      prefixes.push({ address: address >>> 0, length, peer });
    }
    const compiled = randomTable.compile();
    for (let probe = 0; probe < 2000; probe++) {
      const address = Math.floor(random() * 2 ** 32) >>> 0;
      let expected = NO_PEER;
      let bestLength = -1;
      for (const prefix of prefixes) {
        const mask = prefix.length === 0 ? 0 : (~0 << (32 - prefix.length)) >>> 0;
        if ((address & mask) >>> 0 === prefix.address && prefix.length > bestLength) {
          expected = prefix.peer;
          bestLength = prefix.length;
        }
      }
      const bytes = new Uint8Array([
        address >>> 24,
        (address >>> 16) & 0xff,
        (address >>> 8) & 0xff,
        address & 0xff,
      ]);
      assert.equal(compiled.lookup(4, bytes, 0), expected);
    }
  });
});
