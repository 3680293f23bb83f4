import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { AddressActivity, MAX_WATCHED_RANGE_ADDRESSES } from '../src/address-activity.ts';

const EPOCH = 1_000_000;
const RANGES = ['100.96.0.0/11', 'fd00:2021:1111:8000::/107'];

function ipv4Packet(source: string, destination: string): Uint8Array {
  const packet = new Uint8Array(20);
  packet[0] = 0x45;
  packet.set(source.split('.').map(Number), 12);
  packet.set(destination.split('.').map(Number), 16);
  return packet;
}

function ipv6Packet(sourceLast: number, destinationLast: number): Uint8Array {
  const packet = new Uint8Array(40);
  packet[0] = 0x60;
  const prefix = [0xfd, 0x00, 0x20, 0x21, 0x11, 0x11, 0x80, 0x00];
  packet.set(prefix, 8);
  packet[23] = sourceLast;
  packet.set([0x20, 0x01, 0x0d, 0xb8], 24);
  packet[39] = destinationLast;
  return packet;
}

void describe('AddressActivity', () => {
  void it('stamps the destination of outgoing and the source of incoming packets in the watched ranges', () => {
    const activity = AddressActivity.create(RANGES, EPOCH);
    assert.equal(activity.idleMs('100.96.0.1', EPOCH + 5000), Infinity);
    activity.noteDestination(ipv4Packet('10.0.0.1', '100.96.0.1'), 0, EPOCH + 2500);
    assert.equal(activity.idleMs('100.96.0.1', EPOCH + 2500), 0);
    assert.equal(activity.idleMs('100.96.0.1', EPOCH + 63_000), 60_000);
    assert.equal(activity.idleMs('100.96.0.2', EPOCH + 63_000), Infinity);
    activity.noteSource(ipv4Packet('100.96.0.2', '10.0.0.1'), 0, EPOCH + 10_000);
    assert.equal(activity.idleMs('100.96.0.2', EPOCH + 11_000), 0);

    const received = ipv6Packet(7, 1);
    activity.noteSource(received, 0, EPOCH + 4000);
    assert.equal(activity.idleMs('fd00:2021:1111:8000::7', EPOCH + 65_000), 60_000);
    assert.equal(activity.idleMs('2001:db8::1', EPOCH + 65_000), Infinity, 'not watched');
  });

  void it('leaves addresses outside the ranges alone', () => {
    const activity = AddressActivity.create(RANGES, EPOCH);
    activity.noteDestination(ipv4Packet('10.0.0.1', '100.128.0.1'), 0, EPOCH);
    activity.noteDestination(ipv4Packet('10.0.0.1', '10.96.0.1'), 0, EPOCH);
    activity.noteDestination(ipv4Packet('10.0.0.1', '100.64.0.1'), 0, EPOCH);
    assert.equal(activity.idleMs('100.96.0.1', EPOCH + 1000), Infinity);
    activity.noteDestination(ipv6Packet(1, 1), 0, EPOCH);
    assert.equal(activity.idleMs('fd00:2021:1111:8000::1', EPOCH + 1000), Infinity);
  });

  void it('stamps each address on its own: packets to the rest of the range never keep one active', () => {
    const activity = AddressActivity.create(RANGES, EPOCH);
    // What a local user could send every few minutes: one packet per 32nd address of the /11.
    for (let offset = 1; offset < 1 << 21; offset += 32) {
      const destination = [100, 96 + (offset >> 16), (offset >> 8) & 0xff, offset & 0xff].join('.');
      activity.noteDestination(ipv4Packet('10.0.0.1', destination), 0, EPOCH);
    }
    for (const quiet of ['100.96.0.2', '100.97.0.2', '100.127.255.255', '100.96.0.32'])
      assert.equal(activity.idleMs(quiet, EPOCH + 1000), Infinity, quiet);
    assert.equal(activity.idleMs('100.97.0.1', EPOCH + 1000), 0);
    assert.equal(activity.idleMs('100.127.255.225', EPOCH + 1000), 0, 'the last stamped one');

    const last = ipv6Packet(7, 1);
    last.set([0x1f, 0xff, 0xff], 21);
    activity.noteSource(last, 0, EPOCH);
    assert.equal(activity.idleMs('fd00:2021:1111:8000::1f:ffff', EPOCH + 1000), 0);
    assert.equal(activity.idleMs('fd00:2021:1111:8000::ffff', EPOCH + 1000), Infinity);
  });

  void it('watches nothing without ranges; refuses two ranges of one family and ranges above the maximum', () => {
    const none = AddressActivity.create([], EPOCH);
    none.noteDestination(ipv4Packet('10.0.0.1', '100.96.0.1'), 0, EPOCH);
    assert.equal(none.idleMs('100.96.0.1', EPOCH), Infinity);
    assert.throws(
      () => AddressActivity.create(['100.96.0.0/11', '10.0.0.0/24'], EPOCH),
      /more than one watched IPv4 range/,
    );
    assert.throws(
      () => AddressActivity.create(['100.64.0.0/10'], EPOCH),
      /watched range 100\.64\.0\.0\/10 has 2\^22 addresses; at most 2\^21 are watched \(a \/11 or longer prefix\)/,
    );
    assert.throws(() => AddressActivity.create(['fd00::/64'], EPOCH), /a \/107 or longer prefix/);
    assert.equal(
      AddressActivity.create(RANGES, EPOCH).shared.stamps.byteLength,
      2 * MAX_WATCHED_RANGE_ADDRESSES * 4,
    );
  });
});
