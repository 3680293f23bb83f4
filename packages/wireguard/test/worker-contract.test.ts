import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';

import { libsodiumWasmProvider } from '../src/crypto/libsodium-wasm.ts';
import { REPLAY_WINDOW_SIZE } from '../src/replay-window.ts';
import { TransportPath, sealedLength } from '../src/transport.ts';
import {
  COUNTER_BLOCK_SIZE,
  Doorbell,
  H_DOORBELL,
  P_SIGNALS,
  PeerSlots,
  SIGNAL_HANDSHAKE_NEEDED,
  createSharedTransportMemory,
  endpointAddressLength,
  endpointPort,
  raiseSignal,
  peerBase,
} from '../src/worker-contract.ts';
import type { SealWorkerData } from './seal-worker.ts';
import { TWO_PEERS_MTU, TwoPeers } from './two-peers.ts';

function established(): TwoPeers {
  const net = new TwoPeers();
  net.handshake();
  return net;
}

function counterOf(message: Uint8Array): number {
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  return view.getUint32(8, true) + view.getUint32(12, true) * 2 ** 32;
}

void describe('worker contract', () => {
  void it('lets two threads seal through one shared keypair without reusing a counter', async () => {
    const net = established();
    const alice = net.alice.device;
    const count = 3000;
    const packetLength = 64;
    const stride = sealedLength(packetLength, TWO_PEERS_MTU);
    const outputs = [0, 1].map(() => new SharedArrayBuffer(count * stride));

    const workers = outputs.map((output) => {
      const workerData: SealWorkerData = {
        memory: alice.sharedMemory,
        peer: alice.peerSlot(net.bob.keys.publicKey),
        count,
        packetLength,
        mtu: TWO_PEERS_MTU,
        nowMs: net.clock.monotonicMs,
        output,
      };
      return new Worker(new URL('./seal-worker.ts', import.meta.url), { workerData });
    });
    const sealed = await Promise.all(
      workers.map(async (worker) => (await once(worker, 'message'))[0]),
    );

    assert.deepEqual(sealed, [count, count]);
    const messages = outputs.flatMap((output) =>
      Array.from({ length: count }, (_, i) => new Uint8Array(output, i * stride, stride)),
    );
    const counters = messages.map(counterOf);
    assert.equal(new Set(counters).size, 2 * count, 'every counter is used once');
    assert.ok(Math.max(...counters) < 2 * count + 2 * COUNTER_BLOCK_SIZE + 1);
    messages.sort((a, b) => counterOf(a) - counterOf(b));
    for (const message of messages) {
      net.bob.device.handleDatagram(message, net.alice.endpoint, net.clock.now());
    }
    assert.equal(net.take(net.bob, 'packet').length, 2 * count);
    assert.equal(net.take(net.bob, 'drop').length, 0);
    assert.equal(alice.peerStats(net.bob.keys.publicKey).txPackets, 2 * count + 1);
  });

  void it('moves a sender that fell behind busier ones to a fresh block, inside the replay window', () => {
    const net = established();
    const memory = net.alice.device.sharedMemory;
    const peer = net.alice.device.peerSlot(net.bob.keys.publicKey);
    const [quiet, busy] = [0, 1].map(() => new TransportPath(memory, libsodiumWasmProvider));
    const packet = Uint8Array.of(0x45, 0, 0, 20, ...new Array<number>(16).fill(0));
    const out = new Uint8Array(sealedLength(packet.length, TWO_PEERS_MTU));
    const seal = (path: TransportPath): Uint8Array => {
      const length = path.seal(peer, packet, 0, packet.length, out, 0, net.clock.monotonicMs);
      return out.slice(0, length);
    };
    seal(quiet!);
    let newest = 0;
    for (let i = 0; i < 2 * REPLAY_WINDOW_SIZE; i++) {
      const message = seal(busy!);
      newest = counterOf(message);
      if (i >= 2 * REPLAY_WINDOW_SIZE - 4) {
        net.bob.device.handleDatagram(message, net.alice.endpoint, net.clock.now());
      }
    }
    const late = seal(quiet!);
    assert.ok(newest - counterOf(late) < REPLAY_WINDOW_SIZE / 2 + COUNTER_BLOCK_SIZE);
    net.bob.device.handleDatagram(late, net.alice.endpoint, net.clock.now());
    assert.equal(net.take(net.bob, 'drop').length, 0);
    assert.equal(net.take(net.bob, 'packet').length, 5);
  });

  void it('rings the doorbell once per new signal, and the device acts on it', () => {
    const net = established();
    const memory = net.alice.device.sharedMemory;
    const words = new Int32Array(memory.buffer);
    const peer = net.alice.device.peerSlot(net.bob.keys.publicKey);
    const before = Atomics.load(words, H_DOORBELL);

    raiseSignal(words, peerBase(memory.keypairSlots, peer), SIGNAL_HANDSHAKE_NEEDED);
    raiseSignal(words, peerBase(memory.keypairSlots, peer), SIGNAL_HANDSHAKE_NEEDED);

    assert.equal(Atomics.load(words, H_DOORBELL), before + 1);
    net.clock.advance(1000);
    net.alice.device.handleTimeout(net.clock.now());
    assert.equal(net.alice.device.pollTransmit()?.datagram[0], 1, 'a new initiation');
  });

  void it('PeerSlots: a session once the handshake is done, a handshake request as a signal and a doorbell ring', () => {
    const net = new TwoPeers();
    const memory = net.alice.device.sharedMemory;
    const slots = new PeerSlots(memory);
    const doorbell = new Doorbell(memory);
    const bob = net.alice.device.peerSlot(net.bob.keys.publicKey);
    assert.equal(slots.hasSession(bob), false);
    net.handshake();
    assert.equal(slots.hasSession(bob), true);

    const rings = doorbell.rings;
    slots.requestHandshake(bob);
    const words = new Int32Array(memory.buffer);
    assert.equal(
      words[peerBase(memory.keypairSlots, bob) + P_SIGNALS]! & SIGNAL_HANDSHAKE_NEEDED,
      1,
    );
    assert.equal(doorbell.rings, rings + 1);
    slots.requestHandshake(bob);
    assert.equal(doorbell.rings, rings + 1, 'a bit already set rings no more');
  });

  void it('PeerSlots: endpoints read back as written, each write a new version', () => {
    const memory = createSharedTransportMemory({ mtu: 1280, capacity: { peers: 2 } });
    const slots = new PeerSlots(memory);
    const address = new Uint8Array(16);
    assert.equal(slots.readEndpoint(1, address), 0, 'none yet');
    const before = slots.endpointVersion(1);

    slots.noteEndpoint(1, Uint8Array.of(192, 0, 2, 7), 51820);
    const v4 = slots.readEndpoint(1, address);
    assert.deepEqual([endpointAddressLength(v4), endpointPort(v4)], [4, 51820]);
    assert.deepEqual([...address.subarray(0, 4)], [192, 0, 2, 7]);
    const afterV4 = slots.endpointVersion(1);
    assert.notEqual(afterV4, before);

    const v6Address = Uint8Array.from({ length: 16 }, (_, index) => 0x20 + index);
    slots.noteEndpoint(1, v6Address, 65535);
    const v6 = slots.readEndpoint(1, address);
    assert.deepEqual([endpointAddressLength(v6), endpointPort(v6)], [16, 65535]);
    assert.deepEqual(address, v6Address);
    assert.notEqual(slots.endpointVersion(1), afterV4);
    assert.equal(slots.readEndpoint(0, address), 0, 'the other peer still has none');
  });

  void it('Doorbell: rungSince resolves once it rings, at once when it already has', async () => {
    const doorbell = new Doorbell(createSharedTransportMemory({ mtu: 1280 }));
    const seen = doorbell.rings;
    let resolved = false;
    const waiting = doorbell.rungSince(seen).then(() => (resolved = true));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(resolved, false);
    doorbell.ring();
    await waiting;
    assert.equal(resolved, true);
    await doorbell.rungSince(seen);
  });
});
