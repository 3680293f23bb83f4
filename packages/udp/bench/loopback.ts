/**
 * Loopback throughput of LinuxUdpSocket: a worker sends 1280-byte datagrams
 * in batches of 64 for a few seconds while this thread receives them.
 * Usage: npx node packages/udp/bench/loopback.ts [--gso] [--gro] [seconds]
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

import { parseEndpoint } from '@gatehouse/addresses';
import { DatagramBatch, LinuxUdpSocket, MAX_DATAGRAM_BYTES } from '../src/index.ts';
import type { SharedLinuxUdpSocket } from '../src/index.ts';

const DATAGRAM_BYTES = 1280;

if (isMainThread) {
  const gso = process.argv.includes('--gso');
  const gro = process.argv.includes('--gro');
  const seconds = Number(process.argv.find((argument) => /^\d+(\.\d+)?$/.test(argument)) ?? 3);
  const receiver = LinuxUdpSocket.open({ family: 4, address: '127.0.0.1', gro, gso: false });
  const sender = LinuxUdpSocket.open({ family: 4, address: '127.0.0.1', gso, gro: false });
  const worker = new Worker(new URL(import.meta.url), {
    workerData: { sender: sender.share(), port: receiver.localPort, seconds },
  });
  const batch = new DatagramBatch(64, gro ? MAX_DATAGRAM_BYTES : 2048);
  let datagrams = 0;
  let calls = 0;
  let senderDone = false;
  let sent = 0;
  worker.on('message', (count: number) => {
    senderDone = true;
    sent = count;
  });
  await new Promise((resolve) => setTimeout(resolve, 100));
  const started = performance.now();
  while (!senderDone) {
    const count = receiver.receiveBatch(batch);
    if (count === 0) {
      receiver.waitReadable(10);
      await new Promise((resolve) => setImmediate(resolve));
      continue;
    }
    calls++;
    for (let slot = 0; slot < count; slot++) {
      const segment = batch.segmentSizes[slot] || batch.lengths[slot]!;
      datagrams += Math.ceil(batch.lengths[slot]! / segment);
    }
    if (calls % 64 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  const elapsed = (performance.now() - started) / 1000;
  console.log(
    `gso=${gso} gro=${gro}: sent ${(sent / seconds / 1e6).toFixed(2)} Mpps, received ${(datagrams / elapsed / 1e6).toFixed(2)} Mpps` +
      ` (${((datagrams * DATAGRAM_BYTES * 8) / elapsed / 1e9).toFixed(2)} Gbit/s payload, ${(datagrams / calls).toFixed(1)} datagrams per recvmmsg)`,
  );
  await worker.terminate();
  receiver.close();
  sender.close();
} else {
  const {
    sender: shared,
    port,
    seconds,
  } = workerData as { sender: SharedLinuxUdpSocket; port: number; seconds: number };
  const sender = LinuxUdpSocket.adopt(shared);
  const batch = new DatagramBatch(64, 2048);
  const destination = parseEndpoint(`127.0.0.1:${port}`);
  for (let slot = 0; slot < 64; slot++) {
    batch.lengths[slot] = DATAGRAM_BYTES;
    batch.setEndpoint(slot, destination);
  }
  let sent = 0;
  const deadline = performance.now() + seconds * 1000;
  while (performance.now() < deadline) sent += sender.sendBatch(batch, 64);
  parentPort!.postMessage(sent);
}
