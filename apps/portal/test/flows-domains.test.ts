/**
 * A client asking again for a resource it holds a flow to: another name of a wildcard DNS
 * resource goes to the same gateway as a new authorize_flow (a new ref, the same keys) carrying
 * that name, and the client gets authorization_created again. The same name again is re-sent
 * the same way rather than answered from memory: a client asks again mostly when its handshakes
 * fail, so the gateway may have lost the peer, and only its flow_authorized says it holds it;
 * the same keys leave its peer as it was. One preshared key per client-gateway pair.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startWorld, type Frame } from './channel-support.ts';
import { joinDevice, joinGatewayAs, newDevice, request, restart } from './flows-support.ts';

interface WireFlow {
  ref: string;
  client: { id: string; public_key: string; preshared_key: string };
  resource: { id: string };
  domain?: { name: string; proxy_ips: string[] };
}

const wire = (frame: Frame): WireFlow => frame.payload as unknown as WireFlow;

void test('another name of a DNS resource: authorize_flow again to the same gateway with that name; the same name again is re-sent too', async (t) => {
  let world = await startWorld();
  t.after(() => world.close());
  const first = await joinGatewayAs(world, 'gw-1');
  const device = newDevice(world, world.alice);
  const client = await joinDevice(world, device);
  const ask = (name: string, proxy: string): void =>
    request(client.socket, {
      resource_id: world.git,
      domain: { name, proxy_ips: [proxy] },
    });

  ask('a.git.corp.example', '100.96.0.1');
  const createdA = await client.socket.event('authorization_created');
  const flowA = wire(await first.socket.event('authorize_flow'));
  assert.deepEqual(flowA.domain, { name: 'a.git.corp.example', proxy_ips: ['100.96.0.1'] });
  // A second gateway of the site, now the least loaded: the flow stays where it is.
  const second = await joinGatewayAs(world, 'gw-2');

  const table: [string, string, string][] = [
    ['a new name', 'b.git.corp.example', '100.96.0.2'],
    ['the same name again', 'a.git.corp.example', '100.96.0.1'],
  ];
  const refs = new Set([flowA.ref]);
  for (const [what, name, proxy] of table) {
    ask(name, proxy);
    const flow = wire(await first.socket.event('authorize_flow'));
    assert.deepEqual(flow.domain, { name, proxy_ips: [proxy] }, what);
    assert.ok(!refs.has(flow.ref), `${what}: a new ref`);
    refs.add(flow.ref);
    assert.deepEqual(flow.client, flowA.client, `${what}: the same client key and PSK`);
    const created = await client.socket.event('authorization_created');
    assert.equal(created.payload.gateway_id, createdA.payload.gateway_id, what);
    assert.equal(created.payload.preshared_key, createdA.payload.preshared_key, what);
  }
  await second.socket.none((f) => f.event === 'authorize_flow', 100);

  // Another resource on the same gateway (the client says it has a tunnel to it): the pair's
  // preshared key again.
  request(client.socket, {
    resource_id: world.wiki,
    connected_gateway_ids: [createdA.payload.gateway_id],
  });
  const wiki = await client.socket.event('authorization_created');
  assert.equal(wiki.payload.gateway_id, createdA.payload.gateway_id);
  assert.equal(wiki.payload.preshared_key, createdA.payload.preshared_key);
  assert.equal(wire(await first.socket.event('authorize_flow')).resource.id, world.wiki);

  // Kept: one row per name; after a restart the gateway gets both names and wiki back.
  const gatewayId = String(createdA.payload.gateway_id);
  const rows = world.storage.listFlows(gatewayId);
  assert.deepEqual(rows.map((r) => r.domain?.name ?? '').sort(), [
    '',
    'a.git.corp.example',
    'b.git.corp.example',
  ]);
  assert.equal(new Set(rows.map((r) => r.presharedKey)).size, 1);
  for (const socket of [client.socket, first.socket, second.socket]) socket.assertValid();

  world = await restart(world);
  const back = await joinGatewayAs(world, 'gw-1');
  const restored = (back.init.payload.authorizations as WireFlow[])
    .map((f) => `${f.resource.id === world.git ? 'git' : 'wiki'} ${f.domain?.name ?? '-'}`)
    .sort();
  assert.deepEqual(restored, ['git a.git.corp.example', 'git b.git.corp.example', 'wiki -']);
  const refsBack = (back.init.payload.authorizations as WireFlow[]).map((f) => f.ref);
  assert.equal(new Set(refsBack).size, 3, 'a ref each');
  back.socket.close();
});
