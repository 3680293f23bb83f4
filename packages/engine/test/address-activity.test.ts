import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { AddressActivity } from '../src/address-activity.ts';

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

  void it('leaves addresses outside the ranges alone and never reports a shared slot as idle', () => {
    const activity = AddressActivity.create(RANGES, EPOCH);
    activity.noteDestination(ipv4Packet('10.0.0.1', '100.128.0.1'), 0, EPOCH);
    activity.noteDestination(ipv4Packet('10.0.0.1', '10.96.0.1'), 0, EPOCH);
    assert.equal(activity.idleMs('100.96.0.1', EPOCH + 1000), Infinity);
    // 100.97.0.1 is 2^16 addresses after 100.96.0.1: the same slot.
    activity.noteDestination(ipv4Packet('10.0.0.1', '100.97.0.1'), 0, EPOCH + 1000);
    assert.equal(activity.idleMs('100.96.0.1', EPOCH + 2000), 0);
    activity.noteDestination(ipv6Packet(1, 1), 0, EPOCH);
    assert.equal(activity.idleMs('fd00:2021:1111:8000::1', EPOCH + 1000), Infinity);
  });

  void it('watches nothing without ranges and refuses two ranges of one family', () => {
    const none = AddressActivity.create([], EPOCH);
    none.noteDestination(ipv4Packet('10.0.0.1', '100.96.0.1'), 0, EPOCH);
    assert.equal(none.idleMs('100.96.0.1', EPOCH), Infinity);
    assert.throws(
      () => AddressActivity.create(['100.96.0.0/11', '10.0.0.0/8'], EPOCH),
      /more than one watched IPv4 range/,
    );
  });
});
