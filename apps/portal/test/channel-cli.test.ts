/**
 * The operator CLI run as its own process against the database a live portal serves: the portal
 * notices the commit (data_version polling). `token revoke ID` closes the token's session with
 * disconnect{reason: "token_expired"} (another client's session stays); `apply` dropping a
 * policy sends the client resource_deleted and the gateway reject_access.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { skipLoudly } from '@gatehouse/test-support';
import { joinClient, joinGateway, startWorld } from './channel-support.ts';

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

void test('apply from the CLI process dropping a policy: resource_deleted and reject_access', async (t) => {
  if (!existsSync(CLI)) {
    skipLoudly(t, `no CLI launcher at ${CLI}`);
    return;
  }
  const world = await startWorld();
  try {
    const gateway = await joinGateway(world);
    const alice = await joinClient(world, world.alice);
    alice.socket.send({
      topic: 'client',
      event: 'request_authorization',
      payload: { resource_id: world.wiki },
      ref: 'a',
    });
    await alice.socket.event('authorization_created');
    const file = join(world.dir, 'portal.yaml');
    writeFileSync(
      file,
      [
        'accounts:',
        '  - slug: acme',
        '    name: Acme',
        '    policies:',
        '      - group: ops',
        '        resource: db',
        '      - group: eng',
        '        resource: git',
        '',
      ].join('\n'),
    );
    const result = await run(['--db', world.dbPath, 'apply', file]);
    assert.equal(result.code, 0, result.stderr + result.stdout);
    const deleted = await alice.socket.event('resource_deleted', 5000);
    assert.deepEqual(deleted.payload, { id: world.wiki });
    const rejected = await gateway.socket.event('reject_access', 5000);
    assert.equal(rejected.payload.resource_id, world.wiki);
    // git is still hers.
    await alice.socket.none((f) => f.event === 'resource_deleted' && f.payload.id === world.git);
    alice.socket.close();
    gateway.socket.close();
  } finally {
    await world.close();
  }
});
