import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { formatAddress, parseAddress } from '@gatehouse/addresses';
import { createSharedTransportMemory } from '@gatehouse/wireguard';
import type { SharedTransportMemory } from '@gatehouse/wireguard';

import { AllowedIps } from '../src/allowed-ips.ts';
import {
  ROUTE_MISS_DESTINATIONS,
  ROUTE_MISS_HOLD_MS,
  ROUTE_MISS_PACKETS_PER_DESTINATION,
  RouteMissHold,
  RouteMissRing,
} from '../src/route-miss.ts';

const MTU = 1280;

/** An IPv4 (or, for a destination with ':', IPv6) header and a one-byte payload `n`. */
function packetTo(destination: string, n: number): Uint8Array {
  const { family, address } = parseAddress(destination);
  if (family === 6) {
    const packet = new Uint8Array(41);
    packet[0] = 0x60;
    packet.set(address, 24);
    packet[40] = n;
    return packet;
  }
  const packet = new Uint8Array(21);
  packet[0] = 0x45;
  packet.set(destination.split('.').map(Number), 16);
  packet[20] = n;
  return packet;
}

function deviceMemory(): SharedTransportMemory {
  return createSharedTransportMemory({ mtu: MTU, capacity: { peers: 1 } });
}

function harness(): {
  hold: RouteMissHold;
  reported: () => string[];
  release: (cidrs: string[]) => { peer: number; n: number }[];
} {
  const ring = new RouteMissRing(deviceMemory());
  const hold = new RouteMissHold(MTU, ring);
  return {
    hold,
    reported: () => {
      const destinations: string[] = [];
      ring.drain((family, bytes, offset) =>
        destinations.push(formatAddress(family, bytes, offset)),
      );
      return destinations;
    },
    release: (cidrs) => {
      const allowed = new AllowedIps();
      for (const cidr of cidrs) allowed.set(cidr, 3);
      const delivered: { peer: number; n: number }[] = [];
      hold.release(allowed.compile(), (peer, packet, offset, length) =>
        delivered.push({ peer, n: packet[offset + length - 1]! }),
      );
      return delivered;
    },
  };
}

void describe('RouteMissHold', () => {
  void it('reports each destination once and releases its packets in order to the peer now covering it', () => {
    const { hold, reported, release } = harness();
    for (let n = 0; n < 3; n++) hold.hold(packetTo('10.1.0.1', n), 0, 21, 0);
    hold.hold(packetTo('10.2.0.1', 9), 0, 21, 0);
    hold.hold(packetTo('fd00::7', 5), 0, 41, 0);
    assert.deepEqual(reported(), ['10.1.0.1', '10.2.0.1', 'fd00::7']);
    assert.equal(hold.holding, 5);
    assert.deepEqual(release(['10.1.0.0/16']), [
      { peer: 3, n: 0 },
      { peer: 3, n: 1 },
      { peer: 3, n: 2 },
    ]);
    assert.equal(hold.holding, 2);
    assert.deepEqual(release(['fd00::/64']), [{ peer: 3, n: 5 }]);
    assert.deepEqual(release(['10.1.0.0/16']), [], 'released packets are gone');
    hold.hold(packetTo('10.1.0.1', 7), 0, 21, 0);
    assert.deepEqual(reported(), ['10.1.0.1'], 'a released destination is reported again');
  });

  void it('counts packets beyond the per-destination hold as overflow', () => {
    const { hold, release } = harness();
    for (let n = 0; n < ROUTE_MISS_PACKETS_PER_DESTINATION + 2; n++) {
      hold.hold(packetTo('10.1.0.1', n), 0, 21, 0);
    }
    assert.equal(hold.drops.overflow, 2);
    assert.deepEqual(
      release(['10.1.0.1/32']).map(({ n }) => n),
      Array.from({ length: ROUTE_MISS_PACKETS_PER_DESTINATION }, (_, n) => n),
    );
  });

  void it('evicts the oldest destination when all are taken, counting its packets', () => {
    const { hold, reported, release } = harness();
    let reports = 0;
    for (let d = 0; d < ROUTE_MISS_DESTINATIONS; d++) {
      hold.hold(packetTo(`10.3.${d >> 8}.${d & 0xff}`, 1), 0, 21, d);
      hold.hold(packetTo(`10.3.${d >> 8}.${d & 0xff}`, 2), 0, 21, d);
      if (d % 32 === 31) reports += reported().length;
    }
    assert.equal(reports, ROUTE_MISS_DESTINATIONS);
    hold.hold(packetTo('10.4.0.1', 3), 0, 21, ROUTE_MISS_DESTINATIONS);
    assert.deepEqual(reported(), ['10.4.0.1']);
    assert.equal(hold.drops.overflow, 2, 'the oldest destination’s two packets');
    assert.deepEqual(release(['10.3.0.0/32']), [], 'the oldest is gone');
    assert.equal(release(['10.3.0.1/32']).length, 2, 'the next oldest is kept');
    assert.equal(hold.holding, 2 * (ROUTE_MISS_DESTINATIONS - 2) + 1);
  });

  void it('drops packets held longer than the hold time, counted as expired', () => {
    const { hold, release } = harness();
    hold.hold(packetTo('10.1.0.1', 0), 0, 21, 0);
    hold.hold(packetTo('10.1.0.1', 1), 0, 21, 1000);
    hold.hold(packetTo('10.2.0.1', 2), 0, 21, 0);
    hold.expire(ROUTE_MISS_HOLD_MS - 1);
    assert.equal(hold.drops.expired, 0);
    hold.expire(ROUTE_MISS_HOLD_MS);
    assert.equal(hold.drops.expired, 2);
    assert.deepEqual(release(['10.0.0.0/8']), [{ peer: 3, n: 1 }]);
  });

  void it('neither holds nor reports multicast and broadcast destinations', () => {
    const { hold, reported } = harness();
    hold.hold(packetTo('ff02::16', 0), 0, 41, 0);
    hold.hold(packetTo('224.0.0.251', 0), 0, 21, 0);
    hold.hold(packetTo('255.255.255.255', 0), 0, 21, 0);
    assert.deepEqual(reported(), []);
    assert.equal(hold.holding, 0);
    assert.deepEqual(hold.drops, { overflow: 0, expired: 0 });
  });

  void it('counts what it cannot hold: a non-IP packet, one longer than the MTU', () => {
    const { hold, reported } = harness();
    hold.hold(new Uint8Array(30), 0, 30, 0);
    const long = new Uint8Array(MTU + 1);
    long.set(packetTo('10.1.0.1', 0));
    hold.hold(long, 0, long.length, 0);
    assert.equal(hold.drops.overflow, 2);
    assert.deepEqual(reported(), []);
  });
});

void describe('RouteMissRing', () => {
  void it('drops reports beyond its entries and counts them', () => {
    const ring = new RouteMissRing(deviceMemory());
    const address = new Uint8Array(16);
    for (let n = 0; n < 70; n++) ring.push(4, address, 0);
    assert.equal(ring.dropped, 6);
    let drained = 0;
    ring.drain(() => drained++);
    assert.equal(drained, 64);
  });
});
