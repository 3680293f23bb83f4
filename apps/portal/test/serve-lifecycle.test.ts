/**
 * runServe: --listen parsing, one "listening on" line, the HTTP side and the channels on one
 * port, and a clean stop that closes sessions with phx_close and close code 1001.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Logger } from '@gatehouse/logging';
import { parseListen } from '../src/serve.ts';
import { joinClient, startWorld } from './channel-support.ts';

void test('parseListen takes HOST:PORT and [V6]:PORT and refuses the rest', () => {
  assert.deepEqual(parseListen('127.0.0.1:8080'), { host: '127.0.0.1', port: 8080 });
  assert.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0 });
  assert.deepEqual(parseListen('localhost:443'), { host: 'localhost', port: 443 });
  for (const bad of ['8080', '127.0.0.1', '::1:80', '1.2.3.4:70000', 'a:b', '']) {
    assert.throws(() => parseListen(bad), /--listen/, bad);
  }
});

void test('serve logs one listening line, serves pages and channels, and stops with phx_close and 1001', async () => {
  const lines: string[] = [];
  const logger: Logger = {
    debug: () => {},
    info: (m) => lines.push(m),
    warn: (m) => lines.push(m),
    error: (m) => lines.push(m),
  };
  const world = await startWorld({ logger });
  let stopped = false;
  try {
    assert.equal(lines.filter((l) => l.includes('listening on')).length, 1);
    assert.ok(lines.some((l) => l.includes(`listening on ${world.portal.url}`)));
    const page = await fetch(`${world.portal.url}/`);
    assert.equal(page.status, 200);
    const missing = await fetch(`${world.portal.url}/client/websocket`, {
      headers: { Accept: 'application/json' },
    });
    assert.ok(missing.status >= 400);
    const { socket, token } = await joinClient(world, world.alice);
    await world.portal.stop();
    stopped = true;
    const close = await socket.event('phx_close');
    assert.equal(close.topic, 'client');
    assert.equal(await socket.closed(), 1001);
    assert.ok(lines.some((l) => l.includes('portal: stopped')));
    // Nothing a token could be recognised by in the log.
    const secret = token.text.split('.')[2] as string;
    assert.ok(!lines.some((l) => l.includes(secret)));
    // stop() again is harmless.
    await world.portal.stop();
  } finally {
    if (!stopped) await world.portal.stop();
    await world.close();
  }
});

void test('serve refuses a port in use with a clear error', async () => {
  const world = await startWorld();
  try {
    const { runServe } = await import('../src/serve.ts');
    await assert.rejects(
      runServe({
        database: ':memory:',
        listen: `127.0.0.1:${world.portal.port}`,
        handleSignals: false,
      }),
      /--listen 127\.0\.0\.1:\d+: .*EADDRINUSE/,
    );
  } finally {
    await world.close();
  }
});
