import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { libsodiumWasmProvider } from '../src/crypto/libsodium-wasm.ts';
import type { CryptoProvider } from '../src/crypto/provider.ts';
import { TRANSPORT_UNKNOWN_RECEIVER, TransportPath } from '../src/transport.ts';
import { K_PEER, K_SEQUENCE, beginWrite, endWrite, keypairBase } from '../src/worker-contract.ts';
import type { SharedTransportMemory } from '../src/worker-contract.ts';
import { TwoPeers, ipv4Packet } from './two-peers.ts';

/** libsodium's provider, but the next transport open() first runs `during` (once). */
function interruptingProvider(): {
  provider: CryptoProvider;
  interrupt: (during: () => void) => void;
} {
  let pending: (() => void) | undefined;
  const provider: CryptoProvider = {
    name: libsodiumWasmProvider.name,
    seal: (...args) => libsodiumWasmProvider.seal(...args),
    open: (...args) => libsodiumWasmProvider.open(...args),
    transportAead(key) {
      const aead = libsodiumWasmProvider.transportAead(key);
      return {
        seal: (...args) => aead.seal(...args),
        open: (...args) => {
          const during = pending;
          pending = undefined;
          during?.();
          return aead.open(...args);
        },
        destroy: () => aead.destroy(),
      };
    },
  };
  return { provider, interrupt: (during) => (pending = during) };
}

/** What the control thread does when it hands the keypair slot to another peer, in one seqlock write. */
function recycleForPeer(memory: SharedTransportMemory, slot: number, peer: number): void {
  const words = new Int32Array(memory.buffer);
  const base = keypairBase(slot);
  beginWrite(words, base + K_SEQUENCE);
  Atomics.store(words, base + K_PEER, peer);
  endWrite(words, base + K_SEQUENCE);
}

function sealedByAlice(net: TwoPeers): Uint8Array {
  net.send(net.alice, ipv4Packet(60));
  const transmit = net.alice.device.pollTransmit();
  assert.ok(transmit);
  return transmit.datagram;
}

void describe('a keypair slot recycled while a packet is being opened', () => {
  void it('drops the packet as unknown-receiver, blamed on no peer', () => {
    const net = new TwoPeers();
    net.handshake();
    const memory = net.bob.device.sharedMemory;
    const { provider, interrupt } = interruptingProvider();
    const path = new TransportPath(memory, provider);
    const datagram = sealedByAlice(net);
    const slot =
      new DataView(datagram.buffer, datagram.byteOffset).getUint32(4, true) &
      (memory.keypairSlots - 1);
    const alice = net.bob.device.peerSlot(net.alice.keys.publicKey);
    const out = new Uint8Array(datagram.length);
    const from = { peer: -1 };
    assert.equal(path.open(datagram, 0, datagram.length, out, 0, net.clock.monotonicMs, from), 60);
    assert.equal(from.peer, alice);

    const again = sealedByAlice(net);
    interrupt(() => recycleForPeer(memory, slot, alice + 1));
    const result = path.open(again, 0, again.length, out, 0, net.clock.monotonicMs, from);

    assert.equal(result, TRANSPORT_UNKNOWN_RECEIVER);
    assert.equal(from.peer, -1);
    path.destroy();
  });

  void it('is counted by the device, and no packet comes out', () => {
    const { provider, interrupt } = interruptingProvider();
    const net = new TwoPeers({ bobDevice: { crypto: provider } });
    net.handshake();
    const datagram = sealedByAlice(net);
    const memory = net.bob.device.sharedMemory;
    const slot =
      new DataView(datagram.buffer, datagram.byteOffset).getUint32(4, true) &
      (memory.keypairSlots - 1);
    const alice = net.bob.device.peerSlot(net.alice.keys.publicKey);
    const before = net.bob.device.deviceDrops()['unknown-receiver'];

    interrupt(() => recycleForPeer(memory, slot, alice + 1));
    net.bob.device.handleDatagram(datagram, net.alice.endpoint, net.clock.now());

    assert.equal(net.bob.device.deviceDrops()['unknown-receiver'], before + 1);
    assert.deepEqual(net.take(net.bob, 'packet'), []);
  });
});
