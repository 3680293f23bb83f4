/**
 * Test-only: the contract every `TunQueueIo` keeps, as cases run against
 * the Linux `TunQueue` (inside a network namespace, see netns-harness.ts)
 * and against `MemoryTunQueues`. A harness plays the kernel side: UDP
 * flows from LOCAL:port to PEER:PEER_PORT are routed into the device, and
 * packets the queues write from PEER back to LOCAL:port are delivered to
 * those ports only when their checksums are right, as the kernel does.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import { IpPacket } from '../src/packet/ip-packet.ts';
import { MemoryTunQueues, TUN_WRITE_HEADROOM } from '../src/index.ts';
import type { TunQueueIo } from '../src/index.ts';
import { ipv4Address, ipv4Packet, put32, udpDatagram, withChecksums } from './packet-builders.ts';

export const LOCAL = '10.77.0.1';
export const PEER = '10.77.0.2';
export const PEER_PORT = 9000;
export const FIRST_PORT = 40_000;
const WAIT_MS = 3000;

export interface HarnessOptions {
  readonly queues: number;
  readonly mtu: number;
  /** The kernel side's MTU (default `mtu`): above it, the interface's MTU was raised behind the owner's back. */
  readonly linkMtu?: number;
  /** Packets the kernel side holds for a queue nobody reads (txqueuelen; the fake's ring slots). */
  readonly backlog?: number;
  /** Flows: LOCAL ports FIRST_PORT, FIRST_PORT + 1, … */
  readonly flows: number;
}

export interface Delivered {
  readonly port: number;
  readonly payload: Uint8Array;
}

export interface TunQueueHarness {
  readonly queues: readonly TunQueueIo[];
  /** The kernel routes these datagrams of flow `flow` into the device, in order; resolves with how many it refused to send. */
  send(flow: number, payloads: readonly Uint8Array[]): Promise<number>;
  /** What the kernel delivered of the written packets so far, in order; waits until `expected` arrived or a few seconds passed. */
  delivered(expected: number): Promise<Delivered[]>;
  /** Packets the kernel side dropped because the queue was not read. */
  kernelReadDrops(): number;
  close(): Promise<void>;
}

export type OpenHarness = (options: HarnessOptions) => Promise<TunQueueHarness>;

/** A packet as read: its queue and a copy of its bytes. */
interface ReadPacket {
  readonly queue: number;
  readonly bytes: Uint8Array;
}

/** A datagram's payload: its sequence number, then filler. */
function payload(sequence: number, length = 16): Uint8Array {
  const bytes = new Uint8Array(length);
  put32(bytes, 0, sequence);
  bytes.fill(0xa5, 4);
  return bytes;
}

function sequenceOf(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0);
}

/** A packet from PEER:PEER_PORT to LOCAL:port with valid checksums. */
function replyPacket(flow: number, body: Uint8Array): Uint8Array {
  return withChecksums(
    ipv4Packet({
      source: PEER,
      destination: LOCAL,
      protocol: 17,
      payload: udpDatagram(PEER_PORT, FIRST_PORT + flow, body),
    }),
  );
}

/** The flow and payload of a UDP packet from one of our flows to PEER:PEER_PORT, else undefined. */
function ourDatagram(bytes: Uint8Array): { flow: number; payload: Uint8Array } | undefined {
  const view = new IpPacket();
  if (view.parse(bytes, 0, bytes.length, false) !== null || bytes[0]! >> 4 !== 4) return undefined;
  if (bytes[9] !== 17 || bytes[16] !== 10 || bytes[17] !== 77 || bytes[19] !== 2) return undefined;
  const udp = (bytes[0]! & 0x0f) * 4;
  const port = (bytes[udp]! << 8) | bytes[udp + 1]!;
  return { flow: port - FIRST_PORT, payload: bytes.subarray(udp + 8) };
}

/** Read slots: `count` views, alternating between separate buffers and one shared buffer, at odd offsets. */
class Slots {
  readonly packets: Uint8Array[] = [];
  readonly offsets: Int32Array;
  readonly lengths: Int32Array;
  readonly #room: number;

  constructor(count: number, room: number) {
    this.offsets = new Int32Array(count);
    this.lengths = new Int32Array(count);
    this.#room = room;
    const stride = room + 64;
    const shared = new Uint8Array(count * stride);
    for (let i = 0; i < count; i++) {
      if (i % 2 === 0) {
        this.packets.push(shared);
        this.offsets[i] = i * stride + 13;
      } else {
        this.packets.push(new Uint8Array(room + 7 + 16));
        this.offsets[i] = 7;
      }
    }
    this.poison();
  }

  poison(): void {
    for (const packet of this.packets) packet.fill(0xee);
  }

  /** A read may use each slot's [offset, offset + mtu) and nothing around it. */
  assertUntouchedOutside(count: number): void {
    for (let i = 0; i < this.packets.length; i++) {
      const packet = this.packets[i]!;
      const offset = this.offsets[i]!;
      assert.equal(packet[offset - 1], 0xee, `slot ${i}: the byte before its offset`);
      assert.equal(packet[offset + this.#room], 0xee, `slot ${i}: the byte after its room`);
      if (i < count)
        assert.ok(this.lengths[i]! <= this.#room, `slot ${i}: ${this.lengths[i]} bytes`);
    }
  }

  copy(i: number): Uint8Array {
    const offset = this.offsets[i]!;
    return this.packets[i]!.slice(offset, offset + this.lengths[i]!);
  }
}

/** Reads from every queue until `expected` of our datagrams came or a few seconds passed; checks each read's bounds. */
async function readOurs(
  harness: TunQueueHarness,
  expected: number,
  batch = 8,
): Promise<ReadPacket[]> {
  const got: ReadPacket[] = [];
  const deadline = Date.now() + WAIT_MS;
  const mtu = harness.queues[0]!.mtu;
  while (got.length < expected && Date.now() < deadline) {
    let moved = 0;
    for (const [queue, io] of harness.queues.entries()) {
      const count = Math.max(batch, io.readBudget);
      const slots = new Slots(count, mtu);
      const n = io.read(slots.packets, slots.offsets, slots.lengths, count);
      assert.ok(n >= 0 && n <= count, `read returned ${n} for ${count} slots`);
      slots.assertUntouchedOutside(n);
      for (let i = 0; i < n; i++) {
        const bytes = slots.copy(i);
        if (ourDatagram(bytes) !== undefined) got.push({ queue, bytes });
      }
      moved += n;
    }
    if (moved === 0) await sleep(1);
  }
  return got;
}

/** Writes `packets` on `queue` in one batch, each at an odd offset in a slot of the queue's write room. */
function writeBatch(io: TunQueueIo, packets: readonly Uint8Array[]): number {
  const slots: Uint8Array[] = [];
  const offsets: number[] = [];
  for (const packet of packets) {
    const offset = TUN_WRITE_HEADROOM + 5;
    const slot = new Uint8Array(offset + Math.max(io.writeRoom, packet.length));
    slot.set(packet, offset);
    slots.push(slot);
    offsets.push(offset);
  }
  return io.write(
    slots,
    offsets,
    packets.map((packet) => packet.length),
    packets.length,
  );
}

function reflected(bytes: Uint8Array): Uint8Array {
  const read = ourDatagram(bytes)!;
  return replyPacket(read.flow, read.payload);
}

function assertInOrder(payloads: readonly Uint8Array[], what: string): void {
  const sequences = payloads.map(sequenceOf);
  assert.deepEqual(
    sequences,
    [...sequences].sort((a, b) => a - b),
    `${what} in order`,
  );
}

async function withHarness(
  open: OpenHarness,
  options: HarnessOptions,
  run: (harness: TunQueueHarness) => Promise<void>,
): Promise<void> {
  const harness = await open(options);
  try {
    await run(harness);
  } finally {
    await harness.close();
  }
}

export const CONTRACT: Record<string, (open: OpenHarness) => Promise<void>> = {
  'reads a batch into the slots at their offsets, in the order sent, and nothing when idle': (
    open,
  ) =>
    withHarness(open, { queues: 1, mtu: 1280, flows: 1 }, async (harness) => {
      const io = harness.queues[0]!;
      const idle = new Slots(io.readBudget, io.mtu);
      assert.equal(io.read(idle.packets, idle.offsets, idle.lengths, io.readBudget), 0);
      const sent = Array.from({ length: 40 }, (_, i) => payload(i, 16 + i));
      assert.equal(await harness.send(0, sent), 0);
      const read = await readOurs(harness, sent.length, 3);
      assert.equal(read.length, sent.length);
      read.forEach(({ bytes }, i) => {
        assert.equal(bytes.length, 28 + sent[i]!.length);
        assert.deepEqual(ourDatagram(bytes)!.payload, sent[i]);
      });
      assert.equal(io.read(idle.packets, idle.offsets, idle.lengths, io.readBudget), 0);
      assert.equal(io.rxDropped, 0);
    }),

  'writes a batch from the slots at their offsets; the kernel delivers each, in order': (open) =>
    withHarness(open, { queues: 1, mtu: 1280, flows: 2 }, async (harness) => {
      const io = harness.queues[0]!;
      // Same-sized runs of one flow, which a queue with offloads may coalesce into one write.
      const packets = Array.from({ length: 24 }, (_, i) =>
        replyPacket(i < 16 ? 0 : 1, payload(i, i < 16 ? 600 : 40 + i)),
      );
      assert.equal(writeBatch(io, packets), packets.length);
      const delivered = await harness.delivered(packets.length);
      assert.equal(delivered.length, packets.length);
      for (const flow of [0, 1]) {
        const ours = delivered.filter((d) => d.port === FIRST_PORT + flow).map((d) => d.payload);
        assert.equal(ours.length, flow === 0 ? 16 : 8);
        assertInOrder(ours, `flow ${flow}`);
      }
      assert.deepEqual(
        delivered.find((d) => sequenceOf(d.payload) === 20)!.payload,
        payload(20, 60),
      );
      assert.equal(io.txRejected, 0);
    }),

  'a packet of exactly the MTU is read whole and written back whole': (open) =>
    withHarness(open, { queues: 1, mtu: 1280, flows: 1 }, async (harness) => {
      const io = harness.queues[0]!;
      const full = payload(7, 1280 - 28);
      assert.equal(await harness.send(0, [full]), 0);
      const [read] = await readOurs(harness, 1);
      assert.equal(read?.bytes.length, 1280);
      assert.equal(writeBatch(io, [reflected(read.bytes)]), 1);
      const delivered = await harness.delivered(1);
      assert.deepEqual(
        delivered.map((d) => d.payload),
        [full],
      );
    }),

  'a packet longer than the MTU is not read into a slot: dropped, counted in rxDropped, the next is read':
    (open) =>
      withHarness(open, { queues: 1, mtu: 1280, linkMtu: 1400, flows: 1 }, async (harness) => {
        const io = harness.queues[0]!;
        assert.equal(await harness.send(0, [payload(1, 1400 - 28), payload(2)]), 0);
        const read = await readOurs(harness, 1);
        assert.deepEqual(
          read.map(({ bytes }) => sequenceOf(ourDatagram(bytes)!.payload)),
          [2],
        );
        assert.equal(io.rxDropped, 1);
      }),

  'an owner that does not read loses nothing silently: read later plus kernel drops is what was sent':
    (open) =>
      withHarness(open, { queues: 1, mtu: 1280, backlog: 16, flows: 1 }, async (harness) => {
        const sent = Array.from({ length: 200 }, (_, i) => payload(i));
        const refused = await harness.send(0, sent);
        const drops = harness.kernelReadDrops();
        const read = await readOurs(harness, sent.length - refused - drops);
        assert.ok(drops > 0, 'the kernel side dropped what did not fit');
        assert.ok(read.length >= 16, `${read.length} read`);
        assert.equal(read.length + drops + refused, sent.length);
        assertInOrder(
          read.map(({ bytes }) => ourDatagram(bytes)!.payload),
          'what was read',
        );
      }),

  'what write reports taken is delivered; a batch beyond the backlog is not taken whole': (open) =>
    withHarness(open, { queues: 1, mtu: 1280, backlog: 16, flows: 1 }, async (harness) => {
      const io = harness.queues[0]!;
      const packets = Array.from({ length: 64 }, (_, i) => replyPacket(0, payload(i, 100 + i)));
      const written = writeBatch(io, packets);
      assert.ok(written >= 16 && written <= packets.length, `${written} written`);
      const delivered = await harness.delivered(written);
      assert.equal(delivered.length, written);
      assertInOrder(
        delivered.map((d) => d.payload),
        'what was delivered',
      );
      assert.equal(io.txRejected, 0);
    }),

  'each flow is read from one queue in order, and from the queue that last wrote it': (open) =>
    withHarness(open, { queues: 4, mtu: 1280, flows: 32 }, async (harness) => {
      const flows = 32;
      for (let flow = 0; flow < flows; flow++) {
        assert.equal(
          await harness.send(
            flow,
            [0, 1, 2, 3, 4].map((i) => payload(i)),
          ),
          0,
        );
      }
      const queueOf = new Map<number, number>();
      const first = await readOurs(harness, flows * 5);
      assert.equal(first.length, flows * 5);
      for (let flow = 0; flow < flows; flow++) {
        const ours = first.filter(({ bytes }) => ourDatagram(bytes)!.flow === flow);
        const queues = new Set(ours.map(({ queue }) => queue));
        assert.equal(queues.size, 1, `flow ${flow} read from queues ${[...queues].join(', ')}`);
        assertInOrder(
          ours.map(({ bytes }) => ourDatagram(bytes)!.payload),
          `flow ${flow}`,
        );
        queueOf.set(flow, ours[0]!.queue);
      }
      assert.ok(new Set(queueOf.values()).size > 1, 'flows spread over the queues');
      // Each flow answered on the next queue: the kernel sends the flow there from then on.
      for (let flow = 0; flow < flows; flow++) {
        const moved = (queueOf.get(flow)! + 1) % 4;
        assert.equal(writeBatch(harness.queues[moved]!, [replyPacket(flow, payload(100))]), 1);
        queueOf.set(flow, moved);
      }
      assert.equal((await harness.delivered(flows)).length, flows);
      for (let flow = 0; flow < flows; flow++) {
        assert.equal(await harness.send(flow, [payload(200), payload(201)]), 0);
      }
      const after = await readOurs(harness, flows * 2);
      assert.equal(after.length, flows * 2);
      const elsewhere = after.filter(
        ({ bytes, queue }) => queueOf.get(ourDatagram(bytes)!.flow) !== queue,
      );
      assert.deepEqual(
        elsewhere.map(({ queue }) => queue),
        [],
        'read from another queue',
      );
    }),

  'close is idempotent; reading or writing a closed queue throws': (open) =>
    withHarness(open, { queues: 1, mtu: 1280, flows: 1 }, async (harness) => {
      const io = harness.queues[0]!;
      io.close();
      io.close();
      const slots = new Slots(io.readBudget, io.mtu);
      assert.throws(
        () => io.read(slots.packets, slots.offsets, slots.lengths, io.readBudget),
        /closed/,
      );
      assert.throws(() => writeBatch(io, [replyPacket(0, payload(1))]), /closed/);
    }),
};

/** The kernel side of `MemoryTunQueues`: injects our flows, delivers what was written if its checksums are right. */
export const openMemoryHarness: OpenHarness = (options) => {
  const fake = new MemoryTunQueues({
    queues: options.queues,
    mtu: options.mtu,
    ...(options.linkMtu === undefined ? {} : { linkMtu: options.linkMtu }),
    ...(options.backlog === undefined ? {} : { slots: options.backlog }),
  });
  const queues = Array.from({ length: options.queues }, (_, i) => fake.queue(i));
  const delivered: Delivered[] = [];
  const view = new IpPacket();
  return Promise.resolve({
    queues,
    send(flow, payloads) {
      for (const body of payloads) {
        const packet = withChecksums(
          ipv4Packet({
            source: LOCAL,
            destination: PEER,
            protocol: 17,
            payload: udpDatagram(FIRST_PORT + flow, PEER_PORT, body),
          }),
        );
        fake.inject(packet);
      }
      return Promise.resolve(0);
    },
    delivered() {
      for (const { packet } of fake.takeWritten()) {
        if (view.parse(packet, 0, packet.length, true) !== null) continue;
        if (!view.verifyTransportChecksum()) continue;
        const udp = (packet[0]! & 0x0f) * 4;
        if (packet[9] !== 17 || !sameAddress(packet, 16, ipv4Address(LOCAL))) continue;
        delivered.push({
          port: (packet[udp + 2]! << 8) | packet[udp + 3]!,
          payload: packet.slice(udp + 8),
        });
      }
      return Promise.resolve([...delivered]);
    },
    kernelReadDrops: () => fake.injectDropped,
    close() {
      for (const queue of queues) queue.close();
      return Promise.resolve();
    },
  });
};

function sameAddress(packet: Uint8Array, at: number, address: Uint8Array): boolean {
  return address.every((byte, i) => packet[at + i] === byte);
}
