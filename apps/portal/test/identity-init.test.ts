/**
 * The client's init says who it is signed in as: the account's slug and the actor's name, a
 * user's or a service account's, as stored when it joins.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { parsePortalToClient } from '@gatehouse/protocol';
import { joinClient, makeToken, startWorld, type World } from './channel-support.ts';

let world: World;
before(async () => {
  world = await startWorld();
});
after(async () => {
  await world.close();
});

void test("init.identity: the account's slug and the actor's name, for a user and a service account", async () => {
  const ci = world.storage.createActor({
    accountId: world.accountId,
    kind: 'service_account',
    name: 'ci runner',
    now: Date.now(),
  }).id;
  world.portal.hub.mapper.markDirty(world.accountId);
  const serviceToken = makeToken(world.storage, {
    accountId: world.accountId,
    kind: 'service_account',
    actorId: ci,
  });
  const cases: [string, string, string | undefined, string][] = [
    ['a user', world.alice, undefined, 'alice'],
    ['a service account', ci, serviceToken.text, 'ci runner'],
  ];
  for (const [name, actorId, token, actorName] of cases) {
    const client = await joinClient(world, actorId, token);
    assert.deepEqual(
      client.init.payload.identity,
      { account_slug: 'acme', actor_name: actorName },
      name,
    );
    const parsed = parsePortalToClient('init', client.init.payload);
    assert.ok(parsed.ok && parsed.message.event === 'init');
    assert.deepEqual(parsed.message.payload.identity, {
      account_slug: 'acme',
      actor_name: actorName,
    });
    client.socket.close();
  }
});

void test('init.identity follows a rename: the next join carries the new name', async () => {
  world.storage.updateActor(world.bob, { name: 'robert', now: Date.now() });
  world.portal.hub.mapper.markDirty(world.accountId);
  const bob = await joinClient(world, world.bob);
  assert.deepEqual(bob.init.payload.identity, { account_slug: 'acme', actor_name: 'robert' });
  bob.socket.close();
});
