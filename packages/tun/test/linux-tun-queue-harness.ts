/**
 * Test-only: the kernel side of a real TUN device for the contract cases,
 * inside the network namespace this process runs in (never run it
 * elsewhere: it puts 10.77.0.1/24 on the device, so 10.77.0.2 is routed
 * into it). Flows are kernel UDP sockets bound to LOCAL:port.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import { setTimeout as sleep } from 'node:timers/promises';

import { TunQueue, closeTunQueueFds, openTunQueues, readTunKernelDrops } from '../src/index.ts';
import type {
  Delivered,
  HarnessOptions,
  OpenHarness,
  TunQueueHarness,
} from './tun-queue-contract.ts';
import { FIRST_PORT, LOCAL, PEER, PEER_PORT } from './tun-queue-contract.ts';

let opened = 0;

/** What only the real device has: names and offload negotiation. */
export const LINUX_ONLY: Record<string, (offload: boolean) => Promise<void>> = {
  'opening a name that exists fails clearly instead of joining the device': (offload) => {
    const name = `ght${process.pid % 100000}x${opened++}`;
    const first = openTunQueues({ name, queues: 2, mtu: 1280, offload });
    try {
      assert.throws(
        () => openTunQueues({ name, queues: 2, mtu: 1280, offload }),
        /an interface named .* already exists; refusing to attach to it/,
      );
    } finally {
      closeTunQueueFds(first.fds);
    }
    return Promise.resolve();
  },
  'the offloads asked for are what the kernel accepted': (offload) => {
    const device = openTunQueues({
      name: `ght${process.pid % 100000}x${opened++}`,
      queues: 1,
      mtu: 1280,
      offload,
    });
    try {
      assert.equal(device.offloads.virtioHeader, offload);
      assert.equal(device.offloads.checksum, offload, 'this kernel offers TUN_F_CSUM');
      if (!offload) assert.deepEqual(Object.values(device.offloads), Array(6).fill(false));
    } finally {
      closeTunQueueFds(device.fds);
    }
    return Promise.resolve();
  },
};

export function linuxHarness(offload: boolean): OpenHarness {
  return (options) => openLinux(options, offload);
}

async function openLinux(options: HarnessOptions, offload: boolean): Promise<TunQueueHarness> {
  const device = openTunQueues({
    name: `ght${process.pid % 100000}x${opened++}`,
    queues: options.queues,
    mtu: options.mtu,
    offload,
    ...(options.backlog === undefined ? {} : { txQueueLength: options.backlog }),
  });
  const queues = device.fds.map((fd) => new TunQueue(fd, device.mtu, device.offloads));
  const sockets: dgram.Socket[] = [];
  const delivered: Delivered[] = [];
  const close = (): Promise<void> => {
    for (const socket of sockets) socket.close();
    for (const queue of queues) queue.close();
    return Promise.resolve();
  };
  try {
    execFileSync('ip', ['addr', 'add', `${LOCAL}/24`, 'dev', device.name]);
    execFileSync('ip', ['link', 'set', device.name, 'up']);
    if (options.linkMtu !== undefined) {
      execFileSync('ip', ['link', 'set', device.name, 'mtu', String(options.linkMtu)]);
    }
    for (let flow = 0; flow < options.flows; flow++) {
      const socket = dgram.createSocket('udp4');
      sockets.push(socket);
      const port = FIRST_PORT + flow;
      await new Promise<void>((resolve) => socket.bind(port, LOCAL, resolve));
      socket.on('message', (message) => delivered.push({ port, payload: new Uint8Array(message) }));
    }
  } catch (error) {
    await close();
    throw error;
  }
  return {
    queues,
    async send(flow, payloads) {
      let refused = 0;
      for (const payload of payloads) {
        await new Promise<void>((resolve) =>
          sockets[flow]!.send(payload, PEER_PORT, PEER, (error) => {
            if (error) refused++;
            resolve();
          }),
        );
      }
      return refused;
    },
    async delivered(expected) {
      const deadline = Date.now() + 3000;
      while (delivered.length < expected && Date.now() < deadline) await sleep(5);
      // Anything beyond `expected` would have arrived with it.
      await sleep(50);
      return [...delivered];
    },
    kernelReadDrops: () => readTunKernelDrops(device.name)?.txDropped ?? NaN,
    close,
  };
}
