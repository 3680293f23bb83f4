import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  MESSAGE_HANDSHAKE_INITIATION,
  MESSAGE_HANDSHAKE_RESPONSE,
  MESSAGE_TRANSPORT_DATA,
  MIN_INITIATION_INTERVAL,
} from '../src/constants.ts';
import type { DropReason } from '../src/device.ts';
import { TwoPeers, ipv4Packet, seededRandomBytes } from './two-peers.ts';
import type { Side } from './two-peers.ts';

function established(): TwoPeers {
  const net = new TwoPeers();
  net.handshake();
  net.take(net.alice, 'handshake-complete');
  net.take(net.bob, 'handshake-complete');
  return net;
}

/** Delivers `datagram` from alice to bob and returns bob's drop reasons. */
function deliverToBob(net: TwoPeers, datagram: Uint8Array): (DropReason | undefined)[] {
  net.bob.device.handleDatagram(datagram, net.alice.endpoint, net.clock.now());
  return net.take(net.bob, 'drop').map((event) => event.reason);
}

function lastSent(side: Side, type: number): Uint8Array {
  const transmit = side.sent.filter((t) => t.datagram[0] === type).at(-1);
  assert.ok(transmit);
  return new Uint8Array(transmit.datagram);
}

function sealedByAlice(net: TwoPeers, packet = ipv4Packet(60)): Uint8Array {
  net.send(net.alice, packet);
  const transmit = net.alice.device.pollTransmit();
  assert.ok(transmit);
  return transmit.datagram;
}

void describe('WireGuardDevice drops bad input with a counted reason', () => {
  void it('drops a replayed transport message', () => {
    const net = established();
    const datagram = sealedByAlice(net);
    deliverToBob(net, datagram);

    const reasons = deliverToBob(net, datagram);

    assert.deepEqual(reasons, ['replay']);
    assert.equal(net.take(net.bob, 'packet').length, 1);
    assert.equal(net.bob.device.peerStats(net.alice.keys.publicKey).drops.replay, 1);
  });

  void it('accepts transport messages out of order', () => {
    const net = established();
    const first = sealedByAlice(net, ipv4Packet(40, 1));
    const second = sealedByAlice(net, ipv4Packet(40, 2));

    deliverToBob(net, second);
    deliverToBob(net, first);

    assert.deepEqual(
      net.take(net.bob, 'packet').map((event) => event.packet[4]),
      [2, 1],
    );
  });

  void it('drops a tampered transport message (ciphertext, tag or counter)', () => {
    const net = established();
    for (const at of [20, -1, 8]) {
      const datagram = new Uint8Array(sealedByAlice(net));
      datagram[at < 0 ? datagram.length + at : at]! ^= 0x40;

      assert.deepEqual(deliverToBob(net, datagram), ['decrypt-failed']);
    }
    assert.equal(net.take(net.bob, 'packet').length, 0);
  });

  void it('drops truncated messages of every type as malformed', () => {
    const net = established();
    const initiation = net.alice.sent[0]!.datagram;
    const transport = sealedByAlice(net);

    const reasons = [
      ...deliverToBob(net, initiation.subarray(0, 147)),
      ...deliverToBob(net, transport.subarray(0, 31)),
      ...deliverToBob(net, new Uint8Array([MESSAGE_TRANSPORT_DATA, 0, 0])),
      ...deliverToBob(net, new Uint8Array(0)),
    ];

    assert.deepEqual(reasons, ['malformed', 'malformed', 'malformed', 'malformed']);
    assert.equal(net.bob.device.deviceDrops().malformed, 4);
  });

  void it('drops oversized datagrams, unknown types and non-zero reserved bytes (the type is the whole LE word)', () => {
    const net = established();
    const reservedSet = new Uint8Array(sealedByAlice(net));
    reservedSet[2] = 1;
    const reservedInitiation = new Uint8Array(net.alice.sent[0]!.datagram);
    reservedInitiation[3] = 0x80;

    const reasons = [
      ...deliverToBob(net, new Uint8Array(70_000).fill(MESSAGE_TRANSPORT_DATA, 0, 1)),
      ...deliverToBob(net, new Uint8Array([5, 0, 0, 0, ...new Uint8Array(60)])),
      ...deliverToBob(net, new Uint8Array([0, 0, 0, 0, ...new Uint8Array(60)])),
      ...deliverToBob(net, reservedSet),
      ...deliverToBob(net, reservedInitiation),
    ];

    assert.deepEqual(reasons, [
      'too-large',
      'unknown-type',
      'unknown-type',
      'unknown-type',
      'unknown-type',
    ]);
  });

  void it('refuses to send a packet that cannot fit one message', () => {
    const net = established();

    net.send(net.alice, ipv4Packet(65_535 - 31));

    assert.equal(net.alice.device.pollTransmit(), undefined);
    assert.equal(net.alice.device.peerStats(net.bob.keys.publicKey).drops['too-large'], 1);
  });

  void it('drops a transport message for an unknown receiver index', () => {
    const net = established();
    const datagram = new Uint8Array(sealedByAlice(net));
    datagram[4]! ^= 0xff;
    datagram[7]! ^= 0xff;

    assert.deepEqual(deliverToBob(net, datagram), ['unknown-receiver']);
  });

  void it('drops an initiation with a bad MAC1 before any Diffie-Hellman', () => {
    const net = new TwoPeers();
    net.alice.device.initiateHandshake(net.bob.keys.publicKey, net.clock.now());
    const initiation = new Uint8Array(net.alice.device.pollTransmit()!.datagram);
    initiation[116]! ^= 1;

    assert.deepEqual(deliverToBob(net, initiation), ['bad-mac1']);
    assert.equal(net.bob.device.pollTransmit(), undefined);
  });

  void it('takes MAC1 as checked for a screened handshake message, and refuses transport messages there', () => {
    const net = new TwoPeers();
    net.alice.device.initiateHandshake(net.bob.keys.publicKey, net.clock.now());
    // A wrong MAC1 stands for one the caller checked: only a device that checks again drops it.
    const initiation = new Uint8Array(net.alice.device.pollTransmit()!.datagram);
    initiation[116]! ^= 1;

    net.bob.device.handleScreenedHandshake(initiation, net.alice.endpoint, net.clock.now());
    assert.deepEqual(net.take(net.bob, 'drop'), []);
    assert.equal(net.bob.device.pollTransmit()?.datagram[0], MESSAGE_HANDSHAKE_RESPONSE);

    const transport = new Uint8Array(32);
    transport[0] = MESSAGE_TRANSPORT_DATA;
    assert.throws(
      () => net.bob.device.handleScreenedHandshake(transport, net.alice.endpoint, net.clock.now()),
      /a transport message is not a handshake message/,
    );
  });

  void it('drops a replayed initiation by its TAI64N timestamp', () => {
    const net = established();
    const initiation = lastSent(net.alice, MESSAGE_HANDSHAKE_INITIATION);
    net.clock.advance(1000);

    assert.deepEqual(deliverToBob(net, initiation), ['stale-timestamp']);
    assert.equal(net.bob.device.pollTransmit(), undefined, 'no response to a replay');
  });

  void it('limits how often one peer may start handshakes', () => {
    const net = established();
    net.clock.wallClockMs += 1000; // a fresh timestamp ...
    net.clock.monotonicMs += MIN_INITIATION_INTERVAL - 1; // ... but too soon

    net.alice.device.initiateHandshake(net.bob.keys.publicKey, net.clock.now());
    const initiation = net.alice.device.pollTransmit()!.datagram;

    assert.deepEqual(deliverToBob(net, initiation), ['handshake-rate-limited']);
  });

  void it('drops an initiation from a key that is not a peer', () => {
    const net = new TwoPeers();
    net.bob.device.removePeer(net.alice.keys.publicKey);

    net.handshake();

    assert.deepEqual(
      net.take(net.bob, 'drop').map((event) => event.reason),
      ['unknown-peer'],
    );
  });

  void it('drops a response that answers no initiation of ours', () => {
    const net = established();
    const response = net.bob.sent[0]!.datagram;

    net.alice.device.handleDatagram(response, net.bob.endpoint, net.clock.now());

    assert.deepEqual(
      net.take(net.alice, 'drop').map((event) => event.reason),
      ['unknown-receiver'],
    );
  });

  void it('never throws on random datagrams of every type, and counts each as a drop', () => {
    const net = established();
    const random = seededRandomBytes(99);
    const sizes = [0, 1, 4, 31, 32, 33, 64, 92, 148, 200, 1500];
    let delivered = 0;

    for (let round = 0; round < 50; round++) {
      for (const size of sizes) {
        const datagram = random(size);
        if (size > 0) datagram[0] = (round % 6) as number;
        if (size > 3) datagram.fill(0, 1, 4);
        net.bob.device.handleDatagram(datagram, net.alice.endpoint, net.clock.now());
        delivered++;
      }
    }

    const drops = net.take(net.bob, 'drop');
    assert.equal(drops.length, delivered);
    assert.equal(net.take(net.bob, 'packet').length, 0);
  });
});
