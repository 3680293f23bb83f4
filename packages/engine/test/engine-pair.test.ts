import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { parseEndpoint } from '@gatehouse/addresses';
import type { Endpoint } from '@gatehouse/addresses';
import { MemoryTunQueues } from '@gatehouse/tun';
import { DatagramBatch, MemoryUdpNetwork } from '@gatehouse/udp';
import type { MemoryUdpSocket } from '@gatehouse/udp';
import { encodeKey, generateKeyPair, WireGuardDevice } from '@gatehouse/wireguard';
import type { KeyPair } from '@gatehouse/wireguard';

import { Engine } from '../src/engine.ts';
import type { EngineEvent } from '../src/engine-events.ts';
import type { EnginePeerStatus } from '../src/engine-status.ts';
import { ROUTE_MISS_HOLD_MS } from '../src/route-miss.ts';

const MTU = 1280;
const RELAY_HOST = '10.0.0.9';
const RELAY_PORT = 7000;
const RELAY = parseEndpoint(`${RELAY_HOST}:${RELAY_PORT}`);
/** Stands in for the DNS stub's proxy range on the left side. */
const WATCHED_RANGE = '10.9.0.0/30';

interface Side {
  keys: KeyPair;
  tun: MemoryTunQueues;
  sockets: MemoryUdpSocket[];
  engine: Engine;
  written: Uint8Array[];
  events: EngineEvent[];
}

/**
 * Forwards datagrams between the two sides through one socket, as a
 * network would, and lets a test duplicate or re-mark them on the way.
 */
class Relay {
  readonly #socket: MemoryUdpSocket;
  readonly #batch = new DatagramBatch(64, 2048);
  readonly #timer: NodeJS.Timeout;
  /** Ports of the right side every datagram from the left goes to. */
  rightPorts = [51820];
  outerTos = 0;
  lastLeftTransport: Uint8Array | undefined;

  /** Datagrams forwarded either way. */
  forwarded = 0;

  constructor(network: MemoryUdpNetwork, port = RELAY_PORT) {
    this.#socket = network.bind(RELAY_HOST, port);
    this.#timer = setInterval(() => this.pump(), 1);
  }

  pump(): void {
    const batch = this.#batch;
    for (
      let count = this.#socket.receiveBatch(batch);
      count > 0;
      count = this.#socket.receiveBatch(batch)
    ) {
      for (let slot = 0; slot < count; slot++) {
        const fromLeft = batch.addresses[slot * 16 + 3] === 1;
        const offset = batch.offsets[slot]!;
        if (fromLeft && batch.data[offset] === 4) {
          this.lastLeftTransport = batch.data.slice(offset, offset + batch.lengths[slot]!);
        }
        batch.addresses.set(fromLeft ? [10, 0, 0, 2] : [10, 0, 0, 1], slot * 16);
        batch.tos[slot] = fromLeft ? this.outerTos : 0;
        this.forwarded++;
        for (const port of fromLeft ? this.rightPorts : [51820]) {
          batch.ports[slot] = port;
          this.#send(batch, slot);
        }
      }
    }
  }

  /** Sends a datagram to the right side's first socket as if it came from the left. */
  inject(datagram: Uint8Array): void {
    const batch = new DatagramBatch(1, 2048);
    batch.setEndpoint(0, {
      family: 4,
      address: Uint8Array.of(10, 0, 0, 2),
      port: this.rightPorts[0]!,
    });
    batch.data.set(datagram);
    batch.lengths[0] = datagram.length;
    this.#socket.sendBatch(batch, 1);
  }

  #send(batch: DatagramBatch, slot: number): void {
    const one = new DatagramBatch(1, 2048);
    one.copyEndpoint(0, batch, slot);
    one.tos[0] = batch.tos[slot]!;
    const offset = batch.offsets[slot]!;
    one.data.set(batch.data.subarray(offset, offset + batch.lengths[slot]!));
    one.lengths[0] = batch.lengths[slot]!;
    this.#socket.sendBatch(one, 1);
  }

  close(): void {
    clearInterval(this.#timer);
    this.#socket.close();
  }
}

function ipv4Udp(source: string, destination: string, payload: Uint8Array, ecn = 0): Uint8Array {
  const packet = new Uint8Array(28 + payload.length);
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
  view.setUint16(24, 8 + payload.length);
  packet.set(payload, 28);
  return packet;
}

function numbered(source: string, destination: string, n: number, ecn = 0): Uint8Array {
  const payload = new Uint8Array(64);
  new DataView(payload.buffer).setUint32(0, n);
  return ipv4Udp(source, destination, payload, ecn);
}

async function until(what: string, condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

async function startSide(
  network: MemoryUdpNetwork,
  last: number,
  keys: KeyPair,
  remote: KeyPair,
  queues: number,
  peer: { allowedIps: string[]; endpoint?: Endpoint },
  watchedRanges: string[] = [],
  mtu = MTU,
): Promise<Side> {
  const tun = new MemoryTunQueues({ queues, mtu });
  const sockets = Array.from({ length: queues }, (_, queue) =>
    network.bind(`10.0.0.${last}`, 51820 + queue),
  );
  const events: EngineEvent[] = [];
  const engine = await Engine.startWithMemoryDevices(
    {
      interfaceName: `side${last}`,
      privateKey: keys.privateKey,
      mtu,
      watchedRanges,
      onEvent: (event) => events.push(event),
    },
    [{ publicKey: remote.publicKey, ...peer }],
    { tun, network, sockets },
  );
  return { keys, tun, sockets, engine, written: [], events };
}

function collect(side: Side): Uint8Array[] {
  for (const { packet } of side.tun.takeWritten()) side.written.push(packet);
  return side.written;
}

function peerStatus(side: Side): EnginePeerStatus {
  return side.engine.status().peers[0]!;
}

void describe('two engines over in-memory TUN queues and UDP, data in worker threads', () => {
  let network: MemoryUdpNetwork;
  let relay: Relay;
  let left: Side;
  let right: Side;

  async function startPair(
    rightQueues = 1,
    leftMtu = MTU,
    handshakeTimeoutMs = 5000,
  ): Promise<void> {
    network = new MemoryUdpNetwork({ maxSockets: 8, queueDepth: 1024 });
    relay = new Relay(network);
    const leftKeys = generateKeyPair();
    const rightKeys = generateKeyPair();
    left = await startSide(
      network,
      1,
      leftKeys,
      rightKeys,
      1,
      { allowedIps: ['10.9.0.2/32'], endpoint: RELAY },
      [WATCHED_RANGE],
      leftMtu,
    );
    right = await startSide(network, 2, rightKeys, leftKeys, rightQueues, {
      allowedIps: ['10.9.0.1/32'],
    });
    await until(
      'both handshakes',
      () => peerStatus(left).lastHandshake !== null && peerStatus(right).lastHandshake !== null,
      handshakeTimeoutMs,
    );
  }

  afterEach(async () => {
    await Promise.all([left?.engine.stop(), right?.engine.stop()]);
    relay?.close();
  });

  void it('tells when an address of a watched range last carried a packet, either way', async () => {
    await startPair();
    assert.equal(left.engine.idleMs('10.9.0.2'), Infinity);
    left.tun.inject(numbered('10.9.0.1', '10.9.0.2', 0));
    await until('the packet on the right', () => collect(right).length >= 1);
    assert.ok(left.engine.idleMs('10.9.0.2') < 1000, `${left.engine.idleMs('10.9.0.2')} ms`);
    assert.equal(left.engine.idleMs('10.9.0.1'), Infinity, 'a source going out is not stamped');
    assert.equal(right.engine.idleMs('10.9.0.2'), Infinity, 'nothing watched on the right');
    right.tun.inject(numbered('10.9.0.3', '10.9.0.1', 1));
    right.tun.inject(numbered('10.9.0.2', '10.9.0.1', 2));
    await until('a packet on the left', () => collect(left).length >= 1);
    assert.equal(left.engine.idleMs('10.9.0.3'), Infinity, 'refused source: no stamp');
  });

  void it('survives a handshake message whose handling throws: counted, and the retry completes', async () => {
    const handleScreenedHandshake = WireGuardDevice.prototype.handleScreenedHandshake;
    let calls = 0;
    WireGuardDevice.prototype.handleScreenedHandshake = function (this: WireGuardDevice, ...args) {
      if (calls++ === 0) throw new Error('injected fault');
      return handleScreenedHandshake.apply(this, args);
    };
    try {
      // The left side's first initiation is lost to the fault; its retransmission, REKEY_TIMEOUT later, succeeds.
      await startPair(1, MTU, 10_000);
    } finally {
      WireGuardDevice.prototype.handleScreenedHandshake = handleScreenedHandshake;
    }
    assert.equal(right.engine.status().unattributedDrops['handshake-handler-error'], 1);
    left.tun.inject(numbered('10.9.0.1', '10.9.0.2', 0));
    await until('the packet on the right', () => collect(right).length >= 1);
  });

  void it('handshakes at start and carries data both ways, with per-peer counters', async () => {
    await startPair();
    assert.equal(peerStatus(right).publicKey, encodeKey(left.keys.publicKey));
    assert.equal(peerStatus(right).endpoint, `${RELAY_HOST}:${RELAY_PORT}`);
    for (let n = 0; n < 100; n++) left.tun.inject(numbered('10.9.0.1', '10.9.0.2', n));
    await until('100 packets on the right', () => collect(right).length >= 100);
    for (let n = 0; n < 50; n++) right.tun.inject(numbered('10.9.0.2', '10.9.0.1', n));
    await until('50 packets on the left', () => collect(left).length >= 50);
    assert.deepEqual(
      right.written.map((packet) => new DataView(packet.buffer).getUint32(28)),
      Array.from({ length: 100 }, (_, n) => n),
    );
    assert.deepEqual(right.written[0], numbered('10.9.0.1', '10.9.0.2', 0));
    const leftPeer = peerStatus(left);
    assert.ok(leftPeer.txPackets >= 100, `tx packets ${leftPeer.txPackets}`);
    assert.ok(leftPeer.rxPackets >= 50, `rx packets ${leftPeer.rxPackets}`);
    assert.ok(leftPeer.txBytes > 100 * 92);
    assert.ok(Math.abs(leftPeer.lastHandshake! - Date.now()) < 10_000);
    assert.equal(left.engine.status().noRoute, 0);
  });

  void it('drops and counts an inner source outside the peer’s AllowedIPs', async () => {
    await startPair();
    left.tun.inject(numbered('10.9.0.77', '10.9.0.2', 1));
    left.tun.inject(numbered('10.9.0.1', '10.9.0.2', 2));
    await until('the allowed packet', () => collect(right).length >= 1);
    await until('the drop', () => peerStatus(right).drops['source-not-allowed'] === 1);
    assert.equal(right.written.length, 1);
    assert.equal(new DataView(right.written[0]!.buffer).getUint32(28), 2);
  });

  void it('counts and reports what it drops without a peer: no route, short, unknown-type and truncated datagrams', async () => {
    await startPair();
    left.tun.inject(numbered('10.9.0.1', '10.9.0.99', 1));
    relay.inject(Uint8Array.of(4, 0, 0));
    relay.inject(Uint8Array.of(4, 0, 0, 0, ...new Uint8Array(27)));
    relay.inject(Uint8Array.of(4, 0, 1, 0, ...new Uint8Array(60)));
    relay.inject(Uint8Array.of(9, 0, 0, 0, ...new Uint8Array(60)));
    await until('the no-route drop', () => left.engine.status().noRoute === 1);
    await until('four drops', () => {
      const drops = right.engine.status().unattributedDrops;
      return drops.malformed + drops['unknown-type'] === 4;
    });
    const drops = right.engine.status().unattributedDrops;
    assert.equal(
      drops.malformed,
      2,
      'shorter than a type; a transport message without room for its tag',
    );
    assert.equal(drops['unknown-type'], 2, 'a non-zero reserved byte makes the type unknown');
  });

  void it('counts a decrypted packet the TUN queue refuses (longer than its MTU)', async () => {
    await startPair(1, 1420);
    left.tun.inject(ipv4Udp('10.9.0.1', '10.9.0.2', new Uint8Array(1300 - 28)));
    left.tun.inject(numbered('10.9.0.1', '10.9.0.2', 2));
    await until('the small packet', () => collect(right).length >= 1);
    await until(
      'the refused write',
      () => right.engine.status().unattributedDrops['tun-write-rejected'] === 1,
    );
    assert.equal(right.engine.status().unattributedDrops['tun-full'], 0);
  });

  void it('counts a handshake the control thread could not send', async () => {
    network = new MemoryUdpNetwork({ maxSockets: 8, queueDepth: 1024 });
    relay = new Relay(network);
    left = await startSide(network, 1, generateKeyPair(), generateKeyPair(), 1, {
      allowedIps: ['10.9.0.2/32'],
      endpoint: parseEndpoint('10.0.0.77:9'),
    });
    await until(
      'the failed send',
      () => left.engine.status().unattributedDrops['udp-send-failed'] >= 1,
    );
  });

  void it('drops and counts a replayed datagram', async () => {
    await startPair();
    left.tun.inject(numbered('10.9.0.1', '10.9.0.2', 1));
    await until('the packet', () => collect(right).length >= 1);
    relay.inject(relay.lastLeftTransport!);
    await until('the replay drop', () => peerStatus(right).drops.replay === 1);
    await sleep(20);
    assert.equal(collect(right).length, 1);
  });

  void it('copies a CE mark from the outer header to the inner packet (RFC 6040)', async () => {
    await startPair();
    relay.outerTos = 3;
    left.tun.inject(numbered('10.9.0.1', '10.9.0.2', 1, 1));
    left.tun.inject(numbered('10.9.0.1', '10.9.0.2', 2, 0));
    await until('the ECT packet', () => collect(right).length >= 1);
    await until('the not-ECT drop', () => peerStatus(right).drops['ecn-not-ect'] === 1);
    assert.equal(right.written[0]![1]! & 3, 3);
  });

  void it('two workers receiving every datagram of one keypair accept each counter once', async () => {
    await startPair(2);
    relay.rightPorts = [51820, 51821];
    const count = 2000;
    // In chunks: the relay's socket queue would otherwise overflow, as a real network's would.
    for (let chunk = 0; chunk < count; chunk += 100) {
      for (let n = chunk; n < chunk + 100; n++)
        left.tun.inject(numbered('10.9.0.1', '10.9.0.2', n));
      await until(`${chunk + 100} packets`, () => collect(right).length >= chunk + 100);
    }
    await until(`${count} replay drops`, () => peerStatus(right).drops.replay >= count, 20_000);
    await sleep(50);
    const seen = right.written.map((packet) => new DataView(packet.buffer).getUint32(28));
    assert.equal(seen.length, count);
    assert.equal(new Set(seen).size, count);
    assert.equal(peerStatus(right).drops.replay, count);
  });

  void it('stop() completes within a second under load', async () => {
    await startPair();
    for (let n = 0; n < 1000; n++) left.tun.inject(numbered('10.9.0.1', '10.9.0.2', n));
    const started = performance.now();
    await Promise.all([left.engine.stop(), right.engine.stop()]);
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 1000, `stop took ${elapsed.toFixed(0)} ms`);
  });

  void it('setPeers replaces a peer’s AllowedIPs without a new handshake', async () => {
    await startPair();
    const before = peerStatus(right).lastHandshake;
    right.engine.setPeers([{ publicKey: left.keys.publicKey, allowedIps: ['10.9.0.0/24'] }]);
    // Workers adopt the new table asynchronously: send until one gets through.
    let sent = 0;
    await until('the newly allowed packet', () => {
      if (sent++ % 25 === 0) left.tun.inject(numbered('10.9.0.77', '10.9.0.2', 1));
      return collect(right).length >= 1;
    });
    assert.equal(peerStatus(right).lastHandshake, before);
    assert.deepEqual(peerStatus(right).allowedIps, ['10.9.0.0/24']);
  });

  void it('setPeers moves an endpoint and a keepalive under a live session, and AllowedIPs on the other side', async () => {
    await startPair();
    const before = { left: peerStatus(left).lastHandshake, right: peerStatus(right).lastHandshake };
    const moved = new Relay(network, RELAY_PORT + 1);
    try {
      left.engine.setPeers([
        {
          publicKey: right.keys.publicKey,
          allowedIps: ['10.9.0.2/32'],
          endpoint: parseEndpoint(`${RELAY_HOST}:${RELAY_PORT + 1}`),
          persistentKeepaliveSeconds: 25,
        },
      ]);
      right.engine.setPeers([{ publicKey: left.keys.publicKey, allowedIps: ['10.9.0.0/24'] }]);
      assert.equal(peerStatus(left).endpoint, `${RELAY_HOST}:${RELAY_PORT + 1}`);
      assert.equal(peerStatus(left).persistentKeepalive, 25);
      let sent = 0;
      await until('a newly allowed packet through the new endpoint', () => {
        if (sent++ % 25 === 0) left.tun.inject(numbered('10.9.0.77', '10.9.0.2', 1));
        return collect(right).length >= 1;
      });
      right.tun.inject(numbered('10.9.0.2', '10.9.0.1', 2));
      await until('the answer on the left', () => collect(left).length >= 1);
      assert.ok(moved.forwarded >= 2, `the new endpoint forwarded ${moved.forwarded}`);
      assert.equal(peerStatus(right).endpoint, `${RELAY_HOST}:${RELAY_PORT + 1}`, 'roamed');
      assert.deepEqual(
        { left: peerStatus(left).lastHandshake, right: peerStatus(right).lastHandshake },
        before,
        'no new handshake on either side',
      );
    } finally {
      moved.close();
    }
  });

  void it('counts STUN datagrams on the tunnel’s socket as unclaimed, not as handshakes', async () => {
    await startPair();
    const stun = new Uint8Array(20);
    new DataView(stun.buffer).setUint32(0, 0x0101_0000);
    new DataView(stun.buffer).setUint32(4, 0x2112a442);
    relay.inject(stun);
    await until('the unclaimed STUN datagram', () => {
      return right.engine.status().unattributedDrops['relay-unclaimed'] === 1;
    });
    const drops = right.engine.status().unattributedDrops;
    assert.equal(drops['unknown-type'] + drops.malformed + drops['bad-mac1'], 0);
  });

  void it('reports handshakes as events', async () => {
    await startPair();
    await until('the left side’s event', () =>
      left.events.some((event) => event.type === 'handshake-completed'),
    );
    assert.deepEqual(
      left.events.find((event) => event.type === 'handshake-completed'),
      { type: 'handshake-completed', peer: encodeKey(right.keys.publicKey) },
    );
  });

  void it('holds packets to an address no peer covers, reports it once, and sends them once a peer covers it', async () => {
    await startPair();
    for (let n = 0; n < 6; n++) left.tun.inject(numbered('10.9.0.1', '10.9.7.7', n));
    await until(
      'the overflow beyond four held packets',
      () => left.engine.status().unattributedDrops['route-miss-overflow'] === 2,
    );
    await until('the route miss', () => left.events.some((e) => e.type === 'route-miss'));
    await sleep(20);
    assert.deepEqual(
      left.events.filter((event) => event.type === 'route-miss'),
      [{ type: 'route-miss', destination: '10.9.7.7', family: 4 }],
      'one event, not one per packet',
    );
    assert.equal(left.engine.status().noRoute, 6);
    assert.equal(collect(right).length, 0);
    left.engine.setPeers([
      {
        publicKey: right.keys.publicKey,
        allowedIps: ['10.9.0.2/32', '10.9.7.0/24'],
        endpoint: RELAY,
      },
    ]);
    await until('the held packets on the right', () => collect(right).length >= 4);
    await sleep(20);
    assert.deepEqual(
      collect(right).map((packet) => new DataView(packet.buffer).getUint32(28)),
      [0, 1, 2, 3],
    );
    assert.equal(left.engine.status().unattributedDrops['route-miss-expired'], 0);
  });

  void it('drops and counts what a peer’s policy denies and delivers what it allows', async () => {
    await startPair();
    right.engine.setPeers([
      {
        publicKey: left.keys.publicKey,
        allowedIps: ['10.9.0.1/32'],
        policy: [
          { destination: '10.9.0.2/32', protocol: 'udp', ports: [{ from: 2000, to: 2000 }] },
        ],
      },
    ]);
    const toPort = (port: number, n: number): Uint8Array => {
      const packet = numbered('10.9.0.1', '10.9.0.2', n);
      new DataView(packet.buffer).setUint16(22, port);
      return packet;
    };
    // Workers adopt the new tables asynchronously: send until one is denied.
    let sent = 0;
    await until('a denied packet', () => {
      if (sent++ % 25 === 0) left.tun.inject(toPort(2001, 1));
      return peerStatus(right).drops['policy-denied'] >= 1;
    });
    collect(right).length = 0;
    const denied = peerStatus(right).drops['policy-denied'];
    left.tun.inject(toPort(2001, 2));
    left.tun.inject(toPort(2000, 3));
    await until('the allowed packet', () => collect(right).length >= 1);
    await until('the second denial', () => peerStatus(right).drops['policy-denied'] === denied + 1);
    await sleep(20);
    assert.deepEqual(
      collect(right).map((packet) => new DataView(packet.buffer).getUint32(28)),
      [3],
    );
    assert.equal(peerStatus(left).drops['policy-denied'], 0, 'the client side has no policy');
  });

  void it('drops and counts held route-miss packets once the hold time runs out', async () => {
    await startPair();
    left.tun.inject(numbered('10.9.0.1', '10.9.7.8', 0));
    left.tun.inject(numbered('10.9.0.1', '10.9.7.8', 1));
    await until('the route miss', () => left.events.some((e) => e.type === 'route-miss'));
    // Workers sweep about once a second.
    await until(
      'both held packets expired',
      () => left.engine.status().unattributedDrops['route-miss-expired'] === 2,
      ROUTE_MISS_HOLD_MS + 5000,
    );
    left.engine.setPeers([
      {
        publicKey: right.keys.publicKey,
        allowedIps: ['10.9.0.2/32', '10.9.7.0/24'],
        endpoint: RELAY,
      },
    ]);
    left.tun.inject(numbered('10.9.0.1', '10.9.7.8', 2));
    await until('the packet sent after the change', () => collect(right).length >= 1);
    await sleep(20);
    assert.deepEqual(
      collect(right).map((packet) => new DataView(packet.buffer).getUint32(28)),
      [2],
      'nothing expired is sent',
    );
  });

  void it('setPeers refuses a bad peer before changing anything', async () => {
    await startPair();
    const before = peerStatus(left);
    const good = { publicKey: right.keys.publicKey, allowedIps: ['10.9.0.2/32'], endpoint: RELAY };
    assert.throws(
      () =>
        left.engine.setPeers([
          { publicKey: generateKeyPair().publicKey, allowedIps: ['10.9.9.0/24'] },
          { ...good, persistentKeepaliveSeconds: 70_000 },
        ]),
      /persistentKeepaliveSeconds must be an integer 0-65535/,
    );
    assert.deepEqual(left.engine.status().peers, [before], 'no peer added, none changed');
    assert.throws(
      () =>
        left.engine.setPeers([
          { ...good, endpoint: { family: 4, address: new Uint8Array(3), port: 1 } },
        ]),
      /endpoint must be an IP address/,
    );
    assert.throws(
      () =>
        left.engine.setPeers([
          {
            ...good,
            policy: [{ destination: '10.9.0.2', protocol: 'icmp', ports: [{ from: 1, to: 1 }] }],
          },
        ]),
      /policy ports need tcp or udp/,
    );
    assert.deepEqual(left.engine.status().peers, [before]);
    left.tun.inject(numbered('10.9.0.1', '10.9.0.2', 1));
    await until('a packet on the right', () => collect(right).length >= 1);
  });
});
