/**
 * Single-thread throughput of two engines over the in-memory TUN and UDP
 * fakes: 1280-byte packets client → gateway, one data path each.
 * Usage: npx node packages/engine/bench/fake-pair.ts [packets]
 */
import { MemoryTun } from '@gatehouse/tun';
import { MemoryUdpNetwork, parseEndpoint } from '@gatehouse/udp';

import { selectCryptoProvider } from '../../wireguard/src/crypto/select.ts';
import { generateKeyPair } from '../../wireguard/src/keys.ts';
import type { KeyPair } from '../../wireguard/src/keys.ts';
import { createSharedTransportMemory } from '../../wireguard/src/worker-contract.ts';
import { AllowedIps, DataPath, DropCounters, HandshakeControl } from '../src/index.ts';

const total = Number(process.argv[2] ?? 200_000);
const selection = await selectCryptoProvider();
const network = new MemoryUdpNetwork({ queueDepth: 1024 });
const now = () => performance.now();

function engine(
  local: KeyPair,
  remote: KeyPair,
  bind: string,
  endpoint: string | undefined,
  allowed: string,
) {
  const [address, port] = bind.split(':') as [string, string];
  const udp = network.bind(address, Number(port));
  const tun = new MemoryTun({ queues: 1, ringSlots: 1024 });
  const transport = createSharedTransportMemory({ peers: 4 });
  const control = new HandshakeControl(local, selection.provider, transport, udp);
  const peer = control.addPeer({
    publicKey: remote.publicKey,
    ...(endpoint ? { endpoint: parseEndpoint(endpoint) } : {}),
  });
  const table = new AllowedIps();
  table.set(allowed, peer);
  const dataPath = new DataPath({
    transport,
    crypto: selection.provider,
    allowedIps: table.compile().shared,
    dropCounters: new DropCounters(transport.peerSlots).buffer,
    tun,
    udp,
    onHandshakeMessage: (datagram, source) =>
      control.handleHandshakeMessage(datagram, source, now()),
    now,
  });
  return { tun, control, dataPath };
}

const a = generateKeyPair();
const b = generateKeyPair();
const client = engine(a, b, '192.0.2.1:40000', '192.0.2.2:51820', '10.0.0.2/32');
const gateway = engine(b, a, '192.0.2.2:51820', undefined, '10.0.0.1/32');
const packet = new Uint8Array(1280);
packet[0] = 0x45;
new DataView(packet.buffer).setUint16(2, 1280);
packet[9] = 17;
packet.set([10, 0, 0, 1], 12);
packet.set([10, 0, 0, 2], 16);

const step = () => {
  for (const side of [client, gateway]) {
    side.control.service(now(), Date.now());
    side.dataPath.flushHeld();
    side.dataPath.outbound();
    side.dataPath.inbound();
  }
};
client.tun.inject(packet);
for (let round = 0; round < 50 && gateway.tun.takeWritten().length === 0; round++) step();

let delivered = 0;
const started = performance.now();
let injected = 0;
while (delivered < total) {
  for (let index = 0; index < 64 && injected < total; index++, injected++)
    client.tun.inject(packet);
  step();
  delivered += gateway.tun.takeWritten().length;
  if (performance.now() - started > 60_000) break;
}
const seconds = (performance.now() - started) / 1000;
console.log(
  `${selection.provider.name}: ${delivered} packets in ${seconds.toFixed(2)} s = ${(delivered / seconds / 1000).toFixed(0)} kpps,` +
    ` ${((delivered * 1280 * 8) / seconds / 1e9).toFixed(2)} Gbit/s (seal + open + both fakes on one thread)`,
);
