import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DROP_REASONS,
  UNATTRIBUTED_DROP_REASONS,
  MAX_CLIENT_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  type ConnectedTunnelStatus,
} from '@gatehouse/protocol';
import {
  CONTROL_SOCKET_LIMITS,
  RequestError,
  SOCKET_MODE,
  ServiceClient,
  ServiceClientError,
  ServiceServer,
  SocketInUseError,
  type AuthorizationPolicy,
  type ControlSocketLimits,
  type PeerCredentials,
  type RequestHandlers,
} from '../src/index.ts';
import { silentLogger } from '@gatehouse/logging';
import { skipLoudly } from '@gatehouse/test-support';

const NO_DNS_RESOURCES = { patterns: [], stubRunning: false, stubAddresses: [], upstreams: [] };

const status: ConnectedTunnelStatus = {
  state: 'connected',
  workerRestarts: 0,
  interfaceName: 'gh-test',
  listenPort: 51820,
  cryptoProvider: 'test',
  peers: [
    {
      publicKey: 'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=',
      endpoint: '192.0.2.1:51820',
      allowedIps: ['10.0.0.0/8'],
      rxBytes: 10,
      txBytes: 20,
      rxPackets: 1,
      txPackets: 2,
      drops: Object.fromEntries(
        DROP_REASONS.map((r) => [r, 0]),
      ) as ConnectedTunnelStatus['peers'][0]['drops'],
      lastHandshakeAt: 1_700_000_000_000,
      persistentKeepalive: null,
    },
  ],
  noRoute: 0,
  unattributedDrops: Object.fromEntries(
    UNATTRIBUTED_DROP_REASONS.map((r) => [r, 0]),
  ) as ConnectedTunnelStatus['unattributedDrops'],
  dns: {
    servers: [],
    searchDomains: [],
    reapplied: 0,
    checkFailures: 0,
    applied: false,
    reason: 'not yet supported',
  },
  dnsResources: NO_DNS_RESOURCES,
  controlSocket: {
    refusedConnections: 0,
    idleClosed: 0,
    slowClosed: 0,
    badRequests: 0,
    refusedRequests: 0,
    handlerErrors: 0,
    internalErrors: 0,
  },
  logLinesLost: 0,
};

const allowEveryone: AuthorizationPolicy = () => ({ allowed: true });

function tempSocketPath(): { socketPath: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-ipc-'));
  return { dir, socketPath: join(dir, 'run', 'tunnel.sock') };
}

/** The service runs as this test's user here, not necessarily root. */
function connectClient(socketPath: string): Promise<ServiceClient> {
  return ServiceClient.connect({ socketPath, serviceUid: process.geteuid?.() ?? 0 });
}

async function startServer(
  overrides: Partial<RequestHandlers> = {},
  authorize: AuthorizationPolicy = allowEveryone,
  limits: Partial<ControlSocketLimits> = {},
): Promise<{
  server: ServiceServer;
  socketPath: string;
  seenPeers: PeerCredentials[];
  cleanup: () => Promise<void>;
}> {
  const { socketPath, dir } = tempSocketPath();
  const seenPeers: PeerCredentials[] = [];
  const handlers: RequestHandlers = {
    status: (_params, context) => {
      seenPeers.push(context.peer);
      return status;
    },
    down: () => ({ stopping: true, serviceExits: false }),
    'set-dns-resources': () => NO_DNS_RESOURCES,
    'start-tunnel': () => status,
    'apply-tunnel': () => status,
    'start-portal-tunnel': () => status,
    ...overrides,
  };
  const server = await ServiceServer.start({
    socketPath,
    serviceVersion: '0.1.0-test',
    handlers,
    authorize,
    limits,
  });
  return {
    server,
    socketPath,
    seenPeers,
    cleanup: async () => {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A client speaking raw bytes, to send what a well-behaved client never would. */
class RawClient {
  readonly socket: Socket;
  readonly #frames: unknown[] = [];
  readonly #waiters: ((frame: unknown) => void)[] = [];
  #buffer = '';
  readonly closed: Promise<void>;

  constructor(socketPath: string) {
    this.socket = connect({ path: socketPath });
    this.socket.setEncoding('utf8');
    this.socket.on('data', (chunk: string) => {
      this.#buffer += chunk;
      for (let end = this.#buffer.indexOf('\f'); end !== -1; end = this.#buffer.indexOf('\f')) {
        const frame: unknown = JSON.parse(this.#buffer.slice(0, end));
        this.#buffer = this.#buffer.slice(end + 1);
        const waiter = this.#waiters.shift();
        if (waiter) waiter(frame);
        else this.#frames.push(frame);
      }
    });
    this.socket.on('error', () => {});
    this.closed = new Promise((resolve) => this.socket.once('close', () => resolve()));
  }

  send(text: string): void {
    this.socket.write(text);
  }

  next(): Promise<unknown> {
    const frame = this.#frames.shift();
    if (frame !== undefined) return Promise.resolve(frame);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no frame within 2 s')), 2000);
      this.#waiters.push((f) => {
        clearTimeout(timer);
        resolve(f);
      });
    });
  }
}

void test('the service says Hello first, with its protocol version', async () => {
  const { socketPath, cleanup } = await startServer();
  try {
    const client = await connectClient(socketPath);
    assert.deepEqual(client.hello, {
      protocolVersion: PROTOCOL_VERSION,
      serviceVersion: '0.1.0-test',
    });
    client.close();
  } finally {
    await cleanup();
  }
});

void test('requests round-trip and the handler sees the peer credentials', async () => {
  const { socketPath, seenPeers, cleanup } = await startServer();
  try {
    const client = await connectClient(socketPath);
    assert.deepEqual(await client.request('status', {}), status);
    assert.deepEqual(await client.request('down', {}), { stopping: true, serviceExits: false });
    assert.equal(seenPeers[0]?.pid, process.pid);
    assert.equal(seenPeers[0]?.uid, process.getuid?.());
    client.close();
  } finally {
    await cleanup();
  }
});

void test('handler failures come back in the one error shape', async (t) => {
  const cases: {
    name: string;
    status: RequestHandlers['status'];
    code: string;
    message: RegExp;
    counted: 'refusedRequests' | 'handlerErrors';
  }[] = [
    {
      name: 'a RequestError keeps its code and message',
      status: () => {
        throw new RequestError('not-running', 'the tunnel is stopping');
      },
      code: 'not-running',
      message: /the tunnel is stopping/,
      counted: 'refusedRequests',
    },
    {
      name: 'any other error is internal and does not leak its text',
      status: () => {
        throw new Error('secret detail');
      },
      code: 'internal',
      message: /^(?!.*secret).*status/,
      counted: 'handlerErrors',
    },
    {
      name: 'an invalid result is internal',
      status: () => ({ ...status, listenPort: -1 }),
      code: 'internal',
      message: /invalid "status" result/,
      counted: 'handlerErrors',
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const { server, socketPath, cleanup } = await startServer({ status: c.status });
      try {
        const client = await connectClient(socketPath);
        await assert.rejects(client.request('status', {}), (error: unknown) => {
          assert.ok(error instanceof ServiceClientError);
          assert.equal(error.code, c.code);
          assert.match(error.message, c.message);
          return true;
        });
        assert.equal(server.counters[c.counted], 1);
        client.close();
      } finally {
        await cleanup();
      }
    });
  }
});

void test('bad frames get an error response and the connection keeps serving', async (t) => {
  const { socketPath, cleanup } = await startServer();
  try {
    const raw = new RawClient(socketPath);
    assert.equal(((await raw.next()) as { type: string }).type, 'hello');
    const cases: { name: string; frame: string; code: string; id: number | null }[] = [
      { name: 'malformed JSON', frame: '{"type":"request",', code: 'bad-request', id: null },
      { name: 'not an object', frame: '42', code: 'bad-request', id: null },
      {
        name: 'unknown message type',
        frame: '{"type":"hello","data":{}}',
        code: 'bad-request',
        id: null,
      },
      {
        name: "node-ipc's reserved event name",
        frame: '{"type":"connect","data":{}}',
        code: 'bad-request',
        id: null,
      },
      {
        name: 'prototype key as type',
        frame: '{"type":"__proto__","data":{}}',
        code: 'bad-request',
        id: null,
      },
      {
        name: 'unknown request kind',
        frame: JSON.stringify({ type: 'request', data: { id: 5, kind: 'reboot', params: {} } }),
        code: 'unknown-request',
        id: 5,
      },
      {
        name: 'schema-invalid params',
        frame: JSON.stringify({
          type: 'request',
          data: { id: 6, kind: 'status', params: { all: 1 } },
        }),
        code: 'bad-request',
        id: 6,
      },
    ];
    for (const c of cases) {
      await t.test(c.name, async () => {
        raw.send(`${c.frame}\f`);
        const reply = (await raw.next()) as {
          type: string;
          data: { id: unknown; ok: boolean; error: { code: string } };
        };
        assert.equal(reply.type, 'response');
        assert.equal(reply.data.ok, false);
        assert.equal(reply.data.id, c.id);
        assert.equal(reply.data.error.code, c.code);
      });
    }
    raw.send(
      `${JSON.stringify({ type: 'request', data: { id: 9, kind: 'status', params: {} } })}\f`,
    );
    const answer = (await raw.next()) as { data: { id: number; ok: boolean } };
    assert.deepEqual([answer.data.id, answer.data.ok], [9, true]);
    raw.socket.destroy();
  } finally {
    await cleanup();
  }
});

void test('a portal token in a refused request is never echoed nor logged, even at debug', async () => {
  const token = 'gh.dG9rZW4taWQtaGVyZQ.bm90LWZvci10aGUtbG9ncy1vci1lcnJvcnMtZXZlcg';
  const lines: string[] = [];
  const record = (message: string) => lines.push(message);
  const { socketPath, dir } = tempSocketPath();
  const server = await ServiceServer.start({
    socketPath,
    serviceVersion: '1',
    handlers: unusedHandlers,
    authorize: allowEveryone,
    logger: { ...silentLogger, debug: record, info: record, warn: record, error: record },
  });
  const raw = new RawClient(socketPath);
  try {
    assert.equal(((await raw.next()) as { type: string }).type, 'hello');
    const start = {
      portalUrl: 'https://portal.example',
      token,
      interfaceName: 'gatehouse0',
      dnsControl: 'auto',
      internetResource: true,
      lanBypass: true,
    };
    const broken = [
      { ...start, token: `${token} ` },
      { ...start, interfaceName: token },
      { ...start, extra: token },
      { ...start, lanBypass: token },
    ];
    const replies: string[] = [];
    for (const [index, params] of broken.entries()) {
      raw.send(
        `${JSON.stringify({ type: 'request', data: { id: index, kind: 'start-portal-tunnel', params } })}\f`,
      );
      const reply = (await raw.next()) as { data: { ok: boolean; error: { code: string } } };
      assert.equal(reply.data.ok, false);
      assert.equal(reply.data.error.code, 'bad-request');
      replies.push(JSON.stringify(reply));
    }
    raw.send(`{"type":"request","data":{"id":9,"kind":"start-portal-tunnel","params":"${token}\f`);
    replies.push(JSON.stringify(await raw.next()));
    for (const text of [...replies, ...lines]) {
      assert.ok(!text.includes(token.slice(3, 20)), text);
      assert.ok(!text.includes(token.slice(-20)), text);
    }
    assert.equal(server.counters.badRequests, broken.length + 1);
  } finally {
    raw.socket.destroy();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

void test('an oversized message gets message-too-large, that connection closes, others are unaffected', async () => {
  const { server, socketPath, cleanup } = await startServer();
  try {
    const bystander = await connectClient(socketPath);
    const raw = new RawClient(socketPath);
    await raw.next();
    raw.send('{"type":"request","data":"' + 'x'.repeat(MAX_CLIENT_MESSAGE_BYTES + 10));
    const reply = (await raw.next()) as { data: { ok: boolean; error: { code: string } } };
    assert.equal(reply.data.error.code, 'message-too-large');
    await raw.closed;
    assert.deepEqual(await bystander.request('status', {}), status);
    assert.equal(server.connectionCount, 1);
    bystander.close();
  } finally {
    await cleanup();
  }
});

void test('a second server on a live socket refuses to start and leaves the first serving', async () => {
  const { socketPath, cleanup } = await startServer();
  try {
    await assert.rejects(
      ServiceServer.start({
        socketPath,
        serviceVersion: 'x',
        handlers: unusedHandlers,
        authorize: allowEveryone,
      }),
      (error: unknown) => error instanceof SocketInUseError && error.message.includes(socketPath),
    );
    const client = await connectClient(socketPath);
    assert.deepEqual(await client.request('status', {}), status);
    client.close();
  } finally {
    await cleanup();
  }
});

void test('a stale socket left by a killed process is replaced', async () => {
  const { socketPath, dir } = tempSocketPath();
  try {
    await leaveStaleSocket(socketPath);
    assert.ok(statSync(socketPath).isSocket());
    const client = await connectClient(socketPath).catch((error: unknown) => error);
    assert.ok(
      client instanceof ServiceClientError && client.code === 'not-running',
      String(client),
    );
    assert.match(client.message, /stale/);

    const server = await ServiceServer.start({
      socketPath,
      serviceVersion: '1',
      handlers: unusedHandlers,
      authorize: allowEveryone,
    });
    const fresh = await connectClient(socketPath);
    assert.equal(fresh.hello.serviceVersion, '1');
    fresh.close();
    await server.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

void test('a path that is not a socket is never replaced', async () => {
  const { socketPath, dir } = tempSocketPath();
  try {
    mkdirSync(join(dir, 'run'));
    writeFileSync(socketPath, 'precious');
    await assert.rejects(
      ServiceServer.start({
        socketPath,
        serviceVersion: '1',
        handlers: unusedHandlers,
        authorize: allowEveryone,
      }),
      /exists and is not a socket/,
    );
    assert.equal(existsSync(socketPath), true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

void test('an unauthorized peer gets an unauthorized error and is disconnected', async () => {
  const denyMe: AuthorizationPolicy = (peer) =>
    peer.uid === process.getuid?.()
      ? { allowed: false, reason: `uid ${peer.uid} is not allowed here` }
      : { allowed: true };
  const { server, socketPath, cleanup } = await startServer({}, denyMe);
  try {
    await assert.rejects(connectClient(socketPath), (error: unknown) => {
      assert.ok(error instanceof ServiceClientError);
      assert.equal(error.code, 'unauthorized');
      assert.match(error.message, /is not allowed here/);
      return true;
    });
    const raw = new RawClient(socketPath);
    const reply = (await raw.next()) as {
      type: string;
      data: { id: null; error: { code: string } };
    };
    assert.equal(reply.type, 'response');
    assert.equal(reply.data.error.code, 'unauthorized');
    raw.send(
      `${JSON.stringify({ type: 'request', data: { id: 1, kind: 'status', params: {} } })}\f`,
    );
    await raw.closed;
    assert.equal(server.connectionCount, 0);
  } finally {
    await cleanup();
  }
});

void test('the socket is mode 0660, owned by the service, in a directory created 0755', async () => {
  const { socketPath, cleanup } = await startServer();
  try {
    const socket = statSync(socketPath);
    assert.equal(socket.mode & 0o777, 0o660);
    assert.equal(socket.uid, process.geteuid?.());
    assert.equal(socket.gid, process.getegid?.());
    assert.equal(statSync(join(socketPath, '..')).mode & 0o777, 0o755);
  } finally {
    await cleanup();
  }
});

void test('events reach connected clients', async () => {
  const { server, socketPath, cleanup } = await startServer();
  try {
    const client = await connectClient(socketPath);
    const received = new Promise((resolve) => client.onEvent(resolve));
    server.broadcast(() => ({
      event: 'status-changed',
      status: {
        state: 'disconnecting',
        interfaceName: 'gh0',
        failure: null,
        controlSocket: status.controlSocket,
        logLinesLost: 0,
      },
    }));
    assert.deepEqual(await received, {
      event: 'status-changed',
      status: {
        state: 'disconnecting',
        interfaceName: 'gh0',
        failure: null,
        controlSocket: status.controlSocket,
        logLinesLost: 0,
      },
    });
    client.close();
  } finally {
    await cleanup();
  }
});

void test('stopping removes the socket; clients then hear that the service is not running', async () => {
  const { server, socketPath, cleanup } = await startServer();
  const client = await connectClient(socketPath);
  const pending = client
    .request('status', {}, { timeoutMs: 60_000 })
    .catch((error: unknown) => error);
  await server.stop();
  assert.equal(existsSync(socketPath), false);
  const outcome = await pending;
  assert.ok(
    outcome instanceof ServiceClientError || JSON.stringify(outcome) === JSON.stringify(status),
    String(outcome),
  );
  await assert.rejects(connectClient(socketPath), (error: unknown) => {
    assert.ok(error instanceof ServiceClientError);
    assert.equal(error.code, 'not-running');
    assert.match(error.message, /no socket at/);
    return true;
  });
  await cleanup();
});

void test('a service speaking another protocol version is refused with a clear message', async () => {
  const { socketPath, dir } = tempSocketPath();
  mkdirSync(join(dir, 'run'));
  const future = createServer((socket) => {
    socket.write(
      `${JSON.stringify({ type: 'hello', data: { protocolVersion: 99, serviceVersion: '9.0.0' } })}\f`,
    );
  });
  await new Promise<void>((resolve) => future.listen(socketPath, resolve));
  try {
    await assert.rejects(connectClient(socketPath), (error: unknown) => {
      assert.ok(error instanceof ServiceClientError);
      assert.equal(error.code, 'incompatible');
      assert.match(error.message, new RegExp(`protocol 99.*speaks ${PROTOCOL_VERSION}`));
      return true;
    });
  } finally {
    await new Promise((resolve) => future.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  }
});

const unusedHandlers: RequestHandlers = {
  status: () => status,
  down: () => ({ stopping: true, serviceExits: false }),
  'set-dns-resources': () => NO_DNS_RESOURCES,
  'start-tunnel': () => status,
  'apply-tunnel': () => status,
  'start-portal-tunnel': () => status,
};

async function leaveStaleSocket(socketPath: string): Promise<void> {
  mkdirSync(join(socketPath, '..'), { recursive: true });
  const script = `require('node:net').createServer().listen(${JSON.stringify(socketPath)}, () => console.log('up'))`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve) => child.stdout.once('data', resolve));
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
}

function skipUnlessRoot(t: TestContext): boolean {
  if (process.getuid?.() === 0) return false;
  skipLoudly(t, 'needs root: files owned by another uid');
  return true;
}

const NOBODY = 65534;

void test('a socket directory others could change is refused, and nothing is created in it', async (t) => {
  const cases: { name: string; prepare: (directory: string) => void; message: RegExp }[] = [
    {
      name: 'writable by others',
      prepare: (directory) => chmodSync(directory, 0o777),
      message: /is writable by its group or others \(mode 0777\).*chmod go-w/,
    },
    {
      name: 'writable by its group',
      prepare: (directory) => chmodSync(directory, 0o775),
      message: /is writable by its group or others \(mode 0775\)/,
    },
    {
      name: 'owned by another uid',
      prepare: (directory) => {
        if (process.getuid?.() === 0) chownSync(directory, NOBODY, NOBODY);
      },
      message: /is owned by uid 65534, not by the service \(uid 0\)/,
    },
    {
      name: 'a symbolic link to a good directory',
      prepare: (directory) => {
        const target = `${directory}-target`;
        mkdirSync(target, { mode: 0o755 });
        rmSync(directory, { recursive: true });
        symlinkSync(target, directory);
      },
      message: /is not a directory \(a symbolic link\?\): refusing to serve in it/,
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async (tt) => {
      if (c.name === 'owned by another uid' && skipUnlessRoot(tt)) return;
      const { socketPath, dir } = tempSocketPath();
      try {
        const directory = join(socketPath, '..');
        mkdirSync(directory, { mode: 0o755 });
        c.prepare(directory);
        await assert.rejects(
          ServiceServer.start({ socketPath, serviceVersion: '1', handlers: unusedHandlers }),
          c.message,
        );
        assert.deepEqual(readdirSync(directory), [], 'no socket, no lock');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

void test('the lock file is never opened through a symbolic link', async () => {
  const { socketPath, dir } = tempSocketPath();
  try {
    mkdirSync(join(socketPath, '..'), { mode: 0o755 });
    const target = join(dir, 'elsewhere');
    symlinkSync(target, `${socketPath}.lock`);
    await assert.rejects(
      ServiceServer.start({ socketPath, serviceVersion: '1', handlers: unusedHandlers }),
      /tunnel\.sock\.lock is a symbolic link: refusing to use it as the lock/,
    );
    assert.equal(existsSync(target), false, 'the link was followed');
    assert.equal(existsSync(socketPath), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

void test('the socket is born 0660 whatever the umask, with a setgid directory’s group', async (t) => {
  if (skipUnlessRoot(t)) return;
  const { socketPath, dir } = tempSocketPath();
  const umask = process.umask(0);
  try {
    const directory = join(socketPath, '..');
    mkdirSync(directory);
    chownSync(directory, 0, NOBODY);
    chmodSync(directory, 0o2755);
    const server = await ServiceServer.start({
      socketPath,
      serviceVersion: '1',
      handlers: unusedHandlers,
    });
    assert.equal(process.umask(0), 0, 'the umask is given back');
    const socket = statSync(socketPath);
    assert.equal(socket.mode & 0o777, SOCKET_MODE);
    assert.equal(socket.gid, NOBODY);
    assert.equal(statSync(`${socketPath}.lock`).mode & 0o777, 0o600);
    await server.stop();
    assert.equal(existsSync(socketPath), false);
  } finally {
    process.umask(umask);
    rmSync(dir, { recursive: true, force: true });
  }
});

void test('the client refuses a socket the service does not own or others could replace', async (t) => {
  const { socketPath, cleanup } = await startServer();
  try {
    const me = process.geteuid?.() ?? 0;
    const expectUntrusted = async (serviceUid: number, message: RegExp) =>
      assert.rejects(ServiceClient.connect({ socketPath, serviceUid }), (error: unknown) => {
        assert.ok(error instanceof ServiceClientError);
        assert.equal(error.code, 'untrusted');
        assert.match(error.message, message);
        return true;
      });
    await t.test('a socket owned by another uid than the service’s', () =>
      expectUntrusted(
        me + 1,
        new RegExp(`owned by uid ${me}, not by the service \\(uid ${me + 1}\\)`),
      ),
    );
    await t.test('a directory others may write to', async () => {
      const directory = join(socketPath, '..');
      chmodSync(directory, 0o777);
      try {
        await expectUntrusted(me, /tunnel\.sock: .*run is writable by others \(mode 0777\)/);
      } finally {
        chmodSync(directory, 0o755);
      }
    });
    await t.test('a directory above it that others may write to, unless it is sticky', async () => {
      const above = join(socketPath, '..', '..');
      const before = statSync(above).mode & 0o7777;
      try {
        chmodSync(above, 0o777);
        await expectUntrusted(me, /tunnel\.sock: .* is writable by others \(mode 0777\)/);
        chmodSync(above, 0o1777);
        const client = await ServiceClient.connect({ socketPath, serviceUid: me });
        client.close();
      } finally {
        chmodSync(above, before);
      }
    });
    await t.test('root is the service by default', async (tt) => {
      if (skipUnlessRoot(tt)) return;
      const client = await ServiceClient.connect({ socketPath });
      client.close();
    });
  } finally {
    await cleanup();
  }
});

void test('a connection that sends nothing is closed; one that sent a request may stay for events', async () => {
  const firstFrameTimeoutMs = 300;
  const { server, socketPath, cleanup } = await startServer({}, allowEveryone, {
    firstFrameTimeoutMs,
  });
  try {
    const silent = new RawClient(socketPath);
    const listener = await connectClient(socketPath);
    await listener.request('status', {});
    await silent.next();
    await silent.closed;
    assert.equal(server.counters.idleClosed, 1);
    await new Promise((resolve) => setTimeout(resolve, 2 * firstFrameTimeoutMs));
    const received = new Promise((resolve) => listener.onEvent(resolve));
    server.broadcast(() => ({ event: 'status-changed', status }));
    assert.deepEqual(await received, { event: 'status-changed', status });
    assert.equal(server.counters.idleClosed, 1);
    listener.close();
  } finally {
    await cleanup();
  }
});

void test('a client that stops reading its events is closed; the others keep receiving', async () => {
  const maxSendBacklogBytes = 256 * 1024;
  const { server, socketPath, cleanup } = await startServer({}, allowEveryone, {
    maxSendBacklogBytes,
  });
  try {
    const stalled = new RawClient(socketPath);
    await stalled.next();
    stalled.send(
      `${JSON.stringify({ type: 'request', data: { id: 1, kind: 'status', params: {} } })}\f`,
    );
    await stalled.next();
    stalled.socket.pause();
    const reader = await connectClient(socketPath);
    let received = 0;
    reader.onEvent(() => received++);
    const big = {
      ...status,
      peers: Array.from(
        { length: 100 },
        () => status.peers[0] as ConnectedTunnelStatus['peers'][0],
      ),
    };
    let sent = 0;
    while (server.counters.slowClosed === 0 && sent < 400) {
      server.broadcast(() => ({ event: 'status-changed', status: big }));
      sent++;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    assert.equal(server.counters.slowClosed, 1);
    stalled.socket.resume();
    await stalled.closed;
    const last = new Promise((resolve) => reader.onEvent(resolve));
    server.broadcast(() => ({ event: 'status-changed', status }));
    await last;
    assert.equal(received, sent + 1, 'the reading client got every event');
    reader.close();
  } finally {
    await cleanup();
  }
});

void test('each uid may hold a bounded number of connections; refusals are counted', async () => {
  const { server, socketPath, cleanup } = await startServer();
  const clients: ServiceClient[] = [];
  try {
    for (let i = 0; i < CONTROL_SOCKET_LIMITS.maxConnectionsPerUid; i++) {
      clients.push(await connectClient(socketPath));
    }
    await assert.rejects(connectClient(socketPath), (error: unknown) => {
      assert.ok(error instanceof ServiceClientError);
      assert.equal(error.code, 'too-many-connections');
      assert.match(error.message, /already has 8 control connections \(the limit\)/);
      return true;
    });
    assert.equal(server.counters.refusedConnections, 1);
    clients.pop()?.close();
    const deadline = Date.now() + 2000;
    while (server.connectionCount >= CONTROL_SOCKET_LIMITS.maxConnectionsPerUid) {
      assert.ok(Date.now() < deadline, 'the closed connection was never forgotten');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    clients.push(await connectClient(socketPath));
  } finally {
    for (const client of clients) client.close();
    await cleanup();
  }
});

void test('beyond the service-wide connection cap a connection is dropped, counted and logged', async () => {
  const warnings: string[] = [];
  const { socketPath, dir } = tempSocketPath();
  const server = await ServiceServer.start({
    socketPath,
    serviceVersion: '1',
    handlers: unusedHandlers,
    authorize: allowEveryone,
    limits: { maxConnections: 2 },
    logger: { ...silentLogger, warn: (message) => warnings.push(message) },
  });
  const clients: ServiceClient[] = [];
  try {
    clients.push(await connectClient(socketPath), await connectClient(socketPath));
    const third = new RawClient(socketPath);
    await third.closed;
    const deadline = Date.now() + 2000;
    while (server.counters.refusedConnections === 0) {
      assert.ok(Date.now() < deadline, 'the drop was not counted');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(server.counters.refusedConnections, 1);
    assert.ok(
      warnings.some((w) => /the service already has 2 \(its limit\)/.test(w)),
      warnings.join('\n'),
    );
    assert.deepEqual(await clients[0]?.request('status', {}), status);
  } finally {
    for (const client of clients) client.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

void test('a throwing or rejecting handler, a bad frame and an unbuildable event are each counted, and the socket keeps serving', async () => {
  let failing = true;
  const { server, socketPath, cleanup } = await startServer({
    status: () => {
      if (failing) throw new Error('boom');
      return status;
    },
    'set-dns-resources': () => Promise.reject(new Error('later boom')),
  });
  try {
    const client = await connectClient(socketPath);
    await assert.rejects(client.request('status', {}), /failed inside the service/);
    await assert.rejects(
      client.request('set-dns-resources', { resources: [] }),
      /failed inside the service/,
    );
    server.broadcast(() => {
      throw new Error('cannot build');
    });
    const raw = new RawClient(socketPath);
    await raw.next();
    raw.send('not json\f');
    await raw.next();
    failing = false;
    assert.deepEqual(await client.request('status', {}), status);
    assert.deepEqual(server.counters, {
      refusedConnections: 0,
      idleClosed: 0,
      slowClosed: 0,
      badRequests: 1,
      refusedRequests: 0,
      handlerErrors: 2,
      internalErrors: 1,
    });
    raw.socket.destroy();
    client.close();
  } finally {
    await cleanup();
  }
});

void test('a throwing authorization policy costs that connection only', async () => {
  let calls = 0;
  const { server, socketPath, cleanup } = await startServer({}, () => {
    calls++;
    if (calls === 1) throw new Error('policy broke');
    return { allowed: true };
  });
  try {
    const raw = new RawClient(socketPath);
    await raw.closed;
    assert.equal(server.counters.internalErrors, 1);
    const client = await connectClient(socketPath);
    assert.deepEqual(await client.request('status', {}), status);
    client.close();
  } finally {
    await cleanup();
  }
});
