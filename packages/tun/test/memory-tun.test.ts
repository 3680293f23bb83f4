import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryTun, PacketBatch } from '../src/index.ts';

/** An IPv4 UDP packet; flow = source port, payload = a 32-bit sequence number. */
function udp(sourcePort: number, sequence: number, payloadLength = 8): Uint8Array {
  const packet = new Uint8Array(28 + payloadLength);
  const view = new DataView(packet.buffer);
  packet[0] = 0x45;
  view.setUint16(2, packet.length);
  packet[9] = 17;
  packet.set([10, 0, 0, 1], 12);
  packet.set([10, 0, 0, 2], 16);
  view.setUint16(20, sourcePort);
  view.setUint16(22, 53);
  view.setUint32(28, sequence);
  return packet;
}

function sequenceOf(bytes: Uint8Array, at = 0): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(at + 28);
}

function portOf(bytes: Uint8Array, at = 0): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getUint16(at + 20);
}

void test('injected packets come out of receive() in batches, in place, until released', () => {
  const tun = new MemoryTun({ queues: 1, ringSlots: 4 });
  for (let i = 0; i < 4; i++) assert.equal(tun.inject(udp(1000, i)), true);
  assert.equal(tun.inject(udp(1000, 4)), false, 'every slot is held');
  assert.equal(tun.injectDropped, 1);
  const batch = new PacketBatch(3);
  assert.equal(tun.receive(batch), 3);
  assert.deepEqual(
    [0, 1, 2].map((i) => sequenceOf(batch.buffers[i]!, batch.offsets[i]!)),
    [0, 1, 2],
  );
  assert.equal(batch.lengths[0], 36);
  assert.equal(tun.inject(udp(1000, 5)), false, 'received but unreleased slots stay taken');
  assert.equal(tun.receive(batch), 1, 'receive() releases the previous contents first');
  assert.equal(sequenceOf(batch.buffers[0]!, batch.offsets[0]!), 3);
  assert.equal(tun.inject(udp(1000, 6)), true);
  tun.release(batch);
  assert.equal(batch.count, 0);
});

void test('a flow keeps one queue both ways and its packets leave in order', () => {
  const tun = new MemoryTun({ queues: 4 });
  const batch = new PacketBatch();
  for (let port = 1000; port < 1032; port++) tun.inject(udp(port, 0));
  const readQueue = new Map<number, number>();
  while (tun.receive(batch) > 0) {
    for (let i = 0; i < batch.count; i++) {
      readQueue.set(portOf(batch.buffers[i]!, batch.offsets[i]!), batch.queues[i]!);
    }
  }
  assert.ok(new Set(readQueue.values()).size > 1, 'flows spread over queues');
  const mismatched = [...readQueue].filter(([port, queue]) => {
    const packet = udp(port, 0);
    return tun.queueOf(packet, 0, packet.length) !== queue;
  });
  assert.deepEqual(mismatched, [], 'writes go where the kernel read each flow from');
  const written: Uint8Array[] = [];
  for (let sequence = 1; sequence <= 50; sequence++) {
    for (let port = 1000; port < 1032; port++) {
      const packet = udp(port, sequence);
      assert.equal(tun.queueOf(packet, 0, packet.length), readQueue.get(port));
      assert.equal(tun.send(packet, 0, packet.length), true);
    }
    if (sequence % 5 === 0) written.push(...tun.takeWritten());
  }
  const last = new Map<number, number>();
  let inversions = 0;
  for (const packet of written) {
    const port = portOf(packet);
    if (sequenceOf(packet) <= (last.get(port) ?? 0)) inversions++;
    last.set(port, sequenceOf(packet));
  }
  assert.equal(written.length, 32 * 50);
  assert.equal(inversions, 0);
});

void test('a full queue refuses send(), writable() resolves once there is room, nothing is lost', async () => {
  const tun = new MemoryTun({ queues: 1, ringSlots: 2 });
  assert.equal(tun.send(udp(7, 1), 0, 36), true);
  assert.equal(tun.send(udp(7, 2), 0, 36), true);
  assert.equal(tun.send(udp(7, 3), 0, 36), false);
  assert.equal(tun.stats().sendRefused, 1);
  let ready = false;
  const waiting = tun.writable().then(() => (ready = true));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(ready, false, 'still full');
  assert.deepEqual(
    tun.takeWritten().map((p) => sequenceOf(p)),
    [1, 2],
  );
  await waiting;
  assert.equal(tun.send(udp(7, 3), 0, 36), true);
  assert.deepEqual(
    tun.takeWritten().map((p) => sequenceOf(p)),
    [3],
  );
});

void test('sendBatch stops at the first refusal and says how many it took', () => {
  const tun = new MemoryTun({ queues: 1, ringSlots: 4 });
  const batch = new PacketBatch(6);
  for (let i = 0; i < 6; i++) batch.push(udp(9, i), 0, 36);
  assert.equal(tun.sendBatch(batch, 0), 4);
  tun.takeWritten();
  assert.equal(tun.sendBatch(batch, 4), 2);
  assert.deepEqual(
    tun.takeWritten().map((p) => sequenceOf(p)),
    [4, 5],
  );
});

void test('packets over the MTU are dropped by policy and counted', () => {
  const tun = new MemoryTun({ queues: 1, mtu: 100 });
  const big = udp(1, 1, 200);
  assert.equal(tun.send(big, 0, big.length), true);
  assert.equal(tun.stats().sendOversize, 1);
  assert.equal(tun.takeWritten().length, 0);
});

void test('readable() waits for a packet, and close() releases waiters', async () => {
  const tun = new MemoryTun();
  let woke = false;
  const waiting = tun.readable().then(() => (woke = true));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(woke, false);
  tun.inject(udp(5, 1));
  await waiting;
  const batch = new PacketBatch();
  assert.equal(tun.receive(batch), 1);
  tun.release(batch);
  const closing = tun.readable();
  await tun.close();
  await closing;
  assert.equal(tun.closed, true);
  assert.throws(() => tun.send(udp(5, 2), 0, 36), /closed/);
});
