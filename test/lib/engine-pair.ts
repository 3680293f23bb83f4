/**
 * Two Gatehouse engines, each in its own process (packages/engine's
 * test/engine-process.ts) in its own namespace, peered with each other, with
 * their tunnel addresses up; and the traffic checks run through them.
 */
import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';

import { encodeKey, generateKeyPair } from '@gatehouse/wireguard';

import type { NamespaceProcess, TestNetwork } from './netns.ts';
import { describePing, ping } from './ping.ts';
import { transferOverTcp } from './tcp-transfer.ts';

const ENGINE_PROCESS = new URL('../../packages/engine/test/engine-process.ts', import.meta.url)
  .pathname;

export interface EngineSide {
  /** The underlay address the other side uses as this side's endpoint. */
  underlay: string;
  /** The tunnel address, a /24 on the TUN device. */
  tunnel: string;
  port: number;
}

export interface RunningEngine {
  process: NamespaceProcess;
  interfaceName: string;
  /** The next status line the engine prints after a `status` request. */
  status(): Promise<{ peers: { endpoint: string | null }[] }>;
}

/** Starts both engines, waits until they are ready, then adds the tunnel addresses and brings the links up. */
export async function startEnginePair(
  network: TestNetwork,
  namespaces: readonly [string, string],
  sides: readonly [EngineSide, EngineSide],
  options: { interfacePrefix: string; mtu: number; queues: number; offloads?: boolean },
): Promise<[RunningEngine, RunningEngine]> {
  const keys = [generateKeyPair(), generateKeyPair()] as const;
  const engines = ([0, 1] as const).map((index) => {
    const side = sides[index];
    const other = sides[1 - index]!;
    return startEngine(network, namespaces[index], {
      interfaceName: `${options.interfacePrefix}${process.pid % 100000}${index}`,
      privateKey: encodeKey(keys[index].privateKey),
      listenPort: side.port,
      mtu: options.mtu,
      queues: options.queues,
      ...(options.offloads === undefined ? {} : { offloads: options.offloads }),
      peers: [
        {
          publicKey: encodeKey(keys[1 - index]!.publicKey),
          endpoint: { address: other.underlay, port: other.port },
          allowedIps: [`${other.tunnel}/32`],
        },
      ],
    });
  });
  const running = (await Promise.all(engines)) as [RunningEngine, RunningEngine];
  for (const index of [0, 1] as const) {
    const name = running[index].interfaceName;
    await network.exec(namespaces[index], [
      'ip',
      'addr',
      'add',
      `${sides[index].tunnel}/24`,
      'dev',
      name,
    ]);
    await network.exec(namespaces[index], ['ip', 'link', 'set', name, 'up']);
  }
  return running;
}

/** The kernel's ping (at least 4 of 5 answered) and a checksummed TCP transfer from the first namespace to `address`. */
export async function checkPingAndTransfer(
  network: TestNetwork,
  namespaces: readonly [string, string],
  address: string,
  bytes: number,
): Promise<void> {
  const pinged = await ping(network, namespaces[0], address, {
    count: 5,
    intervalSeconds: 0.2,
    deadlineSeconds: 10,
  });
  assert.ok(pinged.received >= 4, describePing(pinged));

  const transfer = await transferOverTcp(network, {
    senderNamespace: namespaces[0],
    receiverNamespace: namespaces[1],
    address,
    port: 5201,
    bytes,
    timeoutMs: 30_000,
  });
  assert.equal(transfer.received.bytes, transfer.sent.bytes);
  assert.equal(transfer.received.sha256, transfer.sent.sha256);
}

async function startEngine(
  network: TestNetwork,
  namespace: string,
  config: { interfaceName: string } & Record<string, unknown>,
): Promise<RunningEngine> {
  const started = network.spawn(namespace, [
    process.execPath,
    ENGINE_PROCESS,
    JSON.stringify(config),
  ]);
  const waiting: ((line: string) => void)[] = [];
  const lines = createInterface({ input: started.child.stdout! });
  const ready = new Promise<void>((resolve, reject) => {
    lines.on('line', (line) => {
      if (line.includes('"ready"')) resolve();
      else if (line.includes('"peers"')) waiting.shift()?.(line);
    });
    void started.exited.then(() =>
      reject(new Error(`engine exited before it was ready: ${started.output()}`)),
    );
  });
  await ready;
  return {
    process: started,
    interfaceName: config.interfaceName,
    status: () =>
      new Promise((resolve) => {
        waiting.push((line) => resolve(JSON.parse(line) as { peers: { endpoint: string }[] }));
        started.child.stdin!.write('status\n');
      }),
  };
}
