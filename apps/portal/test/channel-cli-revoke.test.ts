/**
 * `gatehouse-portal token revoke ID` run as its own process against the database a live portal
 * serves: the portal notices the commit (data_version polling) and closes the token's session
 * with disconnect{reason: "token_expired"}; another client's session stays.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { skipLoudly } from '@gatehouse/test-support';
import { joinClient, startWorld } from './channel-support.ts';

const CLI = fileURLToPath(new URL('../bin/gatehouse-portal', import.meta.url));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(CLI, args, { timeout: 30_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

void test('token revoke from the CLI process closes the live session', async (t) => {
  if (!existsSync(CLI)) {
    skipLoudly(t, `no CLI launcher at ${CLI}`);
    return;
  }
  const world = await startWorld();
  try {
    const alice = await joinClient(world, world.alice);
    const bob = await joinClient(world, world.bob);
    const result = await run(['--db', world.dbPath, 'token', 'revoke', alice.token.id]);
    assert.equal(result.code, 0, result.stderr);
    assert.ok(
      !result.stdout.includes(alice.token.text) && !result.stderr.includes(alice.token.text),
    );
    const disconnect = await alice.socket.event('disconnect', 5000);
    assert.deepEqual(disconnect.payload, { reason: 'token_expired' });
    assert.equal(await alice.socket.closed(), 1000);
    alice.socket.assertValid();
    await bob.socket.heartbeat();
    assert.ok(world.portal.hub.counters().mapper.dataVersionChanges >= 1);
    bob.socket.close();
  } finally {
    await world.close();
  }
});
