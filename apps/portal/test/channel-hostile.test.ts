/**
 * Hostile input on the WebSocket endpoints: upgrades without or with a bad token get 401
 * invalid_token and change nothing; malformed frames on both channels are dropped, counted, and
 * leave the session running (a heartbeat is still answered afterwards).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  connect,
  joinClient,
  joinGateway,
  makeToken,
  startWorld,
  type TestSocket,
  type World,
} from './channel-support.ts';

let world: World;
const logLines: string[] = [];
const logger = {
  debug: (m: string) => logLines.push(m),
  info: (m: string) => logLines.push(m),
  warn: (m: string) => logLines.push(m),
  error: (m: string) => logLines.push(m),
};
before(async () => {
  world = await startWorld({
    logger,
    channels: {
      maxMessageBytes: 64 * 1024,
      maxPayload: 1024 * 1024,
      rateBurst: 200,
      flowTimeoutMs: 300,
      ratePerSecond: 100,
    },
  });
});
after(async () => {
  await world.close();
});

async function refused(
  path: string,
  token: string | undefined,
  headers: Record<string, string> = {},
): Promise<void> {
  const result = await connect(world.portal, path, token, headers);
  assert.equal(
    result.ok,
    false,
    `${path} with ${token === undefined ? 'no token' : 'a bad token'} was accepted`,
  );
  if (result.ok) return;
  assert.equal(result.status, 401);
  const body = JSON.parse(result.body) as { code: string; status: number };
  assert.equal(body.code, 'invalid_token');
  assert.equal(body.status, 401);
}

void test('a WebSocket without or with a bad token gets 401 invalid_token and changes nothing', async () => {
  const devicesBefore = world.storage.listDevices().length;
  const refusedBefore = world.portal.hub.counters().refusedUpgrades;
  const good = makeToken(world.storage, {
    accountId: world.accountId,
    kind: 'headless_client',
    actorId: world.alice,
  });
  const gatewayToken = makeToken(world.storage, {
    accountId: world.accountId,
    kind: 'gateway',
    siteId: world.siteId,
  });
  const expired = makeToken(world.storage, {
    accountId: world.accountId,
    kind: 'headless_client',
    actorId: world.alice,
    expiresAt: Date.now() - 1,
  });
  const revoked = makeToken(world.storage, {
    accountId: world.accountId,
    kind: 'headless_client',
    actorId: world.alice,
  });
  world.storage.revokeToken(revoked.id, Date.now());
  const [, id] = good.text.split('.');
  const cases: [string, string | undefined, Record<string, string>?][] = [
    ['/client/websocket', undefined],
    ['/gateway/websocket', undefined],
    ['/client/websocket', undefined, { 'X-Authorization': good.text }],
    ['/client/websocket', undefined, { Authorization: `Bearer ${good.text}` }],
    ['/client/websocket', 'garbage'],
    ['/client/websocket', `gh.${id}.${'A'.repeat(43)}`],
    ['/client/websocket', `' OR 1=1 --`],
    ['/client/websocket', expired.text],
    ['/client/websocket', revoked.text],
    ['/gateway/websocket', revoked.text],
    ['/client/websocket', gatewayToken.text],
    ['/gateway/websocket', good.text],
  ];
  for (const [path, token, headers] of cases) await refused(path, token, headers);
  const secret = good.text.split('.')[2] as string;
  assert.deepEqual(
    logLines.filter((l) => l.includes(secret)),
    [],
    'a token in the log',
  );
  const after = world.portal.hub.counters().refusedUpgrades;
  assert.equal(
    after.invalid_token +
      after.wrong_token_kind -
      refusedBefore.invalid_token -
      refusedBefore.wrong_token_kind,
    cases.length,
  );
  assert.equal(world.storage.listDevices().length, devicesBefore);
  const other = await connect(world.portal, '/elsewhere', good.text);
  assert.equal(other.ok, false);
  if (!other.ok) assert.equal(other.status, 404);
  // The good token still works afterwards.
  const ok = await connect(world.portal, '/client/websocket', good.text);
  assert.equal(ok.ok, true);
  if (ok.ok) ok.socket.close();
});

async function hostileFrames(socket: TestSocket, topic: string): Promise<void> {
  const before = world.portal.hub.counters();
  const junk: (string | Buffer)[] = [
    'garbage',
    '{"topic":',
    'null',
    '[1,2,3]',
    '"a string"',
    JSON.stringify({ topic: 42, event: 'phx_join', payload: {}, ref: '1' }),
    JSON.stringify({ topic, event: 7, payload: {} }),
    JSON.stringify({ topic, event: 'no_such_event', payload: {}, ref: 'x1' }),
    JSON.stringify({ topic: 'room:lobby', event: 'phx_join', payload: {}, ref: 'x2' }),
    JSON.stringify({ topic: 'phoenix', event: 'not_heartbeat', payload: {}, ref: 'x3' }),
    JSON.stringify({ topic, event: 'phx_join', payload: { public_key: 'nope' }, ref: 'x4' }),
    JSON.stringify({
      topic,
      event: 'request_authorization',
      payload: { resource_id: 12 },
      ref: 'x5',
    }),
    JSON.stringify({ topic, event: 'request_authorization', payload: 'str', ref: 'x6' }),
    JSON.stringify({ topic, event: 'x'.repeat(500), payload: {} }),
    Buffer.from([0, 1, 2, 3, 255]),
    `{"topic":"${topic}","event":"phx_join","payload":{"secret":"SECRET-IN-A-FRAME"`,
    JSON.stringify({ topic, event: 'SECRET-IN-AN-EVENT', payload: {}, ref: 'x8' }),
    JSON.stringify({
      topic,
      event: 'request_authorization',
      payload: { resource_id: 'SECRET-IN-A-PAYLOAD' },
      ref: 'x9',
    }),
    JSON.stringify({
      topic,
      event: 'request_authorization',
      payload: { resource_id: 'a', pad: 'x'.repeat(200 * 1024) },
      ref: 'x7',
    }),
  ];
  for (const frame of junk) socket.send(frame);
  await socket.heartbeat();
  assert.equal(socket.closeCode, undefined, 'the session was closed');
  assert.deepEqual(
    logLines.filter((l) => l.includes('SECRET')),
    [],
    'frame content in the log',
  );
  assert.ok(logLines.some((l) => l.includes('dropped a message (malformed: not JSON)')));
  const after = world.portal.hub.counters();
  const dropped = (c: typeof after): number => Object.values(c.dropped).reduce((a, b) => a + b, 0);
  assert.ok(
    dropped(after) - dropped(before) >= junk.length - 1,
    `dropped ${dropped(after) - dropped(before)} of ${junk.length}`,
  );
  assert.ok(after.dropped.too_large > before.dropped.too_large, 'the huge frame was counted');
  assert.ok(after.dropped.binary > before.dropped.binary);
  assert.ok(after.dropped.malformed - before.dropped.malformed >= 7);
  // Errors came back for the frames with a ref, on their topic.
  const errors = socket.frames.filter(
    (f) => f.event === 'phx_reply' && (f.payload as { status: string }).status === 'error',
  );
  assert.ok(errors.length >= 4, `${errors.length} error replies`);
  socket.frames.length = 0;
}

void test('malformed frames on the client channel leave the session running', async () => {
  const { socket } = await joinClient(world, world.alice);
  await hostileFrames(socket, 'client');
  // Still a working channel: an authorization request is answered.
  socket.send({
    topic: 'client',
    event: 'request_authorization',
    payload: { resource_id: world.db },
    ref: 'q',
  });
  assert.equal((await socket.event('authorization_creation_failed')).payload.reason, 'forbidden');
  socket.close();
});

void test('malformed frames on the gateway channel leave the session running', async () => {
  const { socket } = await joinGateway(world);
  await hostileFrames(socket, 'gateway');
  socket.close();
});

void test('frames before joining are refused with an error and the socket kept; a frame over maxPayload closes with 1009', async () => {
  const token = makeToken(world.storage, {
    accountId: world.accountId,
    kind: 'headless_client',
    actorId: world.bob,
  });
  const result = await connect(world.portal, '/client/websocket', token.text);
  assert.ok(result.ok);
  const socket = result.socket;
  const reply = await socket.reply('client', 'request_authorization', { resource_id: world.db });
  assert.deepEqual(reply.payload, { status: 'error', response: { reason: 'not_joined' } });
  await socket.heartbeat();
  const before = world.portal.hub.counters().oversizedFrames;
  socket.send('x'.repeat(2 * 1024 * 1024));
  assert.equal(await socket.closed(), 1009);
  for (let i = 0; i < 50 && world.portal.hub.counters().oversizedFrames === before; i++) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(world.portal.hub.counters().oversizedFrames, before + 1);
});

void test('a flood over the per-connection rate is dropped and counted; the session survives', async () => {
  const { socket } = await joinClient(world, world.bob);
  const before = world.portal.hub.counters().dropped.rate_limited;
  for (let i = 0; i < 400; i++)
    socket.send({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: `f${i}` });
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(world.portal.hub.counters().dropped.rate_limited > before, 'nothing was rate limited');
  await socket.heartbeat();
  socket.close();
});

void test('a gateway that never answers authorize_flow: the client hears offline; a stray flow_authorized is refused', async () => {
  const gateway = await joinGateway(world, world.siteId, false);
  const { socket } = await joinClient(world, world.bob);
  const before = world.portal.hub.counters().flowTimeouts;
  socket.send({
    topic: 'client',
    event: 'request_authorization',
    payload: { resource_id: world.db },
    ref: 'r1',
  });
  const flow = await gateway.socket.event('authorize_flow');
  const failed = await socket.event('authorization_creation_failed', 3000);
  assert.deepEqual(failed.payload, { resource_id: world.db, reason: 'offline' });
  await socket.none((f) => f.event === 'authorization_created');
  assert.equal(world.portal.hub.counters().flowTimeouts, before + 1);
  // Too late, and a ref never sent: refused with an error, the session kept.
  const late = await gateway.socket.reply('gateway', 'flow_authorized', { ref: flow.payload.ref });
  assert.equal((late.payload as { status: string }).status, 'error');
  const stray = await gateway.socket.reply('gateway', 'flow_authorized', { ref: 'no-such-ref' });
  assert.equal((stray.payload as { status: string }).status, 'error');
  await gateway.socket.heartbeat();
  await socket.none((f) => f.event === 'authorization_created');
  gateway.socket.close();
  socket.close();
});
