/**
 * TUN throughput of the product's API (`openTunQueues` + `TunQueue`) per
 * queue count: `npm run bench:tun` (root).
 *
 * Runs itself inside a network namespace it creates and deletes. The device
 * gets 10.77.0.1/24 and the namespace forwards IPv4, so every packet a
 * queue writes from 10.77.0.3 to 10.77.0.2 (1280-byte UDP packets, 64 flows
 * shared out among the queues) is routed straight back into the device —
 * to the queue that wrote its flow — and read again: each configuration
 * measures writes and reads at once, for a few seconds. Each queue's owner
 * writes a batch, then reads until nothing waits, as a data worker does:
 * on this thread for the first configuration, else one worker thread per
 * queue. The last line is `tun: queues=<n> read_kpps=<x> write_kpps=<y>`
 * for the best configuration.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

import {
  TUN_BATCH_SIZE,
  TunQueue,
  closeTunQueueFds,
  fixIpv4HeaderChecksum,
  fixTransportChecksum,
  openTunQueues,
} from '../src/index.ts';
import type { TunOffloads } from '../src/index.ts';

const SECONDS = 3;
const FLOWS = 64;
const MTU = 1280;
const PACKET_LENGTH = 1280;
const INSIDE = '--inside-namespace';

interface Rate {
  readKpps: number;
  writeKpps: number;
}

interface OwnerSetup {
  readonly fd: number;
  readonly offloads: TunOffloads;
  readonly queue: number;
  readonly queues: number;
  readonly batch: number;
}

interface Moved {
  read: number;
  written: number;
}

if (!isMainThread) {
  parentPort!.postMessage(ownQueue(workerData as OwnerSetup));
} else if (!process.argv.includes(INSIDE)) {
  if (process.getuid?.() !== 0) {
    console.error('bench:tun needs root (creates a network namespace and TUN devices)');
    process.exit(1);
  }
  const namespace = `gh-tun-bench-${process.pid}`;
  execFileSync('ip', ['netns', 'add', namespace]);
  try {
    execFileSync('ip', ['netns', 'exec', namespace, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const run = spawnSync(
      'ip',
      ['netns', 'exec', namespace, process.execPath, fileURLToPath(import.meta.url), INSIDE],
      { stdio: 'inherit', timeout: 300_000 },
    );
    process.exitCode = run.status ?? 1;
  } finally {
    execFileSync('ip', ['netns', 'delete', namespace]);
  }
} else {
  await inside();
}

/** The flows of one queue: flow f belongs to queue f % queues. */
function packets(queue: number, queues: number): Uint8Array[] {
  const flows: Uint8Array[] = [];
  for (let flow = queue; flow < FLOWS; flow += queues) {
    const packet = new Uint8Array(PACKET_LENGTH);
    const view = new DataView(packet.buffer);
    packet[0] = 0x45;
    view.setUint16(2, PACKET_LENGTH);
    packet[8] = 64;
    packet[9] = 17;
    packet.set([10, 77, 0, 3], 12);
    packet.set([10, 77, 0, 2], 16);
    fixIpv4HeaderChecksum(packet, 0, 20);
    view.setUint16(20, 10000 + flow);
    view.setUint16(22, 9000);
    view.setUint16(24, PACKET_LENGTH - 20);
    fixTransportChecksum(packet, 0, 20, PACKET_LENGTH - 20, 17);
    flows.push(packet);
  }
  return flows;
}

/** One queue's owner for SECONDS: write a batch of its flows, then read until nothing waits. */
function ownQueue(setup: OwnerSetup): Moved {
  const io = new TunQueue(setup.fd, MTU, setup.offloads);
  const flows = packets(setup.queue, setup.queues);
  const { batch } = setup;
  const writeSlots = Array.from({ length: batch }, () => new Uint8Array(io.writeRoom + 64));
  const writeOffsets = new Int32Array(batch).fill(32);
  const writeLengths = new Int32Array(batch).fill(PACKET_LENGTH);
  const readCount = Math.max(batch, io.readBudget);
  const readSlots = new Uint8Array(readCount * (MTU + 64));
  const readPackets = new Array<Uint8Array>(readCount).fill(readSlots);
  const readOffsets = Int32Array.from({ length: readCount }, (_, i) => i * (MTU + 64) + 32);
  const readLengths = new Int32Array(readCount);
  const moved: Moved = { read: 0, written: 0 };
  let flow = 0;
  const until = performance.now() + SECONDS * 1000;
  while (performance.now() < until) {
    for (let i = 0; i < batch; i++) {
      writeSlots[i]!.set(flows[flow]!, 32);
      flow = (flow + 1) % flows.length;
    }
    moved.written += io.write(writeSlots, writeOffsets, writeLengths, batch);
    for (;;) {
      const n = io.read(readPackets, readOffsets, readLengths, readCount);
      if (n === 0) break;
      moved.read += n;
    }
  }
  return moved;
}

function bringUp(name: string): void {
  execFileSync('ip', ['addr', 'add', '10.77.0.1/24', 'dev', name]);
  execFileSync('ip', ['link', 'set', name, 'up']);
}

async function measure(queues: number, batch: number, threads: 'this' | 'workers'): Promise<Rate> {
  const device = openTunQueues({
    name: `ghb${process.pid % 10000}q${queues}`,
    queues,
    mtu: MTU,
    offload: false,
  });
  try {
    bringUp(device.name);
    const setups = device.fds.map((fd, queue): OwnerSetup => ({
      fd,
      offloads: device.offloads,
      queue,
      queues,
      batch,
    }));
    const results =
      threads === 'this'
        ? setups.map(ownQueue)
        : await Promise.all(
            setups.map(async (setup) => {
              const worker = new Worker(new URL(import.meta.url), { workerData: setup });
              const [result] = (await Promise.race([
                new Promise((resolve) => worker.once('message', (m) => resolve([m]))),
                new Promise((_, reject) => worker.once('error', reject)),
              ])) as [Moved];
              await worker.terminate();
              return result;
            }),
          );
    const sum = (field: keyof Moved) => results.reduce((total, moved) => total + moved[field], 0);
    return { readKpps: sum('read') / SECONDS / 1000, writeKpps: sum('written') / SECONDS / 1000 };
  } finally {
    closeTunQueueFds(device.fds);
  }
}

async function inside(): Promise<void> {
  const format = (label: string, rate: Rate) =>
    `${label.padEnd(40)} read ${rate.readKpps.toFixed(0).padStart(5)} kpps  write ${rate.writeKpps.toFixed(0).padStart(5)} kpps`;
  const baseline = await measure(1, TUN_BATCH_SIZE, 'this');
  console.log(format(`1 queue on this thread, batch ${TUN_BATCH_SIZE}:`, baseline));
  let best = { queues: 1, rate: baseline };
  for (const queues of [1, 2, 4]) {
    const rate = await measure(queues, TUN_BATCH_SIZE, 'workers');
    console.log(format(`${queues} queue(s), a worker each, batch ${TUN_BATCH_SIZE}:`, rate));
    if (rate.readKpps + rate.writeKpps > best.rate.readKpps + best.rate.writeKpps)
      best = { queues, rate };
  }
  for (const batch of [16, 256]) {
    const rate = await measure(2, batch, 'workers');
    console.log(format(`2 queue(s), a worker each, batch ${batch}:`, rate));
  }
  console.log(
    `tun: queues=${best.queues} read_kpps=${best.rate.readKpps.toFixed(0)} write_kpps=${best.rate.writeKpps.toFixed(0)}`,
  );
}
