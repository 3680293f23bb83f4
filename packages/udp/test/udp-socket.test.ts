import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';

import { parseEndpoint } from '@gatehouse/addresses';
import { skipLoudly } from '@gatehouse/test-support';

import {
  DatagramBatch,
  LinuxUdpSocket,
  MAX_DATAGRAM_BYTES,
  MemoryUdpNetwork,
} from '../src/index.ts';
import type { DatagramSocket } from '../src/index.ts';
import { getIntOption } from '../src/linux/linux-udp-socket.ts';
import { SOL_SOCKET, SO_MARK } from '@gatehouse/libc';

interface SocketPair {
  sender: DatagramSocket;
  receiver: DatagramSocket;
  receiverEndpoint: string;
  senderEndpoint: string;
  close(): void;
}

function linuxPair(family: 4 | 6, options: { gso?: boolean; gro?: boolean } = {}): SocketPair {
  const address = family === 4 ? '127.0.0.1' : '::1';
  const sender = LinuxUdpSocket.open({ family, address, gso: options.gso ?? false, gro: false });
  const receiver = LinuxUdpSocket.open({ family, address, gso: false, gro: options.gro ?? false });
  const endpoint = (port: number) => (family === 4 ? `${address}:${port}` : `[${address}]:${port}`);
  return {
    sender,
    receiver,
    receiverEndpoint: endpoint(receiver.localPort),
    senderEndpoint: endpoint(sender.localPort),
    close() {
      sender.close();
      receiver.close();
    },
  };
}

function memoryPair(family: 4 | 6): SocketPair {
  const network = new MemoryUdpNetwork();
  const address = family === 4 ? '127.0.0.1' : '::1';
  const sender = network.bind(address, 5000);
  const receiver = network.bind(address, 6000);
  const endpoint = (port: number) => (family === 4 ? `${address}:${port}` : `[${address}]:${port}`);
  return {
    sender,
    receiver,
    receiverEndpoint: endpoint(6000),
    senderEndpoint: endpoint(5000),
    close() {
      sender.close();
      receiver.close();
    },
  };
}

/** A distinct, position-dependent byte pattern so misplaced bytes show up. */
function fill(batch: DatagramBatch, slot: number, length: number, seed: number): void {
  const offset = batch.offsets[slot]!;
  for (let index = 0; index < length; index++)
    batch.data[offset + index] = (seed * 31 + index * 7) & 0xff;
  batch.lengths[slot] = length;
}

function payload(
  batch: DatagramBatch,
  slot: number,
  segment = 0,
  size = batch.lengths[slot]!,
): Uint8Array {
  const start = batch.offsets[slot]! + segment * size;
  const end = Math.min(batch.offsets[slot]! + batch.lengths[slot]!, start + size);
  return batch.data.slice(start, end);
}

/** Receives until `expected` datagrams (segments counted individually) arrived or 2 s passed. */
function receiveSegments(socket: DatagramSocket, expected: number, slotSize: number) {
  const batch = new DatagramBatch(64, slotSize);
  const segments: { bytes: Uint8Array; tos: number; endpoint: string; segmentSize: number }[] = [];
  const deadline = Date.now() + 2000;
  while (segments.length < expected && Date.now() < deadline) {
    const count = socket.receiveBatch(batch);
    if (count === 0) {
      socket.waitReadable(50);
      continue;
    }
    for (let slot = 0; slot < count; slot++) {
      const endpoint = batch.endpoint(slot);
      const text = `${endpoint.family === 6 ? '[::1]' : Array.from(endpoint.address).join('.')}:${endpoint.port}`;
      const size = batch.segmentSizes[slot] || batch.lengths[slot]!;
      const parts = Math.ceil(batch.lengths[slot]! / size);
      for (let segment = 0; segment < parts; segment++) {
        segments.push({
          bytes: payload(batch, slot, segment, size),
          tos: batch.tos[slot]!,
          endpoint: text,
          segmentSize: batch.segmentSizes[slot]!,
        });
      }
    }
  }
  return segments;
}

function sendAndCheck(pair: SocketPair, lengths: number[], tos: (slot: number) => number): void {
  const batch = new DatagramBatch(64, 2048);
  batch.resetOffsets(16);
  const destination = parseEndpoint(pair.receiverEndpoint);
  lengths.forEach((length, slot) => {
    fill(batch, slot, length, slot);
    batch.setEndpoint(slot, destination);
    batch.tos[slot] = tos(slot);
  });
  assert.equal(pair.sender.sendBatch(batch, lengths.length), lengths.length);
  const received = receiveSegments(pair.receiver, lengths.length, MAX_DATAGRAM_BYTES + 16);
  assert.equal(received.length, lengths.length);
  received.forEach((datagram, slot) => {
    assert.deepEqual(datagram.bytes, payload(batch, slot), `datagram ${slot} bytes`);
    assert.equal(datagram.tos, tos(slot), `datagram ${slot} TOS`);
    assert.equal(datagram.endpoint, pair.senderEndpoint);
  });
}

const lengthsOfAKind = Array.from({ length: 64 }, (_, slot) => 1 + ((slot * 97) % 1400));

for (const [name, makePair] of [
  ['linux', linuxPair],
  ['memory', memoryPair],
] as const) {
  void describe(`${name} UDP socket`, () => {
    for (const family of [4, 6] as const) {
      void it(`moves a batch of 64 datagrams of different sizes over IPv${family}, bytes and endpoints exact`, () => {
        const pair = makePair(family);
        try {
          sendAndCheck(pair, lengthsOfAKind, () => 0);
        } finally {
          pair.close();
        }
      });

      void it(`carries the TOS/traffic class byte (ECN bits included) per datagram over IPv${family}`, () => {
        const pair = makePair(family);
        const values = [0x00, 0x01, 0x02, 0x03, 0xb8, 0xb9, 0x2a, 0x03];
        try {
          sendAndCheck(pair, [100, 100, 100, 100, 100, 100, 100, 100], (slot) => values[slot]!);
        } finally {
          pair.close();
        }
      });
    }

    void it('receiveBatch returns 0 when nothing waits, and waitReadable times out', () => {
      const pair = makePair(4);
      try {
        assert.equal(pair.receiver.receiveBatch(new DatagramBatch(8, MAX_DATAGRAM_BYTES)), 0);
        const started = performance.now();
        assert.equal(pair.receiver.waitReadable(30), false);
        assert.ok(performance.now() - started >= 25);
      } finally {
        pair.close();
      }
    });

    void it('wake makes a pending wait return true', () => {
      const pair = makePair(4);
      try {
        pair.receiver.wake();
        assert.equal(pair.receiver.waitReadable(5000), true);
      } finally {
        pair.close();
      }
    });
  });
}

void describe('linux UDP GSO and GRO', () => {
  for (const family of [4, 6] as const) {
    void it(`coalesces equal-sized runs on send and splits them back exactly on receive (IPv${family})`, () => {
      const pair = linuxPair(family, { gso: true, gro: true });
      try {
        assert.equal((pair.sender as LinuxUdpSocket).gso, true, 'kernel without UDP GSO');
        assert.equal((pair.receiver as LinuxUdpSocket).gro, true, 'kernel without UDP GRO');
        // Runs of equal sizes with a short tail, a TOS change inside a run, and singles.
        const lengths = [
          ...Array<number>(20).fill(1200),
          700,
          ...Array<number>(10).fill(1300),
          90,
          1400,
          1400,
        ];
        const tos = (slot: number) => (slot >= 25 && slot < 31 ? 0x02 : 0x00);
        const batch = new DatagramBatch(64, 2048);
        const destination = parseEndpoint(pair.receiverEndpoint);
        lengths.forEach((length, slot) => {
          fill(batch, slot, length, slot + 3);
          batch.setEndpoint(slot, destination);
          batch.tos[slot] = tos(slot);
        });
        assert.equal(pair.sender.sendBatch(batch, lengths.length), lengths.length);
        const received = receiveSegments(pair.receiver, lengths.length, MAX_DATAGRAM_BYTES);
        assert.deepEqual(
          received.map((segment) => segment.bytes.length),
          lengths,
        );
        received.forEach((segment, slot) => {
          assert.deepEqual(segment.bytes, payload(batch, slot), `segment ${slot}`);
          assert.equal(segment.tos, tos(slot), `segment ${slot} TOS`);
        });
        assert.ok(
          received.some((segment) => segment.segmentSize === 1200),
          'expected at least one GRO-coalesced receive',
        );
      } finally {
        pair.close();
      }
    });
  }

  void it('refuses GRO receives into slots that could truncate', () => {
    const pair = linuxPair(4, { gro: true });
    try {
      assert.throws(
        () => pair.receiver.receiveBatch(new DatagramBatch(4, 2048)),
        /GRO receive needs/,
      );
    } finally {
      pair.close();
    }
  });
});

void describe('linux UDP socket options', () => {
  void it('sets SO_MARK', (t) => {
    if (process.getuid?.() !== 0) return skipLoudly(t, 'needs root: SO_MARK needs CAP_NET_ADMIN');
    const socket = LinuxUdpSocket.open({ family: 4, address: '127.0.0.1', fwmark: 0x51820 });
    try {
      assert.equal(getIntOption(socket.fd, SOL_SOCKET, SO_MARK), 0x51820);
    } finally {
      socket.close();
    }
  });

  void it('shares a port between SO_REUSEPORT sockets', () => {
    const first = LinuxUdpSocket.open({ family: 4, address: '127.0.0.1', reusePort: true });
    try {
      const second = LinuxUdpSocket.open({
        family: 4,
        address: '127.0.0.1',
        port: first.localPort,
        reusePort: true,
      });
      assert.equal(second.localPort, first.localPort);
      second.close();
    } finally {
      first.close();
    }
  });
});

void describe('across threads', () => {
  const workerSource = (kind: string) => `
    import { workerData, parentPort } from 'node:worker_threads';
    const udp = await import(${JSON.stringify(new URL('../src/index.ts', import.meta.url).href)});
    const socket = ${kind === 'linux' ? 'udp.LinuxUdpSocket.adopt(workerData.socket)' : 'udp.MemoryUdpNetwork.attach(workerData.network).socket(workerData.index)'};
    parentPort.postMessage('waiting');
    const woken = socket.waitReadable(-1);
    const batch = new udp.DatagramBatch(8, ${MAX_DATAGRAM_BYTES});
    parentPort.postMessage({ woken, received: socket.receiveBatch(batch) });
  `;

  for (const kind of ['linux', 'memory'] as const) {
    void it(`${kind}: a worker blocked in waitReadable(-1) returns when woken from another thread`, async () => {
      const network = new MemoryUdpNetwork();
      const socket =
        kind === 'linux'
          ? LinuxUdpSocket.open({ family: 4, address: '127.0.0.1', gro: true })
          : network.bind('10.0.0.1', 1);
      const workerData =
        kind === 'linux'
          ? { socket: (socket as LinuxUdpSocket).share() }
          : { network: network.shared, index: (socket as ReturnType<typeof network.bind>).index };
      const worker = new Worker(
        new URL(`data:text/javascript,${encodeURIComponent(workerSource(kind))}`),
        { workerData },
      );
      try {
        const [first] = (await once(worker, 'message')) as [string];
        assert.equal(first, 'waiting');
        await new Promise((resolve) => setTimeout(resolve, 50));
        socket.wake();
        const [result] = (await Promise.race([
          once(worker, 'message'),
          new Promise((_, reject) =>
            setTimeout(() => reject(new Error('worker never woke')), 3000),
          ),
        ])) as [{ woken: boolean; received: number }];
        assert.deepEqual(result, { woken: true, received: 0 });
      } finally {
        await worker.terminate();
        socket.close();
      }
    });
  }
});
