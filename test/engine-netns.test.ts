/**
 * Two Gatehouse engines, each in its own process in its own namespace,
 * joined by a veth pair: the kernel's ping and a checksummed TCP transfer
 * through the tunnel, with offloads on and off.
 */
import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';

import { encodeKey, generateKeyPair } from '@gatehouse/wireguard';
import type { KeyPair } from '@gatehouse/wireguard';

import { systemTestSkipReason, skipLoudly, withTestNetwork } from './lib/netns.ts';
import type { NamespaceProcess, TestNetwork } from './lib/netns.ts';
import { describePing, ping } from './lib/ping.ts';
import { transferOverTcp } from './lib/tcp-transfer.ts';

const ENGINE_PROCESS = new URL('../packages/engine/test/engine-process.ts', import.meta.url)
  .pathname;
const MTU = 1420;
const SIDES = [
  { underlay: '10.210.0.1', tunnel: '10.211.0.1', port: 51820 },
  { underlay: '10.210.0.2', tunnel: '10.211.0.2', port: 51821 },
] as const;

function startEngine(
  network: TestNetwork,
  namespace: string,
  index: 0 | 1,
  keys: KeyPair,
  remote: KeyPair,
  settings: { queues: number; offloads: boolean },
): { process: NamespaceProcess; interfaceName: string; ready: Promise<void> } {
  const side = SIDES[index];
  const other = SIDES[1 - index]!;
  const interfaceName = `ghe${process.pid % 100000}${index}`;
  const config = {
    interfaceName,
    privateKey: encodeKey(keys.privateKey),
    listenPort: side.port,
    mtu: MTU,
    ...settings,
    peers: [
      {
        publicKey: encodeKey(remote.publicKey),
        endpoint: { address: other.underlay, port: other.port },
        allowedIps: [`${other.tunnel}/32`],
      },
    ],
  };
  const started = network.spawn(namespace, [
    process.execPath,
    ENGINE_PROCESS,
    JSON.stringify(config),
  ]);
  const ready = new Promise<void>((resolve, reject) => {
    const lines = createInterface({ input: started.child.stdout! });
    lines.on('line', (line) => {
      if (line.includes('"ready"')) resolve();
    });
    void started.exited.then(() =>
      reject(new Error(`engine exited before it was ready: ${started.output()}`)),
    );
  });
  return { process: started, interfaceName, ready };
}

async function runPair(settings: { queues: number; offloads: boolean }): Promise<void> {
  await withTestNetwork('engine', async (network) => {
    const namespaces = [await network.addNamespace(), await network.addNamespace()] as const;
    await network.addVethPair(
      { namespace: namespaces[0], name: 'veth0', address: `${SIDES[0].underlay}/24` },
      { namespace: namespaces[1], name: 'veth0', address: `${SIDES[1].underlay}/24` },
    );
    const keys = [generateKeyPair(), generateKeyPair()] as const;
    const engines = ([0, 1] as const).map((index) =>
      startEngine(network, namespaces[index], index, keys[index], keys[1 - index]!, settings),
    );
    await Promise.all(engines.map((engine) => engine.ready));
    for (const index of [0, 1] as const) {
      const name = engines[index]!.interfaceName;
      await network.exec(namespaces[index], [
        'ip',
        'addr',
        'add',
        `${SIDES[index].tunnel}/24`,
        'dev',
        name,
      ]);
      await network.exec(namespaces[index], ['ip', 'link', 'set', name, 'up']);
    }

    const pinged = await ping(network, namespaces[0], SIDES[1].tunnel, {
      count: 5,
      intervalSeconds: 0.2,
      deadlineSeconds: 10,
    });
    assert.ok(pinged.received >= 4, describePing(pinged));

    const transfer = await transferOverTcp(network, {
      senderNamespace: namespaces[0],
      receiverNamespace: namespaces[1],
      address: SIDES[1].tunnel,
      port: 5201,
      bytes: 8 * 1024 * 1024,
      timeoutMs: 30_000,
    });
    assert.equal(transfer.received.bytes, transfer.sent.bytes);
    assert.equal(transfer.received.sha256, transfer.sent.sha256);

    const started = performance.now();
    await Promise.all(engines.map((engine) => engine.process.stop(3000)));
    assert.ok(performance.now() - started < 3000, 'both engines stopped on SIGTERM');
  });
}

void describe('two engines in two namespaces', () => {
  for (const settings of [
    { queues: 2, offloads: true },
    { queues: 1, offloads: false },
  ]) {
    void it(`ping and an 8 MiB TCP transfer (${settings.queues} queue(s), offloads ${settings.offloads ? 'on' : 'off'})`, async (t) => {
      const skip = systemTestSkipReason(['ip', 'ping']);
      if (skip !== undefined) return skipLoudly(t, skip);
      await runPair(settings);
    });
  }
});
