/**
 * Two engines over in-memory TUN queues and UDP, one data worker each:
 * PACKETS packets of PACKET_BYTES from the left TUN to the right one, and
 * the rate the right side writes them at. Measures the data path (seal,
 * UDP batch, open, checks) without the kernel.
 *
 *   node packages/engine/bench/two-engines.ts
 */
import { setTimeout as sleep } from 'node:timers/promises';

import { parseEndpoint } from '@gatehouse/addresses';
import { MemoryTunQueues } from '@gatehouse/tun';
import { MemoryUdpNetwork } from '@gatehouse/udp';
import { generateKeyPair } from '@gatehouse/wireguard';

import { Engine } from '../src/engine.ts';

const PACKETS = 40_000;
const PACKET_BYTES = 1200;
const MTU = 1280;
const TIMEOUT_MS = 60_000;
/** Packets injected ahead of those received: within the memory rings, so none overflow. */
const IN_FLIGHT = 512;
/** No packet for this long: the rest were lost (said in the result). */
const STALL_MS = 500;

const network = new MemoryUdpNetwork({ maxSockets: 4, queueDepth: 4096 });
const keys = [generateKeyPair(), generateKeyPair()] as const;
const tuns = [
  new MemoryTunQueues({ queues: 1, mtu: MTU, slots: 1024 }),
  new MemoryTunQueues({ queues: 1, mtu: MTU, slots: 1024 }),
];
const engines = await Promise.all(
  ([0, 1] as const).map((side) =>
    Engine.startWithMemoryDevices(
      { interfaceName: `bench${side}`, privateKey: keys[side].privateKey, mtu: MTU },
      [
        {
          publicKey: keys[1 - side]!.publicKey,
          allowedIps: [`10.9.0.${2 - side}/32`],
          endpoint: parseEndpoint(`10.0.0.${2 - side}:51820`),
        },
      ],
      { tun: tuns[side]!, network, sockets: [network.bind(`10.0.0.${side + 1}`, 51820)] },
    ),
  ),
);

try {
  const packet = ipv4Udp(PACKET_BYTES);
  const [left, right] = tuns as [MemoryTunQueues, MemoryTunQueues];
  const deadline = performance.now() + TIMEOUT_MS;
  while (right.takeWritten().length === 0) {
    if (performance.now() > deadline) throw new Error('no handshake');
    left.inject(packet);
    await sleep(5);
  }
  let injected = 0;
  let received = 0;
  const started = performance.now();
  let lastProgress = started;
  while (received < PACKETS && performance.now() < deadline) {
    while (injected < PACKETS && injected - received < IN_FLIGHT && left.inject(packet) !== false) {
      injected++;
    }
    const taken = right.takeWritten().length;
    received += taken;
    const now = performance.now();
    if (taken > 0) lastProgress = now;
    else if (now - lastProgress > STALL_MS) break;
    await sleep(0);
  }
  const seconds = (lastProgress - started) / 1000;
  const lost = PACKETS - received;
  console.log(
    `${received} of ${PACKETS} packets of ${PACKET_BYTES} bytes in ${seconds.toFixed(2)} s: ` +
      `${(received / seconds / 1000).toFixed(1)} kpps, ` +
      `${((received * PACKET_BYTES * 8) / seconds / 1e6).toFixed(0)} Mbit/s` +
      (lost > 0 ? ` (${lost} not delivered)` : ''),
  );
} finally {
  await Promise.all(engines.map((engine) => engine.stop()));
}

function ipv4Udp(length: number): Uint8Array {
  const packet = new Uint8Array(length);
  const view = new DataView(packet.buffer);
  packet[0] = 0x45;
  view.setUint16(2, length);
  packet[8] = 64;
  packet[9] = 17;
  packet.set([10, 9, 0, 1], 12);
  packet.set([10, 9, 0, 2], 16);
  let sum = 0;
  for (let index = 0; index < 20; index += 2) sum += view.getUint16(index);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  view.setUint16(10, ~sum & 0xffff);
  view.setUint16(20, 1000);
  view.setUint16(22, 2000);
  view.setUint16(24, length - 20);
  return packet;
}
