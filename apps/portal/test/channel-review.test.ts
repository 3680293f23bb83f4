/**
 * The live side against a reviewer's findings, on a real server over SQLite: a token revoked or
 * expired after the upgrade cannot join, a client's flows outlive its socket until rejected,
 * DNS authorizations are checked, flows belong to whoever holds them, a timed-out flow is
 * rejected, one device per client token (and so many per actor), one device per public key,
 * drop logs throttled, config_changed when the account's ranges change.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Logger } from '@gatehouse/logging';
import { MAX_DEVICES_PER_ACTOR } from '../src/channels/backend.ts';
import { MAX_JOINS_PER_SOCKET } from '../src/channels/hub.ts';
import {
  connected,
  joinClient,
  joinGateway,
  makeToken,
  startWorld,
  wgKey,
  type TestSocket,
  type World,
} from './channel-support.ts';

const lines: string[] = [];
const logger: Logger = {
  debug: () => {},
  info: (m) => lines.push(m),
  warn: (m) => lines.push(m),
  error: (m) => lines.push(m),
};

let world: World;
before(async () => {
  world = await startWorld({ logger, channels: { flowTimeoutMs: 400 } });
});
after(async () => {
  await world.close();
});

function clientToken(actorId: string): { id: string; text: string } {
  return makeToken(world.storage, { accountId: world.accountId, kind: 'headless_client', actorId });
}

function joinPayload(deviceId: string, publicKey = wgKey()): Record<string, unknown> {
  return {
    public_key: publicKey,
    device_id: deviceId,
    name: 'laptop',
    os_name: 'Debian',
    os_version: '13',
  };
}

function request(socket: TestSocket, payload: Record<string, unknown>): void {
  socket.send({ topic: 'client', event: 'request_authorization', payload, ref: socket.ref() });
}

function status(frame: { payload: Record<string, unknown> }): unknown {
  return frame.payload.status;
}

void test('a token revoked between the upgrade and phx_join: the join is refused with disconnect{token_expired}', async () => {
  const token = clientToken(world.alice);
  const socket = await connected(world.portal, '/client/websocket', token.text);
  world.storage.revokeToken(token.id, Date.now());
  const before = world.portal.hub.counters().tokenRefusedJoins;
  const reply = await socket.reply('client', 'phx_join', joinPayload('dev-revoked-early'));
  assert.equal(status(reply), 'error');
  assert.deepEqual((await socket.event('disconnect')).payload, { reason: 'token_expired' });
  await socket.closed();
  assert.equal(world.portal.hub.counters().tokenRefusedJoins, before + 1);
  assert.equal(socket.frames.filter((f) => f.event === 'init').length, 0);
});

void test('after phx_leave the socket is still watched: revocation disconnects it, it cannot join again', async () => {
  const alice = await joinClient(world, world.alice);
  const left = await alice.socket.reply('client', 'phx_leave', {});
  assert.equal(status(left), 'ok');
  await alice.socket.event('phx_close');
  world.storage.revokeToken(alice.token.id, Date.now());
  world.portal.hub.mapper.markDirty(world.accountId);
  assert.deepEqual((await alice.socket.event('disconnect', 5000)).payload, {
    reason: 'token_expired',
  });
  await alice.socket.closed();
});

void test('phx_leave, then the token expires by time: a later phx_join is refused', async () => {
  const short = makeToken(world.storage, {
    accountId: world.accountId,
    kind: 'headless_client',
    actorId: world.alice,
    expiresAt: Date.now() + 60_000,
  });
  const alice = await joinClient(world, world.alice, short.text);
  await alice.socket.reply('client', 'phx_leave', {});
  // Expired in the database meanwhile (the session holds the old expiry).
  world.storage.revokeToken(short.id, Date.now());
  const again = await alice.socket.reply('client', 'phx_join', joinPayload('dev-again'));
  assert.equal(status(again), 'error');
  assert.equal(alice.socket.frames.filter((f) => f.event === 'init').length, 0);
  await alice.socket.closed();
});

void test('a second phx_join while joined is refused; more than MAX_JOINS_PER_SOCKET joins close the socket', async () => {
  const alice = await joinClient(world, world.alice);
  const second = await alice.socket.reply('client', 'phx_join', joinPayload('dev-second'));
  assert.equal(status(second), 'error');
  assert.deepEqual((second.payload.response as { reason: string }).reason, 'already_joined');
  alice.socket.close();

  const socket = await connected(world.portal, '/client/websocket', clientToken(world.bob).text);
  for (let i = 0; i < MAX_JOINS_PER_SOCKET; i += 1) {
    const reply = await socket.reply('client', 'phx_join', { public_key: 'not a key' });
    assert.equal(status(reply), 'error');
  }
  socket.send({ topic: 'client', event: 'phx_join', payload: {}, ref: 'x', join_ref: 'x' });
  assert.equal(await socket.closed(), 1008);
});

void test("a client that closed keeps its flow on the gateway; removing the policy then rejects it; a revoked client's flows are rejected", async () => {
  const gateway = await joinGateway(world);
  const alice = await joinClient(world, world.alice);
  request(alice.socket, { resource_id: world.wiki });
  await alice.socket.event('authorization_created');
  await gateway.socket.event('authorize_flow');
  alice.socket.close();
  await new Promise((r) => setTimeout(r, 200));
  // An ordinary close: no reject_access (the client may come back).
  assert.equal(gateway.socket.frames.filter((f) => f.event === 'reject_access').length, 0);
  world.storage.deletePolicy(world.policyWiki);
  world.portal.hub.mapper.markDirty(world.accountId);
  const reject = await gateway.socket.event('reject_access', 5000);
  assert.equal(reject.payload.resource_id, world.wiki);
  world.storage.createPolicy({ groupId: world.eng, resourceId: world.wiki, now: Date.now() });

  // Cut off while joined: the gateway drops its flows at once.
  world.portal.hub.mapper.markDirty(world.accountId);
  const again = await joinClient(world, world.alice);
  request(again.socket, { resource_id: world.wiki });
  const created = await again.socket.event('authorization_created');
  assert.equal(created.payload.resource_id, world.wiki);
  world.storage.revokeToken(again.token.id, Date.now());
  world.portal.hub.mapper.tokenRevoked(again.token.id);
  await again.socket.event('disconnect');
  const cut = await gateway.socket.event('reject_access', 3000);
  assert.equal(cut.payload.resource_id, world.wiki);

  // Closed first, revoked afterwards: rejected too.
  const third = await joinClient(world, world.alice);
  request(third.socket, { resource_id: world.wiki });
  await third.socket.event('authorization_created');
  third.socket.close();
  await new Promise((r) => setTimeout(r, 100));
  world.storage.revokeToken(third.token.id, Date.now());
  world.portal.hub.mapper.markDirty(world.accountId);
  const late = await gateway.socket.event('reject_access', 5000);
  assert.equal(late.payload.resource_id, world.wiki);
  gateway.socket.close();
});

void test('request_authorization for a DNS resource: the name must match the pattern, the proxy addresses be in the proxy ranges', async () => {
  const gateway = await joinGateway(world);
  const alice = await joinClient(world, world.alice);
  const before = world.portal.hub.counters().invalidDomainRequests;
  const bad: Record<string, unknown>[] = [
    { resource_id: world.git },
    { resource_id: world.git, domain: { name: 'evil.example', proxy_ips: ['100.96.0.1'] } },
    { resource_id: world.git, domain: { name: 'a.b.git.corp.example', proxy_ips: ['100.96.0.2'] } },
    { resource_id: world.git, domain: { name: 'a.git.corp.example', proxy_ips: ['10.0.0.1'] } },
    {
      resource_id: world.git,
      domain: { name: 'a.git.corp.example', proxy_ips: ['100.96.0.1', 'fd00::1'] },
    },
  ];
  for (const payload of bad) {
    request(alice.socket, payload);
    const failed = await alice.socket.event('authorization_creation_failed');
    assert.deepEqual(failed.payload, { resource_id: world.git, reason: 'forbidden' });
  }
  assert.equal(world.portal.hub.counters().invalidDomainRequests, before + bad.length);
  await gateway.socket.none((f) => f.event === 'authorize_flow', 200);
  request(alice.socket, {
    resource_id: world.git,
    domain: { name: 'A.git.corp.example.', proxy_ips: ['100.96.0.9'] },
  });
  await alice.socket.event('authorization_created');
  alice.socket.close();
  gateway.socket.close();
});

void test("a stale flow_authorized (the flow was replaced) does not create the client's authorization", async () => {
  const gateway = await joinGateway(world, world.siteId, false);
  const alice = await joinClient(world, world.alice);
  request(alice.socket, { resource_id: world.wiki });
  const first = await gateway.socket.event('authorize_flow');
  request(alice.socket, { resource_id: world.wiki });
  const second = await gateway.socket.event('authorize_flow');
  const answer = (ref: unknown): void =>
    gateway.socket.send({
      topic: 'gateway',
      event: 'flow_authorized',
      payload: { ref },
      ref: null,
    });
  answer(first.payload.ref);
  await alice.socket.none((f) => f.event === 'authorization_created', 150);
  answer(second.payload.ref);
  const created = await alice.socket.event('authorization_created');
  assert.equal(
    created.payload.preshared_key,
    (second.payload.client as { preshared_key: string }).preshared_key,
  );
  alice.socket.close();
  gateway.socket.close();
});

void test('a flow whose flow_authorized does not come in time: the client hears offline, the gateway reject_access', async () => {
  const gateway = await joinGateway(world, world.siteId, false);
  const alice = await joinClient(world, world.alice);
  request(alice.socket, { resource_id: world.wiki });
  const flow = await gateway.socket.event('authorize_flow');
  const failed = await alice.socket.event('authorization_creation_failed', 3000);
  assert.deepEqual(failed.payload, { resource_id: world.wiki, reason: 'offline' });
  const reject = await gateway.socket.event('reject_access', 3000);
  assert.deepEqual(reject.payload, {
    client_id: (flow.payload.client as { id: string }).id,
    resource_id: world.wiki,
  });
  alice.socket.close();
  gateway.socket.close();
});

void test('a client token is bound to its first device; an actor has at most MAX_DEVICES_PER_ACTOR devices', async () => {
  const token = clientToken(world.bob);
  const first = await connected(world.portal, '/client/websocket', token.text);
  const key = wgKey();
  assert.equal(
    status(await first.reply('client', 'phx_join', joinPayload('dev-bound', key))),
    'ok',
  );
  first.close();
  const second = await connected(world.portal, '/client/websocket', token.text);
  const other = await second.reply('client', 'phx_join', joinPayload('dev-other'));
  assert.equal(status(other), 'error');
  assert.equal(
    (other.payload.response as { reason: string }).reason,
    'token_bound_to_another_device',
  );
  // The same device again is fine.
  assert.equal(
    status(await second.reply('client', 'phx_join', joinPayload('dev-bound', key))),
    'ok',
  );
  second.close();

  const carol = world.storage.createActor({
    accountId: world.accountId,
    kind: 'user',
    name: 'carol',
    now: Date.now(),
  }).id;
  for (let i = 0; i < MAX_DEVICES_PER_ACTOR; i += 1) {
    world.storage.upsertDevice({
      accountId: world.accountId,
      actorId: carol,
      externalId: `carol-${i}`,
      name: `carol-${i}`,
      publicKey: wgKey(),
      now: Date.now(),
    });
  }
  const socket = await connected(world.portal, '/client/websocket', clientToken(carol).text);
  const refused = await socket.reply('client', 'phx_join', joinPayload('carol-new'));
  assert.equal((refused.payload.response as { reason: string }).reason, 'too_many_devices');
  // A device she has already may join.
  const known = await connected(world.portal, '/client/websocket', clientToken(carol).text);
  const device = world.storage.findDeviceByExternalId(world.accountId, carol, 'carol-3');
  assert.ok(device);
  assert.equal(
    status(await known.reply('client', 'phx_join', joinPayload('carol-3', device.publicKey))),
    'ok',
  );
  assert.ok(world.portal.hub.counters().clientJoinRefusals.too_many_devices >= 1);
  socket.close();
  known.close();
});

void test('a join with a public key another device of the account holds is refused', async () => {
  const alice = await joinClient(world, world.alice);
  const bob = await connected(world.portal, '/client/websocket', clientToken(world.bob).text);
  const before = world.portal.hub.counters().clientJoinRefusals.public_key_in_use;
  const reply = await bob.reply('client', 'phx_join', joinPayload('dev-thief', alice.publicKey));
  assert.equal(status(reply), 'error');
  assert.equal((reply.payload.response as { reason: string }).reason, 'public_key_in_use');
  assert.equal(world.portal.hub.counters().clientJoinRefusals.public_key_in_use, before + 1);
  alice.socket.close();
  bob.close();
});

void test('dropped messages: one log line per reason per connection per interval, the rest counted', async () => {
  const alice = await joinClient(world, world.alice);
  const start = lines.length;
  const suppressed = world.portal.hub.counters().dropLogsSuppressed;
  for (let i = 0; i < 10; i += 1) alice.socket.send(Buffer.from([1, 2, 3]));
  await alice.socket.heartbeat();
  const logged = lines.slice(start).filter((l) => l.includes('dropped a message (binary'));
  assert.equal(logged.length, 1, JSON.stringify(logged));
  assert.equal(world.portal.hub.counters().dropLogsSuppressed, suppressed + 9);
  assert.equal(world.portal.hub.counters().dropped.binary >= 10, true);
  alice.socket.close();
});

void test("config_changed: the account's ranges change and joined clients hear the new ones", async () => {
  const alice = await joinClient(world, world.alice);
  world.storage.updateAccount(world.accountId, {
    ranges: { proxyIpv4: '100.100.0.0/16' },
    now: Date.now(),
  });
  world.portal.hub.mapper.markDirty(world.accountId);
  const changed = await alice.socket.event('config_changed', 5000);
  assert.equal(
    (changed.payload.address_ranges as { proxy_ipv4: string }).proxy_ipv4,
    '100.100.0.0/16',
  );
  assert.equal(
    (changed.payload.interface as { ipv4: string }).ipv4,
    (alice.init.payload.interface as { ipv4: string }).ipv4,
  );
  // Nothing changed since: no second one.
  world.portal.hub.mapper.markDirty(world.accountId);
  await alice.socket.none((f) => f.event === 'config_changed', 200);
  alice.socket.close();
});

void test("a disabled actor's client is cut off and its gateway gets reject_access for its flows", async () => {
  const gateway = await joinGateway(world);
  const dave = world.storage.createActor({
    accountId: world.accountId,
    kind: 'user',
    name: 'dave',
    now: Date.now(),
  }).id;
  world.storage.addMembership(world.eng, dave, Date.now());
  world.portal.hub.mapper.markDirty(world.accountId);
  const client = await joinClient(world, dave);
  request(client.socket, { resource_id: world.wiki });
  await client.socket.event('authorization_created');
  const flow = await gateway.socket.event('authorize_flow');
  world.storage.updateActor(dave, { disabled: true, now: Date.now() });
  world.portal.hub.mapper.markDirty(world.accountId);
  assert.deepEqual((await client.socket.event('disconnect', 5000)).payload, {
    reason: 'token_expired',
  });
  const reject = await gateway.socket.event('reject_access', 3000);
  assert.deepEqual(reject.payload, {
    client_id: (flow.payload.client as { id: string }).id,
    resource_id: world.wiki,
  });
  gateway.socket.close();
});
