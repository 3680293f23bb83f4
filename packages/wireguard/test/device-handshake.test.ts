import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { parseEndpoint } from '@gatehouse/addresses';

import {
  KEEPALIVE_TIMEOUT,
  MESSAGE_HANDSHAKE_COOKIE,
  MESSAGE_HANDSHAKE_INITIATION,
  MESSAGE_HANDSHAKE_RESPONSE,
  MESSAGE_TRANSPORT_DATA,
  REJECT_AFTER_TIME,
  REKEY_AFTER_TIME,
  REKEY_ATTEMPT_TIME,
  REKEY_TIMEOUT,
  UNDER_LOAD_AFTER_TIME,
  UNDER_LOAD_QUEUE_DEPTH,
} from '../src/constants.ts';
import { libsodiumWasmProvider } from '../src/crypto/libsodium-wasm.ts';
import type { Transmit } from '../src/device.ts';
import type { Endpoint } from '../src/endpoint.ts';
import { encodeKey } from '../src/keys.ts';
import { TransportPath } from '../src/transport.ts';
import { K_RECEIVE_KEY, K_SEND_KEY, keypairBase, PeerSlots } from '../src/worker-contract.ts';
import { TwoPeers, ipv4Packet } from './two-peers.ts';
import type { Side } from './two-peers.ts';

function ofType(transmits: Transmit[], type: number): Transmit[] {
  return transmits.filter((transmit) => transmit.datagram[0] === type);
}

function keepalives(side: Side): Transmit[] {
  return ofType(side.sent, MESSAGE_TRANSPORT_DATA).filter((t) => t.datagram.length === 32);
}

function initiations(side: Side): Transmit[] {
  return ofType(side.sent, MESSAGE_HANDSHAKE_INITIATION);
}

function established(): TwoPeers {
  const net = new TwoPeers();
  net.handshake();
  net.take(net.alice, 'handshake-complete');
  net.take(net.bob, 'handshake-complete');
  return net;
}

void describe('WireGuardDevice handshake', () => {
  void it('completes a handshake: initiation, response, then a confirming keepalive', () => {
    const net = new TwoPeers();

    net.handshake();

    assert.deepEqual(
      net.alice.sent.map((t) => [t.datagram[0], t.datagram.length]),
      [
        [MESSAGE_HANDSHAKE_INITIATION, 148],
        [MESSAGE_TRANSPORT_DATA, 32],
      ],
    );
    assert.deepEqual(
      net.bob.sent.map((t) => [t.datagram[0], t.datagram.length]),
      [[MESSAGE_HANDSHAKE_RESPONSE, 92]],
    );
    const [aliceDone] = net.take(net.alice, 'handshake-complete');
    const [bobDone] = net.take(net.bob, 'handshake-complete');
    assert.equal(aliceDone?.initiator, true);
    assert.equal(aliceDone?.peer, encodeKey(net.bob.keys.publicKey));
    assert.equal(bobDone?.initiator, false);
    assert.equal(net.take(net.bob, 'packet').length, 0, 'keepalives are not packets');
    assert.equal(net.alice.device.peerStats(net.bob.keys.publicKey).handshakes, 1);
  });

  void it('stages the first packets until the handshake completes, then delivers them in order', () => {
    const net = new TwoPeers();
    const packets = [ipv4Packet(40, 1), ipv4Packet(1280, 2), ipv4Packet(21, 3)];

    for (const packet of packets) net.send(net.alice, packet);
    net.exchange();

    assert.deepEqual(
      net.take(net.bob, 'packet').map((event) => event.packet),
      packets,
    );
    assert.equal(initiations(net.alice).length, 1);
  });

  void it('carries data both ways, padded to 16 bytes, with matching statistics', () => {
    const net = established();

    net.send(net.alice, ipv4Packet(100, 0xaa));
    net.send(net.bob, ipv4Packet(33, 0xbb));
    net.exchange();

    assert.deepEqual(net.take(net.bob, 'packet')[0]?.packet, ipv4Packet(100, 0xaa));
    assert.deepEqual(net.take(net.alice, 'packet')[0]?.packet, ipv4Packet(33, 0xbb));
    const dataFromBob = ofType(net.bob.sent, MESSAGE_TRANSPORT_DATA).at(-1)!;
    assert.equal(dataFromBob.datagram.length, 16 + 48 + 16);
    const aliceStats = net.alice.device.peerStats(net.bob.keys.publicKey);
    const bobStats = net.bob.device.peerStats(net.alice.keys.publicKey);
    assert.equal(aliceStats.txPackets, bobStats.rxPackets);
    assert.equal(aliceStats.rxPackets, bobStats.txPackets);
    assert.equal(aliceStats.txBytes, bobStats.rxBytes);
  });

  void it('rekeys when the initiator sends after REKEY_AFTER_TIME, and data keeps flowing', () => {
    const net = established();
    net.clock.advance(REKEY_AFTER_TIME - 1);
    net.send(net.alice, ipv4Packet(60));
    assert.equal(initiations(net.alice).length, 1, 'not before REKEY_AFTER_TIME');

    net.clock.advance(1);
    net.send(net.alice, ipv4Packet(60));
    net.exchange();

    assert.equal(initiations(net.alice).length, 2);
    assert.equal(net.take(net.alice, 'handshake-complete').length, 1);
    net.send(net.alice, ipv4Packet(61));
    net.send(net.bob, ipv4Packet(62));
    net.exchange();
    assert.equal(net.take(net.bob, 'packet').length, 3);
    assert.equal(net.take(net.alice, 'packet').length, 1);
  });

  void it('does not rekey by time as the responder when sending', () => {
    const net = established();
    net.clock.advance(REKEY_AFTER_TIME + 1);

    net.send(net.bob, ipv4Packet(60));
    net.exchange();

    assert.equal(initiations(net.bob).length, 0);
    assert.equal(net.take(net.alice, 'packet').length, 1);
  });

  void it('rekeys as the initiator when receiving after REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT', () => {
    const net = established();
    net.clock.advance(REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT);

    net.send(net.bob, ipv4Packet(60));
    net.exchange();

    assert.equal(initiations(net.alice).length, 2);
    assert.equal(initiations(net.bob).length, 0);
  });

  void it('rekeys after the (injected) message limit', () => {
    const net = new TwoPeers({ aliceDevice: { rekeyAfterMessages: 5 } });
    net.handshake(); // the confirming keepalive uses counter 0
    for (let i = 1; i < 5; i++) net.send(net.alice, ipv4Packet(40, i));
    assert.equal(initiations(net.alice).length, 1, 'counters 1..4 are below the limit');
    net.clock.advance(1000); // a later TAI64N than the first initiation's

    net.send(net.alice, ipv4Packet(40, 5));
    net.exchange();

    assert.equal(initiations(net.alice).length, 2);
    assert.equal(net.alice.device.peerStats(net.bob.keys.publicKey).handshakes, 2);
    assert.equal(net.take(net.bob, 'packet').length, 5);
  });

  void it('refuses to send on a keypair older than REJECT_AFTER_TIME: stages and rekeys', () => {
    const net = established();
    net.deliverIf = () => false;
    net.clock.advance(REJECT_AFTER_TIME);

    net.send(net.alice, ipv4Packet(60));

    assert.equal(
      ofType(net.alice.sent, MESSAGE_TRANSPORT_DATA).length,
      1,
      'only the old keepalive',
    );
    net.exchange();
    assert.equal(initiations(net.alice).length, 2);
    net.deliverIf = () => true;
    net.runFor(REKEY_TIMEOUT + 400);
    assert.equal(net.take(net.bob, 'packet').length, 1);
  });

  void it('retransmits every REKEY_TIMEOUT plus jitter, gives up after REKEY_ATTEMPT_TIME, and starts again on the next packet', () => {
    const net = new TwoPeers();
    net.deliverIf = () => false;
    const start = net.clock.monotonicMs;
    for (let i = 0; i < 3; i++) net.send(net.alice, ipv4Packet(40, i));

    net.runFor(REKEY_ATTEMPT_TIME + 2 * REKEY_TIMEOUT);

    const sent = initiations(net.alice).length;
    assert.ok(sent >= 17 && sent <= 19, `${sent} initiations`);
    const [gaveUp, ...more] = net.take(net.alice, 'handshake-gave-up');
    assert.deepEqual(gaveUp, {
      type: 'handshake-gave-up',
      peer: encodeKey(net.bob.keys.publicKey),
      droppedPackets: 3,
    });
    assert.equal(more.length, 0);
    assert.equal(net.alice.device.peerStats(net.bob.keys.publicKey).drops['handshake-timeout'], 3);
    assert.equal(net.alice.device.pollTimeout(), undefined, 'nothing left to do');
    assert.ok(net.clock.monotonicMs - start >= REKEY_ATTEMPT_TIME);

    net.deliverIf = () => true;
    net.send(net.alice, ipv4Packet(40, 9));
    net.exchange();

    assert.equal(initiations(net.alice).length, sent + 1);
    assert.deepEqual(net.take(net.bob, 'packet')[0]?.packet, ipv4Packet(40, 9));
  });

  void it('spaces retransmissions by REKEY_TIMEOUT plus at most 333 ms of jitter', () => {
    const net = new TwoPeers();
    net.deliverIf = () => false;
    net.send(net.alice, ipv4Packet(40));
    const times: number[] = [net.clock.monotonicMs];

    for (let i = 0; i < 5; i++) {
      const deadline = net.alice.device.pollTimeout()!;
      net.clock.advance(deadline - net.clock.monotonicMs);
      net.alice.device.handleTimeout(net.clock.now());
      times.push(net.clock.monotonicMs);
    }

    for (let i = 1; i < times.length; i++) {
      const gap = times[i]! - times[i - 1]!;
      assert.ok(gap >= REKEY_TIMEOUT && gap <= REKEY_TIMEOUT + 333, `gap ${gap}`);
    }
    net.exchange();
    assert.equal(initiations(net.alice).length, 6);
  });

  void it('bounds the staged queue, dropping the oldest with a counted reason', () => {
    const net = new TwoPeers();
    net.deliverIf = () => false;

    for (let i = 0; i < 130; i++) net.send(net.alice, ipv4Packet(40, i));

    const stats = net.alice.device.peerStats(net.bob.keys.publicKey);
    assert.equal(stats.drops['queue-full'], 2);
    net.deliverIf = () => true;
    net.runFor(REKEY_TIMEOUT + 400);
    const delivered = net.take(net.bob, 'packet');
    assert.equal(delivered.length, 128);
    assert.equal(delivered[0]?.packet[4], 2, 'the two oldest were dropped');
  });
});

void describe('WireGuardDevice keepalives', () => {
  void it('sends a passive keepalive KEEPALIVE_TIMEOUT after receiving data it did not answer', () => {
    const net = established();
    net.send(net.alice, ipv4Packet(60));
    net.exchange();
    const before = keepalives(net.bob).length;

    net.runFor(KEEPALIVE_TIMEOUT - 1);
    assert.equal(keepalives(net.bob).length, before);
    net.runFor(1);

    assert.equal(keepalives(net.bob).length, before + 1);
    net.runFor(3 * KEEPALIVE_TIMEOUT);
    assert.equal(keepalives(net.bob).length, before + 1, 'one keepalive per unanswered burst');
    assert.equal(initiations(net.alice).length, 1, "the keepalive answered alice's data");
  });

  void it('does not send a passive keepalive when data went back in time', () => {
    const net = established();
    net.send(net.alice, ipv4Packet(60));
    net.exchange();
    net.clock.advance(KEEPALIVE_TIMEOUT / 2);
    net.send(net.bob, ipv4Packet(60));

    net.runFor(2 * KEEPALIVE_TIMEOUT);

    assert.equal(keepalives(net.bob).length, 0);
  });

  void it('starts a handshake when data sent gets no answer for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT', () => {
    const net = established();
    net.deliverIf = (from) => from !== net.alice;
    net.send(net.alice, ipv4Packet(60));

    net.runFor(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT - 1);
    assert.equal(initiations(net.alice).length, 1);
    net.runFor(334);

    assert.equal(initiations(net.alice).length, 2);
  });

  void it('sends persistent keepalives every interval of silence', () => {
    const net = new TwoPeers({ alice: { persistentKeepaliveSeconds: 25 } });
    net.handshake();
    const start = net.clock.monotonicMs;

    net.runFor(60_000);

    assert.equal(
      keepalives(net.alice).length,
      1 + 2,
      'the confirming keepalive, then one at 25 s and one at 50 s',
    );
    assert.equal(keepalives(net.bob).length, 0, 'bob has no persistent keepalive');
    assert.equal(net.clock.monotonicMs - start, 60_000);
  });
});

/** Bob's handshake queue is deep whenever something reaches him, as during a flood. */
function floodBob(net: TwoPeers): void {
  net.deliverIf = (from) => {
    if (from === net.alice) loadBob(net);
    return true;
  };
}

function loadBob(net: TwoPeers): void {
  net.bob.device.noteHandshakeQueueDepth(UNDER_LOAD_QUEUE_DEPTH, net.clock.now());
}

void describe('WireGuardDevice cookies under load', () => {
  void it('answers an initiation without MAC2 with a cookie, then accepts the retry that carries it', () => {
    const net = new TwoPeers();
    floodBob(net);

    net.handshake();

    assert.deepEqual(
      net.bob.sent.map((t) => [t.datagram[0], t.datagram.length]),
      [[MESSAGE_HANDSHAKE_COOKIE, 64]],
    );
    assert.deepEqual(
      net.take(net.bob, 'drop').map((event) => event.reason),
      ['cookie-sent'],
    );
    assert.deepEqual(initiations(net.alice)[0]?.datagram.subarray(132), new Uint8Array(16));

    net.runFor(REKEY_TIMEOUT + 400);

    const retry = initiations(net.alice)[1]!.datagram;
    assert.notDeepEqual(retry.subarray(132), new Uint8Array(16), 'the retry carries MAC2');
    assert.equal(net.take(net.alice, 'handshake-complete').length, 1);
    assert.equal(net.take(net.bob, 'handshake-complete').length, 1);
  });

  void it('refuses a cookie reply it did not ask for', () => {
    const net = new TwoPeers();
    floodBob(net);
    net.handshake();
    const cookie = ofType(net.bob.sent, MESSAGE_HANDSHAKE_COOKIE)[0]!.datagram;

    net.alice.device.handleDatagram(cookie, net.bob.endpoint, net.clock.now());

    const drops = net.take(net.alice, 'drop').map((event) => event.reason);
    assert.deepEqual(drops, ['bad-cookie'], 'a second reply to the same MAC1 is refused');
  });

  void it('binds the cookie to the source address', () => {
    const net = new TwoPeers();
    floodBob(net);
    net.handshake();
    net.clock.advance(REKEY_TIMEOUT + 400);
    net.alice.device.handleTimeout(net.clock.now());
    const retry = net.alice.device.pollTransmit()!;
    loadBob(net);

    net.bob.device.handleDatagram(retry.datagram, parseEndpoint('203.0.113.9:1'), net.clock.now());

    const reply = net.bob.device.pollTransmit();
    assert.equal(reply?.datagram[0], MESSAGE_HANDSHAKE_COOKIE);
    assert.deepEqual(reply?.to, parseEndpoint('203.0.113.9:1'));
  });

  void it('under load, limits each source address to its rate even with a valid MAC2', () => {
    const net = new TwoPeers();
    floodBob(net);
    net.handshake();
    net.runFor(REKEY_TIMEOUT + 400);
    assert.equal(net.take(net.bob, 'handshake-complete').length, 1);
    const withMac2 = initiations(net.alice)[1]!.datagram;
    net.take(net.bob, 'drop');
    net.clock.advance(1000);

    for (let n = 0; n < 8; n++) {
      loadBob(net);
      net.bob.device.handleDatagram(withMac2, net.alice.endpoint, net.clock.now());
    }

    const drops = net.take(net.bob, 'drop').map((event) => event.reason);
    assert.deepEqual(drops, [
      ...Array<string>(5).fill('stale-timestamp'),
      ...Array<string>(3).fill('source-rate-limited'),
    ]);
    assert.equal(net.bob.device.deviceDrops()['source-rate-limited'], 3);
  });

  void it('leaves load UNDER_LOAD_AFTER_TIME after the queue was last deep', () => {
    const net = new TwoPeers();
    loadBob(net);
    net.clock.advance(UNDER_LOAD_AFTER_TIME - 1);
    net.handshake();
    assert.deepEqual(
      net.take(net.bob, 'drop').map((event) => event.reason),
      ['cookie-sent'],
    );

    net.clock.advance(1);
    net.runFor(REKEY_TIMEOUT + 400);

    assert.equal(net.take(net.bob, 'handshake-complete').length, 1);
    assert.equal(net.bob.device.deviceDrops()['cookie-sent'], 1);
  });
});

void describe('WireGuardDevice key lifetime and roaming', () => {
  void it('zeroes all keys 3 × REJECT_AFTER_TIME after the last handshake', () => {
    const net = established();
    const memory = new Uint8Array(net.alice.device.sharedMemory.buffer);
    const keyBytes = (): number => {
      let sum = 0;
      for (let slot = 0; slot < net.alice.device.sharedMemory.keypairSlots; slot++) {
        const base = keypairBase(slot) * 4;
        for (const at of [K_SEND_KEY, K_RECEIVE_KEY]) {
          for (let i = 0; i < 32; i++) sum += memory[base + at * 4 + i]!;
        }
      }
      return sum;
    };
    const confirmingKeepalive = keepalives(net.alice)[0]!.datagram;
    assert.ok(keyBytes() > 0);

    net.runFor(3 * REJECT_AFTER_TIME - 1);
    assert.ok(keyBytes() > 0);
    net.runFor(1);

    assert.equal(keyBytes(), 0);
    net.bob.device.handleDatagram(confirmingKeepalive, net.alice.endpoint, net.clock.now());
    assert.deepEqual(
      net.take(net.bob, 'drop').map((event) => event.reason),
      ['unknown-receiver'],
    );
  });

  void it('follows the peer to the source of its latest authenticated packet', () => {
    const net = established();
    const roamed = parseEndpoint('[2001:db8::7]:4000');
    net.send(net.alice, ipv4Packet(40));
    const fromNewPlace = net.alice.device.pollTransmit()!.datagram;

    net.bob.device.handleDatagram(fromNewPlace, roamed, net.clock.now());
    net.send(net.bob, ipv4Packet(40));

    assert.deepEqual(net.bob.device.peerStats(net.alice.keys.publicKey).endpoint, roamed);
    assert.deepEqual(net.bob.device.pollTransmit()?.to, roamed);
  });

  void it('sends keepalives and handshakes to where a data worker saw the peer roam', () => {
    const net = established();
    const bob = net.bob.device;
    const worker = new TransportPath(bob.sharedMemory, libsodiumWasmProvider);
    const slots = new PeerSlots(bob.sharedMemory);
    // What a data worker does with an authenticated packet from a new source.
    const receiveInWorker = (from: Endpoint): void => {
      net.send(net.alice, ipv4Packet(40));
      const datagram = net.alice.device.pollTransmit()!.datagram;
      const plaintext = new Uint8Array(datagram.length);
      const opener = { peer: -1 };
      const opened = worker.open(
        datagram,
        0,
        datagram.length,
        plaintext,
        0,
        net.clock.monotonicMs,
        opener,
      );
      assert.equal(opened, 40);
      slots.noteEndpoint(opener.peer, from.address, from.port);
    };

    const roamed = parseEndpoint('203.0.113.9:4000');
    receiveInWorker(roamed);
    net.clock.advance(KEEPALIVE_TIMEOUT);
    bob.handleTimeout(net.clock.now());
    const keepalive = bob.pollTransmit()!;
    assert.equal(keepalive.datagram.length, 32);
    assert.deepEqual(keepalive.to, roamed);

    const roamedAgain = parseEndpoint('[2001:db8::9]:4001');
    receiveInWorker(roamedAgain);
    bob.initiateHandshake(net.alice.keys.publicKey, net.clock.now());
    const initiation = bob.pollTransmit()!;
    assert.equal(initiation.datagram[0], MESSAGE_HANDSHAKE_INITIATION);
    assert.deepEqual(initiation.to, roamedAgain);
    assert.deepEqual(bob.peerStats(net.alice.keys.publicKey).endpoint, roamedAgain);
  });

  void it('a peer re-added without an endpoint does not inherit its slot’s old one', () => {
    const net = established();
    const bob = net.bob.device;
    const slot = bob.peerSlot(net.alice.keys.publicKey);
    bob.removePeer(net.alice.keys.publicKey);
    bob.addPeer({ publicKey: net.alice.keys.publicKey });
    assert.equal(bob.peerSlot(net.alice.keys.publicKey), slot);
    assert.equal(bob.peerStats(net.alice.keys.publicKey).endpoint, undefined);
  });

  void it('does not move the endpoint for a packet that fails authentication', () => {
    const net = established();
    net.send(net.alice, ipv4Packet(40));
    const forged = new Uint8Array(net.alice.device.pollTransmit()!.datagram);
    forged[40]! ^= 1;

    net.bob.device.handleDatagram(forged, parseEndpoint('203.0.113.66:9'), net.clock.now());

    assert.deepEqual(
      net.bob.device.peerStats(net.alice.keys.publicKey).endpoint,
      net.alice.endpoint,
    );
  });
});
