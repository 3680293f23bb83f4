import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { parseEndpoint } from '@gatehouse/addresses';
import { DatagramBatch, DualStackSocket, LinuxUdpSocket } from '../src/index.ts';

function openDualStack(port = 0): DualStackSocket {
  const v4 = LinuxUdpSocket.open({ family: 4, port, reusePort: true, gso: false, gro: false });
  const v6 = LinuxUdpSocket.open({
    family: 6,
    port: v4.localPort,
    reusePort: true,
    gso: false,
    gro: false,
  });
  return new DualStackSocket(v4, v6);
}

function receiveAll(socket: DualStackSocket, want: number): { text: string; from: string }[] {
  const batch = new DatagramBatch(8, 2048);
  const got: { text: string; from: string }[] = [];
  const deadline = performance.now() + 2000;
  while (got.length < want && performance.now() < deadline) {
    const count = socket.receiveBatch(batch);
    if (count === 0) socket.waitReadable(50);
    for (let slot = 0; slot < count; slot++) {
      const start = batch.offsets[slot]!;
      const { family, port } = batch.endpoint(slot);
      got.push({
        text: new TextDecoder().decode(batch.data.subarray(start, start + batch.lengths[slot]!)),
        from: `${family}:${port}`,
      });
    }
  }
  return got;
}

void describe('dual-stack UDP socket', () => {
  void it('sends each slot through the socket of its family and receives from both', () => {
    const sender = openDualStack();
    const receiver = openDualStack();
    try {
      assert.equal(receiver.v4.localPort, receiver.v6!.localPort);
      const batch = new DatagramBatch(5, 64);
      const targets = ['127.0.0.1', '::1', '::1', '127.0.0.1', '::1'];
      targets.forEach((address, slot) => {
        const text = `${slot}@${address}`;
        batch.data.set(new TextEncoder().encode(text), batch.offsets[slot]!);
        batch.lengths[slot] = text.length;
        const endpoint = parseEndpoint(
          address.includes(':')
            ? `[${address}]:${receiver.localPort}`
            : `${address}:${receiver.localPort}`,
        );
        batch.setEndpoint(slot, endpoint);
      });
      assert.equal(sender.sendBatch(batch, 5), 5);
      const got = receiveAll(receiver, 5);
      assert.deepEqual(got.map((g) => g.text).sort(), targets.map((a, s) => `${s}@${a}`).sort());
      for (const { text, from } of got) {
        const family = text.endsWith('::1') ? 6 : 4;
        assert.equal(from, `${family}:${sender.localPort}`, text);
      }
    } finally {
      sender.close();
      receiver.close();
    }
  });

  void it('without an IPv6 socket drops IPv6 slots and still sends the rest', () => {
    const sender = new DualStackSocket(
      LinuxUdpSocket.open({ family: 4, gso: false, gro: false }),
      undefined,
    );
    const receiver = openDualStack();
    try {
      assert.equal(sender.has(6), false);
      assert.equal(sender.has(4), true);
      const batch = new DatagramBatch(3, 64);
      ['127.0.0.1', '::1', '127.0.0.1'].forEach((address, slot) => {
        batch.data[batch.offsets[slot]!] = 65 + slot;
        batch.lengths[slot] = 1;
        batch.setEndpoint(
          slot,
          parseEndpoint(
            address.includes(':')
              ? `[${address}]:${receiver.localPort}`
              : `${address}:${receiver.localPort}`,
          ),
        );
      });
      assert.equal(sender.sendBatch(batch, 3), 2);
      assert.deepEqual(
        receiveAll(receiver, 2)
          .map((g) => g.text)
          .sort(),
        ['A', 'C'],
      );
    } finally {
      sender.close();
      receiver.close();
    }
  });

  void it('wake makes waitReadable return true', () => {
    const socket = openDualStack();
    try {
      socket.wake();
      assert.equal(socket.waitReadable(1000), true);
      assert.equal(socket.waitReadable(0), false);
    } finally {
      socket.close();
    }
  });
});
