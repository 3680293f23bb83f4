import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import {
  TestNetwork,
  isProcessAlive,
  listNamespaces,
  runCommand,
  sweepStaleNamespaces,
  systemTestSkipReason,
  withTestNetwork,
} from './lib/netns.ts';

const skipReason = systemTestSkipReason(['ip', 'ping', 'sleep']);
const holderScript = fileURLToPath(new URL('./fixtures/hold-namespace.ts', import.meta.url));

function skipped(t: TestContext): boolean {
  if (skipReason === undefined) return false;
  skipLoudly(t, skipReason);
  return true;
}

async function deadPid(): Promise<number> {
  const child = spawn('true');
  await once(child, 'exit');
  assert.ok(child.pid !== undefined);
  return child.pid;
}

void describe('netns', { timeout: 30_000 }, () => {
  void test('namespaces joined by a veth pair reach each other and are fully removed', async (t) => {
    if (skipped(t)) return;
    const network = TestNetwork.create('vethping');
    let created: string[] = [];
    try {
      const left = await network.addNamespace();
      const right = await network.addNamespace();
      created = [left, right];
      assert.match(left, new RegExp(`^gh-vethping-${process.pid}-\\d+$`));
      assert.notEqual(left, right);
      await network.addVethPair(
        { namespace: left, name: 'veth0', address: '10.201.0.1/24' },
        { namespace: right, name: 'veth0', address: '10.201.0.2/24' },
      );
      const { stdout } = await network.exec(left, [
        'ping',
        '-c',
        '2',
        '-i',
        '0.2',
        '-W',
        '1',
        '10.201.0.2',
      ]);
      assert.match(stdout, /2 packets transmitted, 2 received/);
      const listed = listNamespaces();
      for (const namespace of created) assert.ok(listed.includes(namespace), `${namespace} listed`);
    } finally {
      await network.destroy();
    }
    const listed = listNamespaces();
    for (const namespace of created) assert.ok(!listed.includes(namespace), `${namespace} removed`);
  });

  void test('a body that throws still loses its namespaces and processes', async (t) => {
    if (skipped(t)) return;
    let namespace = '';
    let sleeperPid: number | undefined;
    await assert.rejects(
      withTestNetwork('throws', async (network) => {
        namespace = await network.addNamespace();
        const sleeper = network.spawn(namespace, ['sleep', '30']);
        await once(sleeper.child, 'spawn');
        sleeperPid = sleeper.child.pid;
        throw new Error('body failed on purpose');
      }),
      /body failed on purpose/,
    );
    assert.ok(namespace !== '' && sleeperPid !== undefined);
    assert.ok(!listNamespaces().includes(namespace), `${namespace} removed`);
    assert.ok(!isProcessAlive(sleeperPid), `process ${sleeperPid} stopped`);
  });

  void test('exec rejects with the command and its stderr when the command fails', async (t) => {
    if (skipped(t)) return;
    await withTestNetwork('execfail', async (network) => {
      const namespace = await network.addNamespace();
      await assert.rejects(
        network.exec(namespace, ['ip', 'link', 'show', 'no-such-interface']),
        /ip link show no-such-interface` exited with 1: .*does not exist/,
      );
    });
  });

  void test('the stale sweep removes namespaces of dead runs and spares live ones', async (t) => {
    if (skipped(t)) return;
    const stale = `gh-stale-${await deadPid()}-0`;
    const live = `gh-live-${process.pid}-999`;
    try {
      await runCommand(['ip', 'netns', 'add', stale]);
      await runCommand(['ip', 'netns', 'add', live]);
      const leftover = spawn('ip', ['netns', 'exec', stale, 'sleep', '30'], { stdio: 'ignore' });
      await once(leftover, 'spawn');
      const exited = once(leftover, 'exit');

      const removed = sweepStaleNamespaces();

      assert.ok(removed.includes(stale), `removed ${removed.join(' ')}`);
      assert.ok(!removed.includes(live));
      const listed = listNamespaces();
      assert.ok(!listed.includes(stale));
      assert.ok(listed.includes(live));
      const [, signal] = (await exited) as [number | null, string | null];
      assert.equal(signal, 'SIGKILL');
    } finally {
      for (const name of [stale, live]) {
        await runCommand(['ip', 'netns', 'delete', name]).catch(() => {});
      }
    }
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    void test(`${signal} removes the namespaces and processes of a run`, async (t) => {
      if (skipped(t)) return;
      const holder = spawn(process.execPath, [holderScript], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      holder.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      const exited = once(holder, 'exit');
      try {
        const [line] = (await once(holder.stdout.setEncoding('utf8'), 'data')) as [string];
        const { namespace, pid } = JSON.parse(line) as { namespace: string; pid: number };
        assert.ok(listNamespaces().includes(namespace));
        assert.ok(isProcessAlive(pid));

        holder.kill(signal);
        const [code] = (await exited) as [number | null];

        assert.equal(code, signal === 'SIGTERM' ? 143 : 130, stderr);
        assert.ok(!listNamespaces().includes(namespace), `${namespace} removed`);
        assert.ok(!isProcessAlive(pid), `process ${pid} stopped`);
      } finally {
        holder.kill('SIGKILL');
      }
    });
  }
});
