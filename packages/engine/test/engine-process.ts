/**
 * One Engine in its own process, for namespace tests and hand measurements:
 * `node engine-process.ts '<json config>'`. Prints `{"ready":…}` once up,
 * answers a `status` line on stdin with the status as one JSON line, and
 * stops the engine on SIGTERM or when stdin closes.
 *
 * Config: { interfaceName, privateKey, listenPort, mtu, queues?, offloads?,
 * fwmark?, peers: [{ publicKey, endpoint?, allowedIps, persistentKeepaliveSeconds? }] },
 * keys in base64.
 */
import { createInterface } from 'node:readline';

import { parseAddress } from '@gatehouse/addresses';
import { createServiceLogger } from '@gatehouse/logging';
import { decodeKey } from '@gatehouse/wireguard';

import { Engine } from '../src/engine.ts';
import type { EngineOptions } from '../src/engine.ts';

interface ProcessConfig extends Omit<EngineOptions, 'privateKey' | 'log'> {
  privateKey: string;
  peers: {
    publicKey: string;
    endpoint?: { address: string; port: number };
    allowedIps: string[];
    persistentKeepaliveSeconds?: number;
  }[];
}

const config = JSON.parse(process.argv[2] ?? '{}') as ProcessConfig;
const engine = await Engine.start(
  {
    ...config,
    privateKey: decodeKey(config.privateKey),
    logger: createServiceLogger({ name: 'engine-process', debug: true }),
  },
  config.peers.map(({ endpoint, ...peer }) => ({
    ...peer,
    publicKey: decodeKey(peer.publicKey),
    ...(endpoint === undefined
      ? {}
      : { endpoint: { ...parseAddress(endpoint.address), port: endpoint.port } }),
  })),
);
console.log(JSON.stringify({ ready: true, listenPort: engine.listenPort }));

let stopping = false;
const stop = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  await engine.stop();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (line.trim() === 'status') console.log(JSON.stringify(engine.status()));
});
lines.on('close', () => void stop());
