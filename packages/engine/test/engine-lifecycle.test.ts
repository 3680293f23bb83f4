import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Worker } from 'node:worker_threads';

import { parseEndpoint } from '@gatehouse/addresses';
import { MemoryTunQueues } from '@gatehouse/tun';
import { MemoryUdpNetwork } from '@gatehouse/udp';
import { generateKeyPair } from '@gatehouse/wireguard';

import { Engine } from '../src/engine.ts';

const MTU = 1280;

async function until(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** A 32-byte IPv4 packet from `source` to `destination` carrying `n`. */
function ipv4Packet(source: string, destination: string, n: number): Uint8Array {
  const packet = new Uint8Array(32);
  const view = new DataView(packet.buffer);
  packet[0] = 0x45;
  view.setUint16(2, packet.length);
  packet[8] = 64;
  packet[9] = 253;
  packet.set(source.split('.').map(Number), 12);
  packet.set(destination.split('.').map(Number), 16);
  view.setUint32(28, n);
  return packet;
}

interface Pair {
  left: Engine;
  right: Engine;
  leftTun: MemoryTunQueues;
  rightTun: MemoryTunQueues;
  /** Every data worker the left engine started, in order. */
  leftWorkers: Worker[];
  failures: Error[];
}

void describe('engine lifecycle', () => {
  const engines: Engine[] = [];
  afterEach(async () => {
    await Promise.all(engines.splice(0).map((engine) => engine.stop()));
  });

  async function startPair(
    leftQueues = 1,
    observeLeft: (queue: number, worker: Worker) => void = () => {},
  ): Promise<Pair> {
    const network = new MemoryUdpNetwork({ maxSockets: 1 + leftQueues, queueDepth: 256 });
    const leftKeys = generateKeyPair();
    const rightKeys = generateKeyPair();
    const leftTun = new MemoryTunQueues({ queues: leftQueues, mtu: MTU });
    const rightTun = new MemoryTunQueues({ queues: 1, mtu: MTU });
    const leftWorkers: Worker[] = [];
    const failures: Error[] = [];
    const right = await Engine.startWithMemoryDevices(
      { interfaceName: 'right0', privateKey: rightKeys.privateKey, mtu: MTU },
      [{ publicKey: leftKeys.publicKey, allowedIps: ['10.7.0.1/32'] }],
      { tun: rightTun, network, sockets: [network.bind('10.0.0.2', 51820)] },
    );
    engines.push(right);
    const left = await Engine.startWithMemoryDevices(
      {
        interfaceName: 'left0',
        privateKey: leftKeys.privateKey,
        mtu: MTU,
        onFailed: (error) => failures.push(error),
      },
      [
        {
          publicKey: rightKeys.publicKey,
          allowedIps: ['10.7.0.2/32'],
          endpoint: parseEndpoint('10.0.0.2:51820'),
        },
      ],
      {
        tun: leftTun,
        network,
        sockets: Array.from({ length: leftQueues }, (_, queue) =>
          network.bind('10.0.0.1', 51820 + queue),
        ),
        observeWorker: (queue, worker) => {
          leftWorkers.push(worker);
          observeLeft(queue, worker);
        },
      },
    );
    engines.push(left);
    return { left, right, leftTun, rightTun, leftWorkers, failures };
  }

  /** Sends packet `n` left to right until it arrives (the first may wait for the handshake). */
  async function carries(pair: Pair, n: number): Promise<void> {
    const packet = ipv4Packet('10.7.0.1', '10.7.0.2', n);
    const deadline = performance.now() + 10_000;
    for (;;) {
      pair.leftTun.inject(packet);
      await sleep(20);
      const written = pair.rightTun.takeWritten();
      if (
        written.some((w) => new DataView(w.packet.buffer, w.packet.byteOffset).getUint32(28) === n)
      ) {
        return;
      }
      if (performance.now() > deadline) throw new Error(`packet ${n} never arrived`);
    }
  }

  void it('restarts a data worker that died, and traffic flows again', async () => {
    const pair = await startPair();
    await carries(pair, 1);
    assert.equal(pair.leftWorkers.length, 1);

    await pair.leftWorkers[0]!.terminate();
    await until('a new worker', () => pair.leftWorkers.length === 2);
    await carries(pair, 2);

    const status = pair.left.status();
    assert.equal(status.workerRestarts, 1);
    assert.equal(status.failure, null);
    assert.deepEqual(pair.failures, []);
  });

  /** An observer that ends the first `count` workers to report ready, each before the next can be ready. */
  function killFirstReady(count: number): {
    observe: (queue: number, worker: Worker) => void;
    killed: number[];
  } {
    const killed: number[] = [];
    const observe = (queue: number, worker: Worker): void => {
      worker.prependListener('message', (message: { ready?: true }) => {
        if (killed.length === count || message.ready !== true) return;
        killed.push(queue);
        void worker.terminate();
        // Holding this thread lets the exit land first: the other workers need it to load their modules.
        const holdUntil = performance.now() + 200;
        while (performance.now() < holdUntil);
      });
    };
    return { observe, killed };
  }

  void it('restarts a worker that became ready and died while another was still starting', async () => {
    const queues = 3;
    const { observe, killed } = killFirstReady(1);
    const pair = await startPair(queues, observe);
    assert.equal(killed.length, 1);
    await until('the dead worker restarted', () => pair.leftWorkers.length === queues + 1);
    await carries(pair, 1);

    const status = pair.left.status();
    assert.equal(status.workerRestarts, 1);
    assert.equal(status.failure, null);
    assert.deepEqual(pair.failures, []);
  });

  void it('fails the engine with an error after the 4th death within a minute', async () => {
    const pair = await startPair();
    await carries(pair, 1);
    for (let death = 1; death <= 4; death++) {
      const worker = pair.leftWorkers.at(-1)!;
      await worker.terminate();
      if (death < 4) await until(`restart ${death}`, () => pair.leftWorkers.length === death + 1);
    }
    await until('the failure', () => pair.failures.length === 1);

    const status = pair.left.status();
    assert.equal(status.workerRestarts, 3);
    assert.match(status.failure ?? '', /data worker 0 died 4 times within 60 s/);
    assert.equal(pair.failures[0]!.message, status.failure);
    assert.equal(pair.leftWorkers.length, 4, 'no fifth worker');
  });

  void it("leaves the caller's private key alone: a failed start and a stop keep it, and it starts again", async () => {
    const network = new MemoryUdpNetwork({ maxSockets: 4, queueDepth: 64 });
    const keys = generateKeyPair();
    const kept = new Uint8Array(keys.privateKey);
    const options = { interfaceName: 'key0', privateKey: keys.privateKey, mtu: MTU };
    const peers = [{ publicKey: generateKeyPair().publicKey, allowedIps: ['10.1.0.0/24'] }];
    const devices = (address: string, queues = 1) => ({
      tun: new MemoryTunQueues({ queues, mtu: MTU }),
      network,
      sockets: [network.bind(address, 1)],
    });

    await assert.rejects(
      Engine.startWithMemoryDevices(options, peers, devices('10.0.0.1', 2)),
      /one socket per TUN queue/,
    );
    assert.deepEqual(keys.privateKey, kept, 'kept by the failed start');

    const first = await Engine.startWithMemoryDevices(options, peers, devices('10.0.0.2'));
    await first.stop();
    assert.deepEqual(keys.privateKey, kept, 'kept by stop');

    const again = await Engine.startWithMemoryDevices(options, peers, devices('10.0.0.3'));
    engines.push(again);
    assert.equal(again.status().failure, null);
  });
});
