/**
 * TUN throughput per queue count: `npm run bench:tun` (root).
 *
 * Runs itself inside a network namespace it creates and deletes. The device
 * gets 10.77.0.1/24 and the namespace forwards IPv4, so every packet we
 * write from 10.77.0.3 to 10.77.0.2 (64 UDP flows, 1280-byte packets) is
 * routed straight back into the device and read again: each configuration
 * measures writes and reads at once, for a few seconds. The baseline is one
 * queue driven by one thread with no workers: write 64, read until dry.
 * The last line is `tun: queues=<n> read_kpps=<x> write_kpps=<y>` for the
 * best configuration.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { addressOf, libc } from '../src/libc.ts';
import { EAGAIN } from '../src/linux-constants.ts';
import { closeFds, openTunDevice } from '../src/open-device.ts';
import { PacketBatch, TUN_BATCH_SIZE, openTun } from '../src/index.ts';
import { fixIpv4HeaderChecksum, fixTransportChecksum } from '../src/packet/index.ts';

const SECONDS = 3;
const FLOWS = 64;
const PACKET_LENGTH = 1280;
const INSIDE = '--inside-namespace';

if (!process.argv.includes(INSIDE)) {
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

function packets(): Uint8Array[] {
  return Array.from({ length: FLOWS }, (_, flow) => {
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
    return packet;
  });
}

function bringUp(name: string): void {
  execFileSync('ip', ['addr', 'add', '10.77.0.1/24', 'dev', name]);
  execFileSync('ip', ['link', 'set', name, 'up']);
}

interface Rate {
  readKpps: number;
  writeKpps: number;
}

async function measureDevice(queues: number, workerBatchSize: number): Promise<Rate> {
  const device = await openTun({
    name: `ghb${process.pid % 10000}q${queues}`,
    queues,
    workerBatchSize,
  });
  bringUp(device.name);
  const flows = packets();
  const batch = new PacketBatch();
  let flow = 0;
  const until = performance.now() + SECONDS * 1000;
  while (performance.now() < until) {
    // Keep every tx ring full, take whatever was read, and let the event loop breathe.
    for (let i = 0; i < 4 * TUN_BATCH_SIZE; i++) {
      const packet = flows[flow]!;
      if (!device.send(packet, 0, packet.length)) break;
      flow = (flow + 1) % FLOWS;
    }
    while (device.receive(batch) > 0);
    device.release(batch);
    await Promise.race([device.readable(), new Promise((resolve) => setImmediate(resolve))]);
  }
  const stats = device.stats();
  await device.close();
  const sum = (field: 'rxPackets' | 'txPackets') =>
    stats.queues.reduce((total, queue) => total + queue[field], 0);
  return {
    readKpps: sum('rxPackets') / SECONDS / 1000,
    writeKpps: sum('txPackets') / SECONDS / 1000,
  };
}

function measureSingleThread(): Rate {
  const name = `ghb${process.pid % 10000}st`;
  const device = openTunDevice({ name, queues: 1, mtu: 1280, txQueueLength: 5000, offload: false });
  bringUp(name);
  const c = libc();
  const fd = device.fds[0]!;
  const flows = packets();
  const memory = new Uint8Array(new SharedArrayBuffer(FLOWS * PACKET_LENGTH + 65536));
  flows.forEach((packet, i) => memory.set(packet, i * PACKET_LENGTH));
  const base = addressOf(memory.buffer);
  const readAt = base + FLOWS * PACKET_LENGTH;
  let read = 0;
  let written = 0;
  let flow = 0;
  const until = performance.now() + SECONDS * 1000;
  while (performance.now() < until) {
    for (let i = 0; i < TUN_BATCH_SIZE; i++) {
      if (c.write(fd, base + flow * PACKET_LENGTH, PACKET_LENGTH) > 0) written++;
      flow = (flow + 1) % FLOWS;
    }
    for (;;) {
      if (c.read(fd, readAt, 65536) >= 0) read++;
      else if (c.errno() === EAGAIN) break;
    }
  }
  closeFds(device.fds);
  return { readKpps: read / SECONDS / 1000, writeKpps: written / SECONDS / 1000 };
}

async function inside(): Promise<void> {
  const format = (rate: Rate) =>
    `read ${rate.readKpps.toFixed(0).padStart(5)} kpps  write ${rate.writeKpps.toFixed(0).padStart(5)} kpps`;
  const baseline = measureSingleThread();
  console.log(`baseline  1 queue, 1 thread, no workers:   ${format(baseline)}`);
  let best = { queues: 1, rate: baseline };
  for (const queues of [1, 2, 4]) {
    const rate = await measureDevice(queues, TUN_BATCH_SIZE);
    console.log(`device    ${queues} queue(s), batch ${TUN_BATCH_SIZE}:         ${format(rate)}`);
    if (rate.readKpps + rate.writeKpps > best.rate.readKpps + best.rate.writeKpps)
      best = { queues, rate };
  }
  for (const batchSize of [16, 256]) {
    const rate = await measureDevice(2, batchSize);
    console.log(
      `device    2 queue(s), batch ${String(batchSize).padEnd(3)}:        ${format(rate)}`,
    );
  }
  console.log(
    `tun: queues=${best.queues} read_kpps=${best.rate.readKpps.toFixed(0)} write_kpps=${best.rate.writeKpps.toFixed(0)}`,
  );
  process.exit(0);
}
