import assert from 'node:assert/strict';
import { test } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import type { TunStats } from '../src/index.ts';
import { runScenario, systemSkipReason } from './netns-harness.ts';

interface EchoResult {
  stalled?: unknown;
  offloads: { virtioHeader: boolean; checksum: boolean };
  sent: number;
  sendErrors: number;
  read: number;
  readInversions: number;
  flowsOnSeveralQueues: number;
  queuesUsed: number;
  echoed: number;
  echoInversions: number;
  checksumErrors: number;
  receiveBufferErrors: number;
  stats: TunStats;
  kernel: unknown;
}

const skip = systemSkipReason();

/** Fails with where every packet was when the scenario stopped making progress. */
function assertNoStall(r: { stalled?: unknown }): void {
  if (r.stalled !== undefined) assert.fail(`the scenario stalled: ${JSON.stringify(r.stalled)}`);
}

/** Every datagram was read and every reflected packet reached its socket; if not, where they went. */
function assertEchoedAll(r: EchoResult): void {
  assertNoStall(r);
  const where = JSON.stringify({ kernel: r.kernel, stats: r.stats });
  assert.equal(r.sendErrors, 0, `datagrams the kernel refused to send: ${where}`);
  assert.equal(r.read, r.sent, `datagrams read: ${where}`);
  assert.equal(r.echoed, r.sent, `reflected packets that reached their socket: ${where}`);
}

for (const queues of [1, 2, 4]) {
  void test(`${queues}-queue TUN: kernel datagrams are read, reflected packets are accepted`, async (t) => {
    if (skip) return skipLoudly(t, skip);
    const r = await runScenario<EchoResult>('echo', [String(queues), 'plain', '16', '100', '100']);
    assertEchoedAll(r);
    assert.equal(r.stats.queues.length, queues);
    if (queues > 1) assert.ok(r.queuesUsed > 1, `16 flows spread over ${r.queuesUsed} queue(s)`);
    assert.equal(r.flowsOnSeveralQueues, 0);
  });
}

void test('many concurrent flows under load keep their order in both directions', async (t) => {
  if (skip) return skipLoudly(t, skip);
  const r = await runScenario<EchoResult>('echo', ['4', 'plain', '64', '1500', '100']);
  assertEchoedAll(r);
  assert.equal(r.readInversions, 0, 'inversions among packets read');
  assert.equal(r.echoInversions, 0, 'inversions among packets written');
  assert.equal(r.flowsOnSeveralQueues, 0, 'every flow was read from one queue only');
  assert.equal(r.queuesUsed, 4);
  const written = r.stats.queues.reduce((sum, queue) => sum + queue.txPackets, 0);
  assert.equal(written, r.sent);
});

for (const offload of ['plain', 'offload']) {
  void test(`offloads ${offload === 'offload' ? 'on' : 'off'}: packets read have valid checksums, the kernel accepts what we write`, async (t) => {
    if (skip) return skipLoudly(t, skip);
    const r = await runScenario<EchoResult>('echo', ['2', offload, '4', '200', '1200']);
    assert.equal(r.offloads.virtioHeader, offload === 'offload');
    if (offload === 'offload')
      assert.equal(r.offloads.checksum, true, 'this kernel offers TUN_F_CSUM');
    // Reflection keeps checksums as they were read: the kernel drops any packet whose checksum is wrong.
    assert.equal(r.checksumErrors, 0, 'kernel UDP InCsumErrors');
    assertEchoedAll(r);
    for (const queue of r.stats.queues) {
      assert.equal(queue.rxDropped, 0);
      assert.equal(queue.txRejected, 0);
    }
  });
}

for (const offload of ['plain', 'offload']) {
  void test(`a slow consumer loses nothing silently, offloads ${offload === 'offload' ? 'on' : 'off'}: every datagram is read or counted as dropped`, async (t) => {
    if (skip) return skipLoudly(t, skip);
    const r = await runScenario<{
      sent: number;
      sendErrors: number;
      read: number;
      readInversions: number;
      kernelDropped: number;
      stats: TunStats;
    }>('slow-reader', [offload]);
    assert.ok(
      r.stats.queues[0]!.rxRingFull > 0,
      `the worker slept while the ring lacked room: ${JSON.stringify(r.stats)}`,
    );
    assert.ok(r.read > 0);
    assert.equal(r.read + r.kernelDropped + r.sendErrors, r.sent);
    assert.equal(r.readInversions, 0);
  });
}

void test('a producer faster than the device is held back, not dropped', async (t) => {
  if (skip) return skipLoudly(t, skip);
  const r = await runScenario<{
    stalled?: unknown;
    sent: number;
    written: number;
    received: number;
    inversions: number;
    receiverDropped: number;
    stats: TunStats;
  }>('fast-writer', []);
  assertNoStall(r);
  assert.ok(r.stats.sendRefused > 0, 'send() refused while the queue was full');
  assert.equal(r.written, r.sent);
  assert.equal(
    r.received + r.receiverDropped,
    r.sent,
    'the kernel received or counted every packet',
  );
  assert.equal(r.inversions, 0);
});

void test('close() under load in both directions completes within 1 s', async (t) => {
  if (skip) return skipLoudly(t, skip);
  const r = await runScenario<{
    closeMs: number;
    readBeforeClose: number;
    writtenBeforeClose: number;
  }>('shutdown', ['4']);
  assert.ok(r.readBeforeClose > 0 && r.writtenBeforeClose > 0, 'traffic was flowing');
  assert.ok(r.closeMs < 1000, `close took ${r.closeMs} ms`);
});

void test('opening a name that exists fails clearly instead of joining the device', async (t) => {
  if (skip) return skipLoudly(t, skip);
  const r = await runScenario<{ error: string }>('exclusive', []);
  assert.match(r.error, /already exists; refusing to attach/);
});
