/**
 * Two Gatehouse engines in two namespaces joined by a veth pair that
 * carries IPv6 only between them: each peer's endpoint is an IPv6 address
 * (wg-quick `Endpoint = [fd00:210::2]:51821`), so handshakes, keepalives
 * and data all go through the engines' IPv6 sockets. Checked: ping and a
 * checksummed TCP transfer through the tunnel, and both peers' endpoints
 * in the status as IPv6.
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
const MTU = 1400;
const SIDES = [
  { underlay: 'fd00:210::1', tunnel: '10.213.0.1', port: 51830 },
  { underlay: 'fd00:210::2', tunnel: '10.213.0.2', port: 51831 },
] as const;

interface RunningEngine {
  process: NamespaceProcess;
  interfaceName: string;
  ready: Promise<void>;
  /** The next JSON line the engine prints after a `status` request. */
  status(): Promise<{ peers: { endpoint: string | null }[] }>;
}

function startEngine(
  network: TestNetwork,
  namespace: string,
  index: 0 | 1,
  keys: KeyPair,
  remote: KeyPair,
  queues: number,
): RunningEngine {
  const side = SIDES[index];
  const other = SIDES[1 - index]!;
  const interfaceName = `gh6${process.pid % 100000}${index}`;
  const config = {
    interfaceName,
    privateKey: encodeKey(keys.privateKey),
    listenPort: side.port,
    mtu: MTU,
    queues,
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
  const waiting: ((line: string) => void)[] = [];
  const lines = createInterface({ input: started.child.stdout! });
  let readyResolve: () => void = () => {};
  const ready = new Promise<void>((resolve, reject) => {
    readyResolve = resolve;
    void started.exited.then(() =>
      reject(new Error(`engine exited before it was ready: ${started.output()}`)),
    );
  });
  lines.on('line', (line) => {
    if (line.includes('"ready"')) readyResolve();
    else if (line.includes('"peers"')) waiting.shift()?.(line);
  });
  return {
    process: started,
    interfaceName,
    ready,
    status: () =>
      new Promise((resolve) => {
        waiting.push((line) => resolve(JSON.parse(line) as { peers: { endpoint: string }[] }));
        started.child.stdin!.write('status\n');
      }),
  };
}

async function runPair(queues: number): Promise<void> {
  await withTestNetwork('engine6', async (network) => {
    const namespaces = [await network.addNamespace(), await network.addNamespace()] as const;
    // The veth carries IPv6 only; its IPv4 address is a link-local placeholder nobody routes to.
    await network.addVethPair(
      { namespace: namespaces[0], name: 'veth0', address: '169.254.213.1/30' },
      { namespace: namespaces[1], name: 'veth0', address: '169.254.213.2/30' },
    );
    for (const index of [0, 1] as const) {
      await network.exec(namespaces[index], [
        'ip',
        '-6',
        'addr',
        'add',
        `${SIDES[index].underlay}/64`,
        'dev',
        'veth0',
        'nodad',
      ]);
    }
    const keys = [generateKeyPair(), generateKeyPair()] as const;
    const engines = ([0, 1] as const).map((index) =>
      startEngine(network, namespaces[index], index, keys[index], keys[1 - index]!, queues),
    );
    await Promise.all(engines.map((engine) => engine.ready));
    for (const engine of engines) {
      assert.match(engine.process.output(), /IPv4\+IPv6/, engine.process.output());
    }
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
      bytes: 4 * 1024 * 1024,
      timeoutMs: 30_000,
    });
    assert.equal(transfer.received.bytes, transfer.sent.bytes);
    assert.equal(transfer.received.sha256, transfer.sent.sha256);

    for (const index of [0, 1] as const) {
      const status = await engines[index]!.status();
      const other = SIDES[1 - index]!;
      assert.equal(status.peers[0]?.endpoint, `[${other.underlay}]:${other.port}`);
    }
    for (const engine of engines) {
      assert.doesNotMatch(engine.process.output(), /no IPv6 socket/, engine.process.output());
    }

    await Promise.all(engines.map((engine) => engine.process.stop(3000)));
  });
}

void describe('two engines over an IPv6 underlay', () => {
  for (const queues of [2, 1]) {
    void it(`ping and a 4 MiB TCP transfer with IPv6 endpoints (${queues} queue(s))`, async (t) => {
      const skip = systemTestSkipReason(['ip', 'ping']);
      if (skip !== undefined) return skipLoudly(t, skip);
      await runPair(queues);
    });
  }
});
