/**
 * Flows kept in the database (migration 0003-flows): a portal restarted over the same database
 * file gives a gateway that joins again its flows in init (same client key, preshared key and
 * expiry) and matches the client device joining again to them; a flow whose policy goes is
 * rejected and deleted; an expired one, or one whose gateway does not come back within the hold
 * (counted from the restart), is not handed back; a device's new key deletes its flows.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openSqliteStorage } from '../src/db/sqlite-storage.ts';
import { makeToken, startWorld, wgKey, type Frame, type World } from './channel-support.ts';
import {
  CHANNELS,
  joinDevice,
  joinGatewayAs,
  newDevice,
  request,
  restart,
  type Device,
} from './flows-support.ts';

interface WireFlow {
  ref: string;
  client: { id: string; public_key: string; preshared_key: string; ipv4: string };
  resource: { id: string };
  domain?: { name: string; proxy_ips: string[] };
  expires_at: number | null;
}

function authorizations(init: Frame): WireFlow[] {
  return init.payload.authorizations as WireFlow[];
}

/** Alice's device is authorized for wiki on gateway gw-1 of portal A. */
async function authorizeOnA(
  world: World,
  expiresAt?: number,
): Promise<{ device: Device; created: Frame; flow: Frame; gatewayId: string }> {
  const gateway = await joinGatewayAs(world, 'gw-1');
  const device = newDevice(world, world.alice, expiresAt);
  const client = await joinDevice(world, device);
  request(client.socket, { resource_id: world.wiki });
  const created = await client.socket.event('authorization_created');
  const flow = await gateway.socket.event('authorize_flow');
  gateway.socket.assertValid();
  client.socket.assertValid();
  return { device, created, flow, gatewayId: String(created.payload.gateway_id) };
}

void test('after a restart the gateway joining again gets its flow in init (same keys, same expiry); the device joining again is matched to it', async (t) => {
  let world = await startWorld();
  t.after(() => world.close());
  const a = await authorizeOnA(world);
  assert.equal(world.storage.listFlows(a.gatewayId).length, 1, 'kept once confirmed');

  world = await restart(world);
  // Another gateway of the site, with no flows, joins first: the least loaded.
  const other = await joinGatewayAs(world, 'gw-2');
  assert.deepEqual(authorizations(other.init), []);
  const gateway = await joinGatewayAs(world, 'gw-1');
  const [held, ...more] = authorizations(gateway.init);
  assert.deepEqual(more, []);
  const sent = a.flow.payload as unknown as WireFlow;
  assert.ok(held);
  assert.deepEqual(held.client, sent.client);
  assert.equal(held.client.preshared_key, a.created.payload.preshared_key);
  assert.equal(held.expires_at, sent.expires_at);
  assert.equal(held.resource.id, world.wiki);
  assert.equal(world.portal.hub.counters().flowsRestored, 1);
  // Expected, not acted on.
  const ack = await gateway.socket.reply('gateway', 'flow_authorized', { ref: held.ref });
  assert.equal((ack.payload as { status: string }).status, 'ok');

  const client = await joinDevice(world, a.device);
  request(client.socket, { resource_id: world.wiki });
  const created = await client.socket.event('authorization_created');
  assert.equal(created.payload.gateway_id, a.gatewayId);
  assert.equal(created.payload.preshared_key, a.created.payload.preshared_key);
  const again = (await gateway.socket.event('authorize_flow')).payload as unknown as WireFlow;
  assert.equal(again.client.preshared_key, held.client.preshared_key);
  await other.socket.none((f) => f.event === 'authorize_flow', 100);

  // The policy goes while B runs: reject_access, and the row is deleted.
  world.storage.deletePolicy(world.policyWiki);
  world.portal.hub.mapper.markDirty(world.accountId);
  const rejected = await gateway.socket.event('reject_access');
  assert.deepEqual(rejected.payload, { client_id: held.client.id, resource_id: world.wiki });
  assert.deepEqual(world.storage.listFlows(a.gatewayId), []);
  for (const socket of [client.socket, gateway.socket, other.socket]) socket.close();
});

void test('a policy removed while the restarted portal runs, before the client is back: reject_access and the row deleted', async (t) => {
  let world = await startWorld();
  t.after(() => world.close());
  const a = await authorizeOnA(world);
  world = await restart(world);
  const gateway = await joinGatewayAs(world, 'gw-1');
  assert.equal(authorizations(gateway.init).length, 1);
  world.storage.deletePolicy(world.policyWiki);
  world.portal.hub.mapper.markDirty(world.accountId);
  const rejected = await gateway.socket.event('reject_access');
  assert.equal(rejected.payload.resource_id, world.wiki);
  assert.deepEqual(world.storage.listFlows(a.gatewayId), []);
  gateway.socket.close();
});

void test('a flow that expired while the portal was down is not handed back, and is deleted', async (t) => {
  let world = await startWorld();
  t.after(() => world.close());
  const a = await authorizeOnA(world, Date.now() + 1_500);
  assert.equal(world.storage.listFlows(a.gatewayId).length, 1);
  await world.portal.stop();
  await new Promise((r) => setTimeout(r, 1_700));
  world = await restart(world);
  const gateway = await joinGatewayAs(world, 'gw-1');
  assert.deepEqual(authorizations(gateway.init), []);
  assert.deepEqual(world.storage.listFlows(a.gatewayId), []);
  assert.equal(world.portal.hub.counters().flowsDropped.expired, 1);
  gateway.socket.close();
});

void test('a flow no longer allowed when its gateway joins again is not handed back, and is deleted', async (t) => {
  let world = await startWorld();
  t.after(() => world.close());
  const a = await authorizeOnA(world);
  await world.portal.stop();
  // Changed while the portal was down, as the CLI's apply would.
  const other = openSqliteStorage(world.dbPath);
  try {
    other.deletePolicy(world.policyWiki);
  } finally {
    other.close();
  }
  world = await restart(world);
  const gateway = await joinGatewayAs(world, 'gw-1');
  assert.deepEqual(authorizations(gateway.init), []);
  assert.deepEqual(world.storage.listFlows(a.gatewayId), []);
  assert.equal(world.portal.hub.counters().flowsDropped.not_allowed, 1);
  gateway.socket.close();
});

void test('the hold starts again from the restart: a gateway that does not come back within it loses its flows', async (t) => {
  let world = await startWorld();
  t.after(() => world.close());
  const a = await authorizeOnA(world);
  // Sweeps every idleTimeoutMs (no socket stays on this portal).
  world = await restart(world, { flowHoldMs: 600, idleTimeoutMs: 200 });
  assert.equal(world.storage.listFlows(a.gatewayId).length, 1, 'still held after the restart');
  const deadline = Date.now() + 5_000;
  while (world.storage.listFlows(a.gatewayId).length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.deepEqual(world.storage.listFlows(a.gatewayId), []);
  assert.equal(world.portal.hub.counters().flowsDropped.hold_ended, 1);
});

void test("a device's new public key deletes its kept flows and its gateway gets reject_access", async (t) => {
  const world = await startWorld({ channels: CHANNELS });
  t.after(() => world.close());
  const gateway = await joinGatewayAs(world, 'gw-1');
  const device = newDevice(world, world.alice);
  const first = await joinDevice(world, device);
  request(first.socket, { resource_id: world.wiki });
  const created = await first.socket.event('authorization_created');
  const gatewayId = String(created.payload.gateway_id);
  assert.equal(world.storage.listFlows(gatewayId).length, 1);
  first.socket.close();
  const second = await joinDevice(world, device, wgKey());
  const rejected = await gateway.socket.event('reject_access');
  assert.equal(rejected.payload.resource_id, world.wiki);
  assert.deepEqual(world.storage.listFlows(gatewayId), []);
  second.socket.close();
  gateway.socket.close();
});

void test('storage: saveFlow replaces another gateway or key, adds domains, and the deletes', async (t) => {
  const world = await startWorld();
  t.after(() => world.close());
  const s = world.storage;
  const now = Date.now();
  const gw1 = s.upsertGateway({
    siteId: world.siteId,
    externalId: 'g1',
    name: 'g1',
    publicKey: wgKey(),
    now,
  }).id;
  const gw2 = s.upsertGateway({
    siteId: world.siteId,
    externalId: 'g2',
    name: 'g2',
    publicKey: wgKey(),
    now,
  }).id;
  const token = makeToken(s, {
    accountId: world.accountId,
    kind: 'headless_client',
    actorId: world.alice,
  });
  const key = wgKey();
  const device = s.upsertDevice({
    accountId: world.accountId,
    actorId: world.alice,
    externalId: 'dev-storage',
    name: 'laptop',
    publicKey: key,
    now,
  });
  const psk = wgKey();
  const base = {
    gatewayId: gw1,
    deviceId: device.id,
    resourceId: world.git,
    tokenId: token.id,
    clientPublicKey: key,
    presharedKey: psk,
    expiresAt: now + 60_000,
    now,
  };
  /** The gateway's rows as their names ('' for no domain), sorted. */
  const names = (gatewayId: string): string[] =>
    s
      .listFlows(gatewayId)
      .map((f) => f.domain?.name ?? '')
      .sort();

  s.saveFlow({ ...base, domain: { name: 'a.git.corp.example', proxyIps: ['100.96.0.1'] } });
  s.saveFlow({ ...base, domain: { name: 'B.git.corp.example.', proxyIps: ['100.96.0.2'] } });
  // The same name again (another case, new proxy addresses): one row, updated.
  s.saveFlow({ ...base, domain: { name: 'A.git.corp.example', proxyIps: ['100.96.0.3'] } });
  assert.deepEqual(names(gw1), ['A.git.corp.example', 'B.git.corp.example.']);
  const first = s.listFlows(gw1).find((f) => f.domain?.name === 'A.git.corp.example');
  assert.deepEqual(first?.domain?.proxyIps, ['100.96.0.3']);
  assert.equal(first?.presharedKey, psk);
  assert.deepEqual(first?.device, {
    actorId: world.alice,
    publicKey: key,
    ipv4: device.ipv4,
    ipv6: device.ipv6,
  });
  s.saveFlow({ ...base, resourceId: world.wiki, domain: null });

  // Another preshared key, then another gateway: the flow's earlier rows go.
  s.saveFlow({
    ...base,
    presharedKey: wgKey(),
    domain: { name: 'c.git.corp.example', proxyIps: ['100.96.0.4'] },
  });
  assert.deepEqual(names(gw1), ['', 'c.git.corp.example']);
  s.saveFlow({
    ...base,
    gatewayId: gw2,
    domain: { name: 'c.git.corp.example', proxyIps: ['100.96.0.4'] },
  });
  assert.deepEqual(names(gw1), ['']);
  assert.deepEqual(names(gw2), ['c.git.corp.example']);
  assert.deepEqual(s.listFlowGateways().sort(), [gw1, gw2].sort());

  assert.equal(s.deleteFlows({ deviceId: device.id, resourceId: world.git, gatewayId: gw1 }), 0);
  assert.equal(s.deleteExpiredFlows(now + 59_999), 0);
  assert.equal(s.deleteExpiredFlows(now + 60_000), 2);
  s.saveFlow({ ...base, resourceId: world.wiki, domain: null, expiresAt: null });
  assert.equal(s.deleteExpiredFlows(Number.MAX_SAFE_INTEGER), 0, 'null never expires');
  assert.equal(s.deleteFlows({ gatewayId: gw1 }), 1);
  assert.throws(
    () => s.saveFlow({ ...base, gatewayId: '00000000-0000-4000-8000-000000000000', domain: null }),
    /no such gateway or device/,
  );
});
