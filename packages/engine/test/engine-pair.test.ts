import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { MemoryTun } from '@gatehouse/tun';
import { DatagramBatch, MemoryUdpNetwork, parseEndpoint } from '@gatehouse/udp';
import type { MemoryUdpSocket } from '@gatehouse/udp';

import { selectCryptoProvider } from '../../wireguard/src/crypto/select.ts';
import type { CryptoProvider } from '../../wireguard/src/crypto/provider.ts';
import { generateKeyPair } from '../../wireguard/src/keys.ts';
import type { KeyPair } from '../../wireguard/src/keys.ts';
import { createSharedTransportMemory } from '../../wireguard/src/worker-contract.ts';
import { AllowedIps } from '../src/allowed-ips.ts';
import { DataPath } from '../src/data-path.ts';
import { DropCounters } from '../src/drop-counters.ts';
import { HandshakeControl } from '../src/handshake-control.ts';

interface TestEngine {
  tun: MemoryTun;
  udp: MemoryUdpSocket;
  control: HandshakeControl;
  dataPath: DataPath;
  drops: DropCounters;
  peer: number;
}

let crypto: CryptoProvider;
const now = () => performance.now();

function makeEngine(
  network: MemoryUdpNetwork,
  local: KeyPair,
  remote: KeyPair,
  bind: string,
  remoteEndpoint: string | undefined,
  remoteAllowed: string,
): TestEngine {
  const [address, port] = bind.split(':') as [string, string];
  const udp = network.bind(address, Number(port));
  const tun = new MemoryTun({ queues: 1 });
  const transport = createSharedTransportMemory({ peers: 4 });
  const control = new HandshakeControl(local, crypto, transport, udp);
  const peer = control.addPeer({
    publicKey: remote.publicKey,
    ...(remoteEndpoint === undefined ? {} : { endpoint: parseEndpoint(remoteEndpoint) }),
  });
  const allowed = new AllowedIps();
  allowed.set(remoteAllowed, peer);
  const drops = new DropCounters(transport.peerSlots);
  const dataPath = new DataPath({
    transport,
    crypto,
    allowedIps: allowed.compile().shared,
    dropCounters: drops.buffer,
    tun,
    udp,
    onHandshakeMessage: (datagram, source) =>
      control.handleHandshakeMessage(datagram, source, now()),
    now,
  });
  return { tun, udp, control, dataPath, drops, peer };
}

/** Runs both engines' loops until `done` holds or 200 rounds passed. */
function pump(engines: TestEngine[], done: () => boolean): void {
  for (let round = 0; round < 200 && !done(); round++) {
    for (const engine of engines) {
      engine.control.service(now(), Date.now());
      engine.dataPath.flushHeld();
      engine.dataPath.outbound();
      engine.dataPath.inbound();
    }
  }
}

function ipv4Udp(source: string, destination: string, payload: string, ecn = 0): Uint8Array {
  const body = new TextEncoder().encode(payload);
  const packet = new Uint8Array(28 + body.length);
  const view = new DataView(packet.buffer);
  packet[0] = 0x45;
  packet[1] = ecn;
  view.setUint16(2, packet.length);
  packet[8] = 64;
  packet[9] = 17;
  packet.set(source.split('.').map(Number), 12);
  packet.set(destination.split('.').map(Number), 16);
  let sum = 0;
  for (let index = 0; index < 20; index += 2) sum += view.getUint16(index);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  view.setUint16(10, ~sum & 0xffff);
  view.setUint16(20, 1000);
  view.setUint16(22, 2000);
  view.setUint16(24, 8 + body.length);
  packet.set(body, 28);
  return packet;
}

void describe('two engines over in-memory TUN and UDP', () => {
  let network: MemoryUdpNetwork;
  let client: TestEngine;
  let gateway: TestEngine;
  const written: Uint8Array[][] = [[], []];
  const collect = () => {
    written[0]!.push(...client.tun.takeWritten());
    written[1]!.push(...gateway.tun.takeWritten());
  };

  before(async () => {
    crypto = (await selectCryptoProvider()).provider;
    network = new MemoryUdpNetwork();
    const clientKeys = generateKeyPair();
    const gatewayKeys = generateKeyPair();
    // The client knows the gateway's endpoint; the gateway learns the client's from the handshake.
    client = makeEngine(
      network,
      clientKeys,
      gatewayKeys,
      '192.0.2.1:40000',
      '192.0.2.2:51820',
      '10.0.0.2/32',
    );
    gateway = makeEngine(
      network,
      gatewayKeys,
      clientKeys,
      '192.0.2.2:51820',
      undefined,
      '10.0.0.1/32',
    );
  });

  after(() => {
    client.dataPath.destroy();
    gateway.dataPath.destroy();
    client.control.destroy();
    gateway.control.destroy();
  });

  void it('holds the first packet, completes the handshake and delivers data both ways', () => {
    const request = ipv4Udp('10.0.0.1', '10.0.0.2', 'hello gateway');
    assert.equal(client.tun.inject(request), true);
    pump([client, gateway], () => {
      collect();
      return written[1]!.length > 0;
    });
    assert.deepEqual(written[1], [request]);
    assert.notEqual(client.control.lastHandshakeMs(client.peer), undefined);
    assert.notEqual(gateway.control.lastHandshakeMs(gateway.peer), undefined);

    const reply = ipv4Udp('10.0.0.2', '10.0.0.1', 'hello client');
    gateway.tun.inject(reply);
    pump([client, gateway], () => {
      collect();
      return written[0]!.length > 0;
    });
    assert.deepEqual(written[0], [reply]);

    const many = Array.from({ length: 200 }, (_, index) =>
      ipv4Udp('10.0.0.1', '10.0.0.2', `packet ${index}`),
    );
    written[1]!.length = 0;
    for (const packet of many) {
      client.tun.inject(packet);
      if (client.tun.stats().queues[0]!.rxPackets % 100 === 0) pump([client, gateway], () => false);
    }
    pump([client, gateway], () => {
      collect();
      return written[1]!.length >= many.length;
    });
    assert.deepEqual(written[1], many, 'every packet, in order');
    const counters = client.control.keypairs.counters(client.peer);
    assert.ok(counters.txPackets >= 202, `client sent ${counters.txPackets}`);
    assert.equal(gateway.control.keypairs.counters(gateway.peer).rxPackets, counters.txPackets);
  });

  void it('drops and counts a packet whose inner source is outside the sending peer’s AllowedIPs', () => {
    const spoofed = ipv4Udp('10.0.0.99', '10.0.0.2', 'spoofed source');
    const before = gateway.drops.read(gateway.peer).sourceNotAllowed;
    written[1]!.length = 0;
    client.tun.inject(spoofed);
    pump([client, gateway], () => gateway.drops.read(gateway.peer).sourceNotAllowed > before);
    collect();
    assert.equal(gateway.drops.read(gateway.peer).sourceNotAllowed, before + 1);
    assert.deepEqual(written[1], []);
  });

  void it('drops a replayed transport message, and merges outer CE into inner ECT (RFC 6040)', () => {
    // Capture one sealed datagram on its way to the gateway instead of letting the gateway read it.
    const inner = ipv4Udp('10.0.0.1', '10.0.0.2', 'replay me', 0b10);
    client.tun.inject(inner);
    client.dataPath.outbound();
    const captured = new DatagramBatch(4, 2048);
    assert.equal(gateway.udp.receiveBatch(captured), 1);
    assert.equal(captured.tos[0], 0b10, 'outer ECN copies the inner ECT(0)');

    captured.tos[0] = 0b11; // a router on the way marked congestion
    const gatewayEndpoint = parseEndpoint('192.0.2.2:51820');
    captured.setEndpoint(0, gatewayEndpoint);
    written[1]!.length = 0;
    const replaysBefore = gateway.drops.read(gateway.peer).replay;
    assert.equal(client.udp.sendBatch(captured, 1), 1);
    assert.equal(client.udp.sendBatch(captured, 1), 1);
    pump([gateway], () => gateway.drops.read(gateway.peer).replay > replaysBefore);
    collect();
    assert.equal(gateway.drops.read(gateway.peer).replay, replaysBefore + 1);
    assert.equal(written[1]!.length, 1, 'the first copy is delivered once');
    const delivered = written[1]![0]!;
    assert.equal(delivered[1]! & 0b11, 0b11, 'inner packet now carries CE');
    let sum = 0;
    for (let index = 0; index < 20; index += 2)
      sum += (delivered[index]! << 8) | delivered[index + 1]!;
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
    assert.equal(sum, 0xffff, 'IPv4 header checksum still valid');
  });

  void it('drops a datagram whose tag does not authenticate', () => {
    client.tun.inject(ipv4Udp('10.0.0.1', '10.0.0.2', 'tamper'));
    client.dataPath.outbound();
    const captured = new DatagramBatch(4, 2048);
    assert.equal(gateway.udp.receiveBatch(captured), 1);
    captured.data[captured.offsets[0]! + 20]! ^= 1;
    captured.setEndpoint(0, parseEndpoint('192.0.2.2:51820'));
    const before = gateway.drops.read(gateway.peer).decryptFailed;
    client.udp.sendBatch(captured, 1);
    pump([gateway], () => gateway.drops.read(gateway.peer).decryptFailed > before);
    assert.equal(gateway.drops.read(gateway.peer).decryptFailed, before + 1);
  });

  void it('counts packets to destinations no peer routes', () => {
    const before = client.drops.noRoute();
    client.tun.inject(ipv4Udp('10.0.0.1', '203.0.113.9', 'nowhere'));
    client.dataPath.outbound();
    assert.equal(client.drops.noRoute(), before + 1);
  });
});
