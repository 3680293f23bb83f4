/**
 * The live side end to end on a real server over SQLite: join and init, policies deciding who is
 * authorized for what, revocation closing the session, a removed policy revoking access on both
 * sides, a gateway going offline.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  joinClient,
  joinGateway,
  resourceIds,
  startWorld,
  wgKey,
  type World,
} from './channel-support.ts';

let world: World;
before(async () => {
  world = await startWorld();
});
after(async () => {
  await world.close();
});

void test('a client joins: the device is recorded and init carries its addresses, DNS and its resources', async () => {
  const { socket, init, publicKey } = await joinClient(world, world.alice);
  const iface = init.payload.interface as Record<string, unknown>;
  assert.match(String(iface.ipv4), /^100\.(6[4-9]|[7-8]\d|9[0-5])\.\d+\.\d+$/);
  assert.match(String(iface.ipv6), /^fd00:2021:1111:/);
  assert.deepEqual(iface.upstream_dns, [{ protocol: 'ip_port', address: '1.1.1.1:53' }]);
  assert.equal(iface.search_domain, 'corp.example');
  assert.deepEqual(resourceIds(init), [world.wiki, world.git].sort());
  assert.deepEqual(init.payload.relays, []);
  const wiki = (init.payload.resources as Record<string, unknown>[]).find(
    (r) => r.id === world.wiki,
  );
  assert.equal(wiki?.status, 'offline');
  assert.deepEqual(wiki?.filters, [
    { protocol: 'tcp', port_range_start: 443, port_range_end: 443 },
  ]);
  const devices = world.storage.listDevices(world.accountId, world.alice);
  const device = devices.find((d) => d.publicKey === publicKey);
  assert.ok(device, 'the device was upserted');
  assert.equal(device.ipv4, iface.ipv4);
  assert.equal(device.name, 'laptop');
  assert.ok(device.lastSeenAt !== null);
  await socket.heartbeat();
  socket.close();
});

void test('policies decide: alice gets wiki through the gateway, bob gets forbidden; offline before a gateway', async () => {
  const alice = await joinClient(world, world.alice);
  const bob = await joinClient(world, world.bob);
  assert.deepEqual(resourceIds(bob.init), [world.db]);

  alice.socket.send({
    topic: 'client',
    event: 'request_authorization',
    payload: { resource_id: world.wiki },
    ref: '9',
  });
  const offline = await alice.socket.event('authorization_creation_failed');
  assert.deepEqual(offline.payload, { resource_id: world.wiki, reason: 'offline' });

  const gateway = await joinGateway(world);
  assert.deepEqual(gateway.init.payload.address_ranges, {
    tunnel_ipv4: '100.64.0.0/11',
    tunnel_ipv6: 'fd00:2021:1111::/107',
    proxy_ipv4: '100.96.0.0/11',
    proxy_ipv6: 'fd00:2021:1111:8000::/107',
  });
  assert.deepEqual(gateway.init.payload.authorizations, []);
  const iface = gateway.init.payload.interface as { ipv4: string; ipv6: string };
  // The site came online: both clients hear of their resources' new status.
  const update = await alice.socket.next(
    (f) => f.event === 'resource_created_or_updated' && f.payload.id === world.wiki,
  );
  assert.equal(update.payload.status, 'online');
  const bobUpdate = await bob.socket.event('resource_created_or_updated');
  assert.equal(bobUpdate.payload.id, world.db);

  alice.socket.send({
    topic: 'client',
    event: 'request_authorization',
    payload: { resource_id: world.wiki },
    ref: '10',
  });
  const created = await alice.socket.event('authorization_created');
  const flow = await gateway.socket.event('authorize_flow');
  assert.equal(created.payload.resource_id, world.wiki);
  assert.equal(created.payload.gateway_public_key, gateway.publicKey);
  assert.deepEqual(created.payload.gateway_endpoints, ['192.0.2.10:51820']);
  assert.equal(created.payload.gateway_ipv4, iface.ipv4);
  assert.match(String(created.payload.preshared_key), /^[A-Za-z0-9+/]{43}=$/);
  const client = flow.payload.client as Record<string, unknown>;
  assert.equal(client.public_key, alice.publicKey);
  assert.equal(client.preshared_key, created.payload.preshared_key);
  assert.equal(client.ipv4, (alice.init.payload.interface as { ipv4: string }).ipv4);
  assert.deepEqual((flow.payload.resource as { id: string; filters: unknown }).filters, [
    { protocol: 'tcp', port_range_start: 443, port_range_end: 443 },
  ]);
  const token = world.storage.findToken(alice.token.id);
  assert.equal(flow.payload.expires_at, token?.expiresAt);
  assert.equal(created.payload.expires_at, token?.expiresAt);

  // A DNS resource: the gateway hears the name and the client's proxy addresses.
  alice.socket.send({
    topic: 'client',
    event: 'request_authorization',
    payload: {
      resource_id: world.git,
      domain: { name: 'a.git.corp.example', proxy_ips: ['100.96.0.1', 'fd00:2021:1111:8000::1'] },
    },
    ref: '11',
  });
  await alice.socket.event('authorization_created');
  const dnsFlow = await gateway.socket.event('authorize_flow');
  assert.deepEqual(dnsFlow.payload.domain, {
    name: 'a.git.corp.example',
    proxy_ips: ['100.96.0.1', 'fd00:2021:1111:8000::1'],
  });

  // Bob asks for alice's resource, and for one that does not exist.
  const before = world.portal.hub.counters().authorizationFailures.forbidden;
  bob.socket.send({
    topic: 'client',
    event: 'request_authorization',
    payload: { resource_id: world.wiki },
    ref: '3',
  });
  const forbidden = await bob.socket.event('authorization_creation_failed');
  assert.deepEqual(forbidden.payload, { resource_id: world.wiki, reason: 'forbidden' });
  assert.equal(world.portal.hub.counters().authorizationFailures.forbidden, before + 1);
  bob.socket.send({
    topic: 'client',
    event: 'request_authorization',
    payload: { resource_id: '00000000-0000-4000-8000-000000000000' },
    ref: '4',
  });
  assert.equal(
    (await bob.socket.event('authorization_creation_failed')).payload.reason,
    'not_found',
  );
  await gateway.socket.none((f) => f.event === 'authorize_flow');

  // Removing alice's wiki policy: resource_deleted to her, reject_access to the gateway.
  world.storage.deletePolicy(world.policyWiki);
  world.portal.hub.mapper.markDirty(world.accountId);
  const deleted = await alice.socket.event('resource_deleted');
  assert.deepEqual(deleted.payload, { id: world.wiki });
  const rejected = await gateway.socket.event('reject_access');
  assert.deepEqual(rejected.payload, { client_id: client.id, resource_id: world.wiki });
  await bob.socket.none((f) => f.event === 'resource_deleted');
  // She can no longer ask for it.
  alice.socket.send({
    topic: 'client',
    event: 'request_authorization',
    payload: { resource_id: world.wiki },
    ref: '12',
  });
  assert.equal(
    (await alice.socket.event('authorization_creation_failed')).payload.reason,
    'forbidden',
  );
  world.storage.createPolicy({ groupId: world.eng, resourceId: world.wiki, now: Date.now() });
  world.portal.hub.mapper.markDirty(world.accountId);
  const back = await alice.socket.next(
    (f) => f.event === 'resource_created_or_updated' && f.payload.id === world.wiki,
  );
  assert.equal(back.payload.status, 'online');

  // The gateway goes: its site's resources read offline for the clients.
  gateway.socket.close();
  const wentOffline = await bob.socket.next(
    (f) => f.event === 'resource_created_or_updated' && f.payload.id === world.db,
  );
  assert.equal(wentOffline.payload.status, 'offline');
  const aliceOffline = await alice.socket.next(
    (f) => f.event === 'resource_created_or_updated' && f.payload.id === world.wiki,
  );
  assert.equal(aliceOffline.payload.status, 'offline');
  alice.socket.close();
  bob.socket.close();
});

void test('revoking a token through the storage closes its session with disconnect{token_expired}; others stay', async () => {
  const alice = await joinClient(world, world.alice);
  const bob = await joinClient(world, world.bob);
  // Another connection, as the CLI's `token revoke` would: noticed through data_version.
  const { openSqliteStorage } = await import('../src/db/sqlite-storage.ts');
  const other = openSqliteStorage(world.dbPath);
  try {
    assert.equal(other.revokeToken(alice.token.id, Date.now()), true);
  } finally {
    other.close();
  }
  const disconnect = await alice.socket.event('disconnect', 5000);
  assert.deepEqual(disconnect.payload, { reason: 'token_expired' });
  assert.equal(await alice.socket.closed(), 1000);
  await bob.socket.heartbeat();
  // A revoked token cannot come back.
  const again = await import('./channel-support.ts').then((m) =>
    m.connect(world.portal, '/client/websocket', alice.token.text),
  );
  assert.equal(again.ok, false);
  bob.socket.close();
});

void test('revocation in this process (sign-out) and expiry by time close the session too', async () => {
  const alice = await joinClient(world, world.alice);
  world.storage.revokeToken(alice.token.id, Date.now());
  world.portal.hub.mapper.tokenRevoked(alice.token.id);
  assert.deepEqual((await alice.socket.event('disconnect')).payload, { reason: 'token_expired' });

  const { makeToken } = await import('./channel-support.ts');
  const short = makeToken(world.storage, {
    accountId: world.accountId,
    kind: 'headless_client',
    actorId: world.bob,
    expiresAt: Date.now() + 600,
  });
  const bob = await joinClient(world, world.bob, short.text);
  assert.deepEqual((await bob.socket.event('disconnect', 3000)).payload, {
    reason: 'token_expired',
  });
  await bob.socket.closed();
});

void test("revoking a gateway's token closes it, and its site's resources go offline", async () => {
  const gateway = await joinGateway(world);
  const bob = await joinClient(world, world.bob);
  const db = (bob.init.payload.resources as { id: string; status: string }[]).find(
    (r) => r.id === world.db,
  );
  assert.equal(db?.status, 'online');
  world.storage.revokeToken(gateway.token.id, Date.now());
  world.portal.hub.mapper.markDirty(world.accountId);
  assert.deepEqual((await gateway.socket.event('disconnect')).payload, { reason: 'token_expired' });
  assert.equal(await gateway.socket.closed(), 1000);
  const offline = await bob.socket.next(
    (f) => f.event === 'resource_created_or_updated' && f.payload.id === world.db,
  );
  assert.equal(offline.payload.status, 'offline');
  gateway.socket.assertValid();
  bob.socket.close();
});

void test('a gateway that comes back gets the flows it held in its init, with the same keys', async () => {
  const first = await joinGateway(world);
  const alice = await joinClient(world, world.alice);
  alice.socket.send({
    topic: 'client',
    event: 'request_authorization',
    payload: { resource_id: world.wiki },
    ref: 'w',
  });
  const created = await alice.socket.event('authorization_created');
  first.socket.close();
  await alice.socket.next(
    (f) => f.event === 'resource_created_or_updated' && f.payload.status === 'offline',
  );
  const restoredBefore = world.portal.hub.counters().flowsRestored;
  const again = await joinGateway(world);
  const authorizations = again.init.payload.authorizations as {
    ref: string;
    client: { public_key: string; preshared_key: string };
    resource: { id: string };
  }[];
  assert.equal(authorizations.length, 1, JSON.stringify(authorizations));
  const [held] = authorizations;
  assert.equal(held?.resource.id, world.wiki);
  assert.equal(held?.client.public_key, alice.publicKey);
  assert.equal(held?.client.preshared_key, created.payload.preshared_key);
  assert.equal(world.portal.hub.counters().flowsRestored, restoredBefore + 1);
  // Its flow_authorized for a restored flow is taken quietly; the flow is live again: removing
  // the policy rejects it on the new session.
  const ack = await again.socket.reply('gateway', 'flow_authorized', { ref: held?.ref });
  assert.equal((ack.payload as { status: string }).status, 'ok');
  await alice.socket.none((f) => f.event === 'authorization_created');
  world.storage.deletePolicy(
    world.storage.findPolicyFor(world.eng, world.wiki)?.id ?? assert.fail('no policy'),
  );
  world.portal.hub.mapper.markDirty(world.accountId);
  assert.equal((await again.socket.event('reject_access')).payload.resource_id, world.wiki);
  world.storage.createPolicy({ groupId: world.eng, resourceId: world.wiki, now: Date.now() });
  world.portal.hub.mapper.markDirty(world.accountId);
  again.socket.close();
  alice.socket.close();
});

void test('a message sent right behind phx_join is answered after the join, in order', async () => {
  const { connected, makeToken } = await import('./channel-support.ts');
  const token = makeToken(world.storage, {
    accountId: world.accountId,
    kind: 'headless_client',
    actorId: world.bob,
  });
  const socket = await connected(world.portal, '/client/websocket', token.text);
  const join = {
    public_key: wgKey(),
    device_id: 'eager',
    name: 'eager',
    os_name: 'Debian',
    os_version: '13',
  };
  socket.send({ topic: 'client', event: 'phx_join', payload: join, ref: '1', join_ref: '1' });
  socket.send({
    topic: 'client',
    event: 'request_authorization',
    payload: { resource_id: world.wiki },
    ref: '2',
    join_ref: '1',
  });
  const failed = await socket.event('authorization_creation_failed');
  assert.deepEqual(failed.payload, { resource_id: world.wiki, reason: 'forbidden' });
  // The join's reply and init came first.
  const order = socket.frames.map((f) => f.event);
  assert.deepEqual(order.slice(0, 2), ['phx_reply', 'init'], JSON.stringify(order));
  assert.ok(world.portal.hub.counters().joinBatches >= 1);
  socket.close();
});
