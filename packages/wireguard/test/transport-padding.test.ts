import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { MAX_CONTENT_SIZE, MESSAGE_TRANSPORT_MIN_SIZE } from '../src/constants.ts';
import { libsodiumWasmProvider } from '../src/crypto/libsodium-wasm.ts';
import { TransportPath, paddedLength, sealedLength } from '../src/transport.ts';
import { createSharedTransportMemory } from '../src/worker-contract.ts';
import { TWO_PEERS_MTU, TwoPeers, ipv4Packet } from './two-peers.ts';

void describe('transport padding', () => {
  void it('pads to a multiple of 16 but never beyond the MTU', () => {
    const table: [length: number, mtu: number, padded: number][] = [
      [0, 1420, 0],
      [1, 1420, 16],
      [16, 1420, 16],
      [1392, 1420, 1392],
      [1400, 1420, 1408],
      [1408, 1420, 1408],
      [1409, 1420, 1420],
      [1419, 1420, 1420],
      [1420, 1420, 1420],
      [1421, 1420, 1421],
      [1500, 1420, 1500],
      [1273, 1280, 1280],
      [1280, 1280, 1280],
      [1397, 1400, 1400],
      [1, 5, 5],
      [MAX_CONTENT_SIZE - 1, MAX_CONTENT_SIZE, MAX_CONTENT_SIZE],
    ];
    for (const [length, mtu, padded] of table) {
      assert.equal(paddedLength(length, mtu), padded, `length ${length}, MTU ${mtu}`);
      assert.equal(sealedLength(length, mtu), MESSAGE_TRANSPORT_MIN_SIZE + padded);
    }
  });

  void it('seals a full-size packet into exactly MTU + 32 bytes, which the peer opens', () => {
    const net = new TwoPeers();
    net.handshake();
    const path = new TransportPath(net.alice.device.sharedMemory, libsodiumWasmProvider);
    const peer = net.alice.device.peerSlot(net.bob.keys.publicKey);
    const out = new Uint8Array(2048);
    for (const length of [20, 1400, 1409, 1419, TWO_PEERS_MTU]) {
      const packet = ipv4Packet(length);
      const sealed = path.seal(peer, packet, 0, length, out, 0, net.clock.monotonicMs);
      assert.equal(sealed, sealedLength(length, TWO_PEERS_MTU), `packet of ${length}`);
      assert.ok(sealed <= TWO_PEERS_MTU + MESSAGE_TRANSPORT_MIN_SIZE);
      net.bob.device.handleDatagram(out.slice(0, sealed), net.alice.endpoint, net.clock.now());
      const [received] = net.take(net.bob, 'packet');
      assert.deepEqual(received?.packet, packet);
    }
    assert.deepEqual(net.take(net.bob, 'drop'), []);
    path.destroy();
  });

  void it('caps the padding of packets the device itself seals', () => {
    const net = new TwoPeers();
    net.handshake();
    net.alice.device.sendPacket(net.bob.keys.publicKey, ipv4Packet(1415), net.clock.now());
    assert.equal(net.alice.device.pollTransmit()?.datagram.length, TWO_PEERS_MTU + 32);
  });

  void it('refuses an MTU that is not a positive integer up to the largest content', () => {
    for (const mtu of [0, -1, 1280.5, MAX_CONTENT_SIZE + 1, Number.NaN]) {
      assert.throws(() => createSharedTransportMemory({ mtu }), /MTU must be an integer/);
    }
  });
});
