/**
 * The portal against the project's own Phoenix channel client (@gatehouse/phoenix-channel's
 * PhoenixSocket): a client and a gateway join, heartbeat, the client is authorized through the
 * gateway; a revoked token signs the client out; a bad token is refused without retries.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { PhoenixSocket, type ChannelEvent } from '@gatehouse/phoenix-channel';
import { makeToken, startWorld, wgKey, type World } from './channel-support.ts';

let world: World;
before(async () => {
  world = await startWorld();
});
after(async () => {
  await world.close();
});

class Events {
  readonly list: ChannelEvent[] = [];
  push = (event: ChannelEvent): void => {
    this.list.push(event);
  };
  async wait(pred: (e: ChannelEvent) => boolean, what: string, ms = 5000): Promise<ChannelEvent> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const found = this.list.find(pred);
      if (found !== undefined) return found;
      await new Promise((r) => setTimeout(r, 10));
    }
    return assert.fail(`no ${what}; got ${JSON.stringify(this.list.map((e) => e.type))}`);
  }
  message(event: string): Promise<ChannelEvent> {
    return this.wait((e) => e.type === 'message' && e.event === event, event);
  }
}

function ws(path: string): string {
  return world.portal.url.replace(/^http/, 'ws') + path;
}

void test('a client and a gateway on PhoenixSocket: join, init, heartbeats, an authorization', async () => {
  const clientToken = makeToken(world.storage, {
    accountId: world.accountId,
    kind: 'headless_client',
    actorId: world.alice,
  });
  const gatewayToken = makeToken(world.storage, {
    accountId: world.accountId,
    kind: 'gateway',
    siteId: world.siteId,
  });
  const gatewayEvents = new Events();
  const gateway: PhoenixSocket = new PhoenixSocket({
    url: ws('/gateway/websocket'),
    token: gatewayToken.text,
    topic: 'gateway',
    joinPayload: { public_key: wgKey(), endpoints: ['192.0.2.20:51820'], device_id: 'gw-p' },
    heartbeatIntervalMs: 100,
    onEvent: (event) => {
      gatewayEvents.push(event);
      if (event.type === 'message' && event.event === 'authorize_flow') {
        gateway.push('flow_authorized', { ref: (event.payload as { ref: string }).ref });
      }
    },
  });
  const clientEvents = new Events();
  const client = new PhoenixSocket({
    url: ws('/client/websocket'),
    token: clientToken.text,
    topic: 'client',
    joinPayload: {
      public_key: wgKey(),
      device_id: randomBytes(6).toString('hex'),
      name: 'phoenix-laptop',
      os_name: 'Debian',
      os_version: '13',
    },
    heartbeatIntervalMs: 100,
    onEvent: clientEvents.push,
  });
  try {
    gateway.start();
    await gatewayEvents.wait((e) => e.type === 'joined', 'gateway joined');
    await gatewayEvents.message('init');
    client.start();
    await clientEvents.wait((e) => e.type === 'joined', 'client joined');
    const init = await clientEvents.message('init');
    const resources = (
      (init as { payload: { resources: { id: string; status: string }[] } }).payload.resources ?? []
    ).map((r): [string, string] => [r.id, r.status]);
    assert.deepEqual(
      new Map(resources).get(world.wiki),
      'online',
      'the wiki is online: its site has a gateway',
    );
    client.push('request_authorization', { resource_id: world.wiki });
    const created = (await clientEvents.message('authorization_created')) as {
      payload: { resource_id: string; gateway_endpoints: string[] };
    };
    assert.equal(created.payload.resource_id, world.wiki);
    assert.deepEqual(created.payload.gateway_endpoints, ['192.0.2.20:51820']);
    // Heartbeats every 100 ms are answered.
    await new Promise((r) => setTimeout(r, 600));
    assert.ok(client.stats.heartbeatsAnswered >= 3, JSON.stringify(client.stats));
    assert.ok(gateway.stats.heartbeatsAnswered >= 3, JSON.stringify(gateway.stats));
    assert.equal(client.stats.malformedFrames, 0);
    assert.equal(client.stats.reconnects, 0);

    // Revoked: disconnect{token_expired} signs the client out, without reconnecting.
    world.storage.revokeToken(clientToken.id, Date.now());
    world.portal.hub.mapper.tokenRevoked(clientToken.id);
    await clientEvents.wait((e) => e.type === 'signed-out', 'signed-out');
    await client.ended;
    assert.equal(client.stats.reconnects, 0);
  } finally {
    await client.close();
    await gateway.close();
  }
});

void test('PhoenixSocket with a bad token is signed out by the 401 invalid_token, not retried', async () => {
  const events = new Events();
  const client = new PhoenixSocket({
    url: ws('/client/websocket'),
    token: `gh.${'A'.repeat(22)}.${'B'.repeat(43)}`,
    topic: 'client',
    joinPayload: {},
    onEvent: events.push,
  });
  client.start();
  await events.wait((e) => e.type === 'signed-out', 'signed-out');
  await client.ended;
  assert.equal(client.stats.reconnects, 0);
  assert.equal(client.stats.joins, 0);
});
