import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { blake2s } from '@noble/hashes/blake2.js';
import { MemoryTunQueues } from '@gatehouse/tun';
import { DatagramBatch, MemoryUdpNetwork } from '@gatehouse/udp';
import type { MemoryUdpSocket } from '@gatehouse/udp';
import {
  createSharedTransportMemory,
  generateKeyPair,
  mac1Key,
  MESSAGE_HANDSHAKE_COOKIE_SIZE,
  MESSAGE_HANDSHAKE_INITIATION_SIZE,
  MESSAGE_HANDSHAKE_RESPONSE_SIZE,
  selectCryptoProvider,
} from '@gatehouse/wireguard';

import { AddressActivity } from '../src/address-activity.ts';
import { AllowedIps } from '../src/allowed-ips.ts';
import { DataPath } from '../src/data-path.ts';
import { DropCounters, UNATTRIBUTED } from '../src/drop-counters.ts';
import { HandshakeRing } from '../src/handshake-ring.ts';

const MTU = 1280;

/** One data path over in-memory devices, its handshake ring, and a socket to send to it from. */
async function harness(): Promise<{
  dataPath: DataPath;
  ring: HandshakeRing;
  drops: DropCounters;
  key: Uint8Array;
  send: (datagram: Uint8Array) => void;
}> {
  const transport = createSharedTransportMemory({ mtu: MTU });
  const drops = new DropCounters(transport.peerSlots);
  const ring = new HandshakeRing(transport.buffer);
  const network = new MemoryUdpNetwork({ maxSockets: 2, queueDepth: 64 });
  const socket = network.bind('10.0.0.2', 51820);
  const sender: MemoryUdpSocket = network.bind('10.0.0.1', 4000);
  const key = mac1Key(generateKeyPair().publicKey);
  const dataPath = new DataPath({
    transport,
    crypto: (await selectCryptoProvider('auto')).provider,
    allowedIps: new AllowedIps().compile().shared,
    dropCounters: drops.buffer,
    activity: AddressActivity.create([], 0).shared,
    tun: new MemoryTunQueues({ queues: 1, mtu: MTU }).queue(0),
    udp: socket,
    handshakes: ring,
    mac1Key: key,
  });
  const batch = new DatagramBatch(1, 2048);
  const send = (datagram: Uint8Array): void => {
    batch.setEndpoint(0, { family: 4, address: Uint8Array.of(10, 0, 0, 2), port: 51820 });
    batch.data.set(datagram);
    batch.lengths[0] = datagram.length;
    sender.sendBatch(batch, 1);
  };
  return { dataPath, ring, drops, key, send };
}

function handshakeMessage(type: number, size: number, key?: Uint8Array): Uint8Array {
  const message = new Uint8Array(size).fill(0x5a);
  message.set([type, 0, 0, 0]);
  if (key !== undefined)
    message.set(blake2s(message.subarray(0, size - 32), { key, dkLen: 16 }), size - 32);
  return message;
}

void describe('DataPath: handshake messages are screened before the ring', () => {
  void it('lets in initiations and responses with a valid MAC1, and cookie replies', async () => {
    const { dataPath, ring, drops, key, send } = await harness();
    send(handshakeMessage(1, MESSAGE_HANDSHAKE_INITIATION_SIZE, key));
    send(handshakeMessage(2, MESSAGE_HANDSHAKE_RESPONSE_SIZE, key));
    send(handshakeMessage(3, MESSAGE_HANDSHAKE_COOKIE_SIZE));
    dataPath.inbound();
    assert.equal(ring.waiting, 3);
    assert.equal(drops.read(UNATTRIBUTED)['bad-mac1'], 0);
  });

  void it('counts and keeps out a bad MAC1, a wrong size and an unknown type', async () => {
    const { dataPath, ring, drops, key, send } = await harness();
    send(handshakeMessage(1, MESSAGE_HANDSHAKE_INITIATION_SIZE));
    send(
      handshakeMessage(2, MESSAGE_HANDSHAKE_RESPONSE_SIZE, mac1Key(generateKeyPair().publicKey)),
    );
    send(handshakeMessage(1, MESSAGE_HANDSHAKE_INITIATION_SIZE + 1, key));
    send(handshakeMessage(3, MESSAGE_HANDSHAKE_COOKIE_SIZE - 1));
    const reservedSet = handshakeMessage(1, MESSAGE_HANDSHAKE_INITIATION_SIZE, key);
    reservedSet[1] = 1;
    send(reservedSet);
    dataPath.inbound();
    assert.equal(ring.waiting, 0);
    const counted = drops.read(UNATTRIBUTED);
    assert.equal(counted['bad-mac1'], 2);
    assert.equal(counted.malformed, 2);
    assert.equal(counted['unknown-type'], 1);
  });
});
