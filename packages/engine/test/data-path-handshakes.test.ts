import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { blake2s } from '@noble/hashes/blake2.js';
import { parseEndpoint } from '@gatehouse/addresses';
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
import { DataPath, outboundSlotLayout, RELAY_HEADROOM } from '../src/data-path.ts';
import { DropCounters, UNATTRIBUTED } from '../src/drop-counters.ts';
import { compilePolicy } from '../src/policy.ts';
import { DatagramRing, HANDSHAKE_RING, RELAY_RING } from '../src/datagram-ring.ts';
import { CHANNEL_DATA_HEADER_BYTES, STUN_MAGIC_COOKIE } from '../src/relay-demux.ts';
import { RouteMissRing } from '../src/route-miss.ts';

const MTU = 1280;

/** One data path over in-memory devices, its handshake ring, and a socket to send to it from. */
async function harness(): Promise<{
  dataPath: DataPath;
  ring: DatagramRing;
  relay: DatagramRing;
  drops: DropCounters;
  key: Uint8Array;
  send: (datagram: Uint8Array) => void;
}> {
  const transport = createSharedTransportMemory({ mtu: MTU });
  const drops = new DropCounters(transport.peerSlots);
  const ring = new DatagramRing(transport, HANDSHAKE_RING);
  const relay = new DatagramRing(transport, RELAY_RING);
  const network = new MemoryUdpNetwork({ maxSockets: 2, queueDepth: 64 });
  const socket = network.bind('10.0.0.2', 51820);
  const sender: MemoryUdpSocket = network.bind('10.0.0.1', 4000);
  const key = mac1Key(generateKeyPair().publicKey);
  const dataPath = new DataPath({
    transport,
    crypto: (await selectCryptoProvider('auto')).provider,
    allowedIps: new AllowedIps().compile().shared,
    policy: compilePolicy([], transport.peerSlots),
    dropCounters: drops.buffer,
    activity: AddressActivity.create([], 0).shared,
    tun: new MemoryTunQueues({ queues: 1, mtu: MTU }).queue(0),
    udp: socket,
    handshakes: ring,
    relay,
    routeMisses: new RouteMissRing(transport),
    mac1Key: key,
  });
  const batch = new DatagramBatch(1, 2048);
  const send = (datagram: Uint8Array): void => {
    batch.setEndpoint(0, { family: 4, address: Uint8Array.of(10, 0, 0, 2), port: 51820 });
    batch.data.set(datagram);
    batch.lengths[0] = datagram.length;
    sender.sendBatch(batch, 1);
  };
  return { dataPath, ring, relay, drops, key, send };
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

/** A STUN Binding success response carrying one 12-byte XOR-MAPPED-ADDRESS. */
function stunBindingResponse(): Uint8Array {
  const message = new Uint8Array(32);
  const view = new DataView(message.buffer);
  view.setUint16(0, 0x0101);
  view.setUint16(2, 12);
  view.setUint32(4, STUN_MAGIC_COOKIE);
  message.fill(0x33, 8, 20);
  view.setUint16(20, 0x0020);
  view.setUint16(22, 8);
  message.set([0, 1, 0x21, 0x12, 10, 20, 30, 40], 24);
  return message;
}

void describe('DataPath: STUN and TURN datagrams go to the relay ring, not to WireGuard', () => {
  void it('sends a STUN response and ChannelData to the relay ring, uncounted as handshakes or drops', async () => {
    const { dataPath, ring, relay, drops, send } = await harness();
    send(stunBindingResponse());
    const channelData = new Uint8Array(CHANNEL_DATA_HEADER_BYTES + 32).fill(0x04);
    channelData.set([0x40, 0x00, 0, 32]);
    send(channelData);
    dataPath.inbound();
    assert.equal(relay.waiting, 2);
    assert.equal(ring.waiting, 0);
    const received: Uint8Array[] = [];
    relay.drain((datagram, from) => {
      received.push(datagram);
      assert.deepEqual(from, parseEndpoint('10.0.0.1:4000'));
    });
    assert.deepEqual(received, [stunBindingResponse(), channelData]);
    assert.deepEqual(
      Object.entries(drops.read(UNATTRIBUTED)).filter(([, count]) => count > 0),
      [],
    );
  });

  void it('keeps WireGuard messages that resemble STUN out of the relay ring', async () => {
    const { dataPath, ring, relay, drops, key, send } = await harness();
    // A sender index whose bytes are the magic cookie: the STUN length (bytes 2-3, zero) does not fit.
    const initiation = handshakeMessage(1, MESSAGE_HANDSHAKE_INITIATION_SIZE);
    new DataView(initiation.buffer).setUint32(4, STUN_MAGIC_COOKIE);
    initiation.set(blake2s(initiation.subarray(0, 116), { key, dkLen: 16 }), 116);
    send(initiation);
    // A ChannelData header claiming more than the datagram holds is not ChannelData.
    send(Uint8Array.of(0x40, 0x01, 0, 200, ...new Uint8Array(60)));
    dataPath.inbound();
    assert.equal(ring.waiting, 1);
    assert.equal(relay.waiting, 0);
    assert.equal(drops.read(UNATTRIBUTED)['unknown-type'], 1);
  });
});

void describe('outbound slot layout', () => {
  for (const mtu of [576, 1280, 1420, 9000]) {
    void it(`leaves room for a ChannelData header in front of the WireGuard message (MTU ${mtu})`, () => {
      const layout = outboundSlotLayout(mtu);
      assert.equal(layout.messageAt, RELAY_HEADROOM);
      assert.ok(RELAY_HEADROOM >= CHANNEL_DATA_HEADER_BYTES);
      assert.equal(layout.packetAt, layout.messageAt + 16, 'the transport header');
      // Header, the largest padded packet and the tag fit; slots stay cache-line aligned.
      assert.ok(layout.slotBytes >= layout.packetAt + Math.ceil(mtu / 16) * 16 + 16);
      assert.equal(layout.slotBytes % 64, 0);
    });
  }
});
