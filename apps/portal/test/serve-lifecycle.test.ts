/**
 * runServe: --listen parsing, one "listening on" line, the HTTP side and the channels on one
 * port, and a clean stop that closes sessions with phx_close and close code 1001.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { WebSocket } from 'ws';
import { skipLoudly } from '@gatehouse/test-support';
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

void test("signing out over HTTP closes the token's live session at once", async () => {
  const world = await startWorld();
  try {
    const { socket, token } = await joinClient(world, world.alice);
    const response = await fetch(`${world.portal.url}/acme/sign_out`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${token.text}`, Accept: 'application/json' },
    });
    assert.ok(response.status < 300, `sign-out answered ${response.status}`);
    const disconnect = await socket.event('disconnect', 2000);
    assert.deepEqual(disconnect.payload, { reason: 'token_expired' });
    assert.equal(await socket.closed(), 1000);
    socket.assertValid();
  } finally {
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

void test('with --tls-cert/--tls-key the channels are WSS: a client verifying the CA joins', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-serve-tls-'));
  try {
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    try {
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:P-256',
          '-nodes',
          '-keyout',
          key,
          '-out',
          cert,
          '-days',
          '1',
          '-subj',
          '/CN=127.0.0.1',
          '-addext',
          'subjectAltName=IP:127.0.0.1',
        ],
        { stdio: 'ignore' },
      );
    } catch {
      skipLoudly(t, 'openssl is not installed: no certificate to serve TLS with');
      return;
    }
    const world = await startWorld({ tlsCert: cert, tlsKey: key });
    try {
      assert.match(world.portal.url, /^https:/);
      assert.ok(world.portal.server.tls);
      const token = (await import('./channel-support.ts')).makeToken(world.storage, {
        accountId: world.accountId,
        kind: 'headless_client',
        actorId: world.alice,
      });
      const url = `${world.portal.url.replace(/^https/, 'wss')}/client/websocket`;
      // Unverified certificates are refused by a verifying client.
      const refused = await new Promise<string>((resolve) => {
        const ws = new WebSocket(url, { headers: { 'X-Authorization': `Bearer ${token.text}` } });
        ws.once('open', () => resolve('open'));
        ws.once('error', (error) => resolve(error.message));
      });
      assert.notEqual(refused, 'open');
      const ws = new WebSocket(url, {
        headers: { 'X-Authorization': `Bearer ${token.text}` },
        ca: readFileSync(cert),
      });
      const frames: { event: string }[] = [];
      ws.on('message', (data) => frames.push(JSON.parse(data.toString()) as { event: string }));
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      ws.send(
        JSON.stringify({
          topic: 'client',
          event: 'phx_join',
          ref: '1',
          payload: {
            public_key: (await import('./channel-support.ts')).wgKey(),
            device_id: 'tls-dev',
            name: 'tls',
            os_name: 'Debian',
            os_version: '13',
          },
        }),
      );
      for (let i = 0; i < 100 && !frames.some((f) => f.event === 'init'); i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(
        frames.some((f) => f.event === 'init'),
        JSON.stringify(frames),
      );
      ws.terminate();
    } finally {
      await world.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
