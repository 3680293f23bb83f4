import assert from 'node:assert/strict';
import { once } from 'node:events';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { type IncomingMessage, type Server, createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { type TestContext, after, describe, it } from 'node:test';
import { skipLoudly } from '@gatehouse/test-support';
import {
  CaFileError,
  type ChannelEvent,
  PhoenixSocket,
  portalTrustedCas,
  readCaFile,
  resolvePortalCa,
  systemCaCertificates,
} from '@gatehouse/phoenix-channel';
import { type WebSocket, WebSocketServer } from 'ws';

interface Frame {
  topic: string;
  event: string;
  payload: unknown;
  ref: string | null;
  join_ref?: string | null;
}

/** A tiny Phoenix-ish server on 127.0.0.1: answers joins, heartbeats and pushes; refuses bad tokens. */
async function startServer(
  options: { dropFirstConnection?: boolean; tls?: { cert: Buffer; key: Buffer } } = {},
) {
  const upgrades: { authorization: string | undefined }[] = [];
  const received: Frame[] = [];
  const sockets = new Set<WebSocket>();
  const wss = new WebSocketServer({ noServer: true });
  const notFound = (
    _request: IncomingMessage,
    response: { statusCode: number; end(): void },
  ): void => {
    response.statusCode = 404;
    response.end();
  };
  const server: Server =
    options.tls === undefined ? createServer(notFound) : createHttpsServer(options.tls, notFound);
  let connections = 0;
  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    const authorization = request.headers['x-authorization'];
    upgrades.push({ authorization: typeof authorization === 'string' ? authorization : undefined });
    if (authorization !== 'Bearer good-token') {
      const body = JSON.stringify({
        type: 'about:blank',
        title: 'Unauthorized',
        status: 401,
        code: 'invalid_token',
      });
      socket.end(
        `HTTP/1.1 401 Unauthorized\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
      return;
    }
    wss.handleUpgrade(request, socket, head, (ws) => {
      connections += 1;
      sockets.add(ws);
      ws.on('close', () => sockets.delete(ws));
      if (options.dropFirstConnection === true && connections === 1) {
        ws.terminate();
        return;
      }
      ws.on('message', (data) => {
        const frame = JSON.parse(String(data)) as Frame;
        received.push(frame);
        const reply = (response: unknown, status = 'ok') =>
          ws.send(
            JSON.stringify({
              topic: frame.topic,
              event: 'phx_reply',
              ref: frame.ref,
              payload: { status, response },
            }),
          );
        if (frame.event === 'heartbeat') reply({});
        else if (frame.event === 'phx_join') {
          reply({});
          ws.send(
            JSON.stringify({
              topic: 'client',
              event: 'init',
              ref: null,
              payload: { hello: 'world' },
            }),
          );
          ws.send('not json at all'); // a malformed frame: the session must stay up
        } else if (frame.event === 'request_authorization') reply({ granted: true });
      });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    url: `${options.tls === undefined ? 'ws' : 'wss'}://127.0.0.1:${port}/client/websocket`,
    upgrades,
    received,
    sockets,
    async stop() {
      for (const ws of sockets) ws.terminate();
      wss.close();
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

/** Waits (bounded) until `predicate` holds. */
async function until(predicate: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A self-signed certificate for 127.0.0.1, made by openssl; undefined (skipped loudly) without it. */
function makeCertificate(t: TestContext): { cert: Buffer; key: Buffer } | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-phoenix-tls-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '2',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'pipe' },
    );
    return { cert: readFileSync(join(dir, 'cert.pem')), key: readFileSync(join(dir, 'key.pem')) };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      skipLoudly(t, 'no openssl binary to make a test certificate');
      return undefined;
    }
    throw error;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

void describe('PhoenixSocket over ws on 127.0.0.1', () => {
  const servers: { stop(): Promise<void> }[] = [];
  after(async () => {
    for (const server of servers) await server.stop();
  });

  void it('sends the bearer token, joins, heartbeats, gets pushes and replies, survives a bad frame, closes', async () => {
    const server = await startServer();
    servers.push(server);
    const events: ChannelEvent[] = [];
    const socket = new PhoenixSocket({
      url: server.url,
      token: 'good-token',
      topic: 'client',
      joinPayload: { public_key: 'k' },
      heartbeatIntervalMs: 50,
      onEvent: (event) => events.push(event),
    });
    socket.start();
    await until(() => socket.state === 'joined', 'the join');
    assert.equal(server.upgrades[0]?.authorization, 'Bearer good-token');
    await until(() => events.some((event) => event.type === 'message'), 'init');
    assert.deepEqual(
      events.find((event) => event.type === 'message'),
      { type: 'message', event: 'init', payload: { hello: 'world' } },
    );
    const ref = socket.push('request_authorization', { resource_id: 'r' });
    await until(() => events.some((event) => event.type === 'reply'), 'the reply');
    assert.deepEqual(
      events.find((event) => event.type === 'reply'),
      { type: 'reply', ref, status: 'ok', response: { granted: true } },
    );
    await until(() => socket.stats.heartbeatsAnswered >= 2, 'two heartbeats answered');
    assert.equal(socket.stats.malformedFrames, 1);
    assert.equal(socket.state, 'joined');
    await socket.close();
    assert.equal(socket.state, 'closed');
    await until(() => server.sockets.size === 0, 'the server to see the close');
    assert.ok(server.received.some((frame) => frame.event === 'phx_leave'));
  });

  void it('a 401 invalid_token ends in signed-out without retrying', async () => {
    const server = await startServer();
    servers.push(server);
    const events: ChannelEvent[] = [];
    const socket = new PhoenixSocket({
      url: server.url,
      token: 'bad-token',
      topic: 'client',
      joinPayload: {},
      backoff: { initialMs: 10, maxMs: 10 },
      onEvent: (event) => events.push(event),
    });
    socket.start();
    await socket.ended;
    assert.equal(socket.state, 'signed-out');
    assert.ok(events.some((event) => event.type === 'signed-out'));
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(server.upgrades.length, 1);
  });

  void it('reconnects and rejoins after the server drops the connection', async () => {
    const server = await startServer({ dropFirstConnection: true });
    servers.push(server);
    const events: ChannelEvent[] = [];
    const socket = new PhoenixSocket({
      url: server.url,
      token: 'good-token',
      topic: 'client',
      joinPayload: {},
      backoff: { initialMs: 20, maxMs: 50 },
      onEvent: (event) => events.push(event),
    });
    socket.start();
    await until(() => socket.state === 'joined', 'the rejoin');
    assert.equal(server.upgrades.length, 2);
    assert.ok(events.some((event) => event.type === 'disconnected'));
    assert.equal(socket.stats.reconnects, 1);
    await socket.close();
  });

  void it('backs off when nothing listens', async () => {
    const server = await startServer();
    const url = server.url;
    await server.stop();
    const events: ChannelEvent[] = [];
    const socket = new PhoenixSocket({
      url,
      topic: 'client',
      joinPayload: {},
      backoff: { initialMs: 10, maxMs: 20 },
      onEvent: (event) => events.push(event),
    });
    socket.start();
    await until(
      () => events.filter((event) => event.type === 'disconnected').length >= 2,
      'two failed attempts',
    );
    await socket.close();
    assert.equal(socket.state, 'closed');
  });

  void it('wss: verifies the server against the given CA, and refuses it without', async (t) => {
    const tls = makeCertificate(t);
    if (tls === undefined) return;
    const server = await startServer({ tls });
    servers.push(server);
    const trusted = new PhoenixSocket({
      url: server.url,
      token: 'good-token',
      topic: 'client',
      joinPayload: {},
      ca: tls.cert,
      onEvent: () => {},
    });
    trusted.start();
    await until(() => trusted.state === 'joined', 'the join over TLS');
    await trusted.close();

    const events: ChannelEvent[] = [];
    const untrusted = new PhoenixSocket({
      url: server.url,
      token: 'good-token',
      topic: 'client',
      joinPayload: {},
      backoff: { initialMs: 10_000 },
      onEvent: (event) => events.push(event),
    });
    untrusted.start();
    await until(() => events.some((event) => event.type === 'disconnected'), 'the refusal');
    const refusal = events.find((event) => event.type === 'disconnected');
    assert.match(
      refusal?.type === 'disconnected' ? refusal.reason : '',
      /self.signed|certificate|verify/i,
    );
    assert.equal(server.upgrades.length, 1, 'only the trusted socket reached the server');
    await untrusted.close();
  });

  /** Whether a socket with `options` joins the TLS server, or the reason it was refused. */
  const tryJoin = async (
    url: string,
    options: { caFile?: string; ca?: Buffer },
  ): Promise<{ joined: boolean; reason: string }> => {
    const events: ChannelEvent[] = [];
    const socket = new PhoenixSocket({
      url,
      token: 'good-token',
      topic: 'client',
      joinPayload: {},
      backoff: { initialMs: 10_000 },
      ...options,
      onEvent: (event) => events.push(event),
    });
    socket.start();
    await until(
      () => socket.state === 'joined' || events.some((event) => event.type === 'disconnected'),
      'a join or a refusal',
    );
    const refusal = events.find((event) => event.type === 'disconnected');
    const result = {
      joined: socket.state === 'joined',
      reason: refusal?.type === 'disconnected' ? refusal.reason : '',
    };
    await socket.close();
    return result;
  };

  void it('wss: the system store by default; --ca-file and GATEHOUSE_CA_FILE add a CA to it', async (t) => {
    const tls = makeCertificate(t);
    if (tls === undefined) return;
    const server = await startServer({ tls });
    servers.push(server);
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-phoenix-ca-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const caPath = join(dir, 'portal-ca.pem');
    writeFileSync(caPath, tls.cert);

    // The system roots are what a socket trusts without a CA file; they do not include ours.
    assert.ok(systemCaCertificates().length > 0, 'the system store has certificates');
    assert.ok(
      portalTrustedCas().length === systemCaCertificates().length,
      'no CA file: the system roots alone',
    );
    const without = await tryJoin(server.url, {});
    assert.equal(without.joined, false);
    assert.match(without.reason, /self.signed|certificate|verify/i);

    const withFlag = resolvePortalCa({ caFile: caPath, env: {} });
    assert.deepEqual(withFlag, { caFile: caPath, source: 'flag' });
    assert.equal((await tryJoin(server.url, { caFile: withFlag.caFile! })).joined, true);

    const fromEnv = resolvePortalCa({ env: { GATEHOUSE_CA_FILE: caPath } });
    assert.deepEqual(fromEnv, { caFile: caPath, source: 'env' });
    assert.equal((await tryJoin(server.url, { caFile: fromEnv.caFile! })).joined, true);

    // The flag wins over the environment; an empty variable is no CA file.
    assert.deepEqual(resolvePortalCa({ caFile: '/x.pem', env: { GATEHOUSE_CA_FILE: caPath } }), {
      caFile: '/x.pem',
      source: 'flag',
    });
    assert.deepEqual(resolvePortalCa({ env: { GATEHOUSE_CA_FILE: '' } }), {
      caFile: undefined,
      source: 'system',
    });
    // A CA file adds to the system roots rather than replacing them.
    const trusted = portalTrustedCas({ caFile: caPath });
    assert.equal(trusted.length, systemCaCertificates().length + 1);
  });

  void it('a missing CA file or one with no PEM certificate is a clear error', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-phoenix-ca-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const options = { url: 'wss://127.0.0.1:1/x', topic: 'client', joinPayload: {} };
    const missing = join(dir, 'missing.pem');
    assert.throws(
      () => new PhoenixSocket({ ...options, caFile: missing, onEvent: () => {} }),
      (error: Error) =>
        error instanceof CaFileError &&
        error.message.includes(missing) &&
        /no such file/.test(error.message),
    );
    const notPem = join(dir, 'not.pem');
    writeFileSync(notPem, 'this is not a certificate\n');
    assert.throws(
      () => new PhoenixSocket({ ...options, caFile: notPem, onEvent: () => {} }),
      (error: Error) =>
        error instanceof CaFileError && /holds no PEM certificate/.test(error.message),
    );
    assert.throws(() => readCaFile(dir), CaFileError, 'a directory');
  });
});
