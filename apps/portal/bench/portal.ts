/**
 * The portal under many clients: N simulated clients open a WebSocket to `/client/websocket`
 * with their own token, join the "client" channel, receive `init` and heartbeat, against one
 * portal (`runServe`, SQLite in a temp dir) running in a child process so its RSS and CPU are
 * measured alone.
 *
 *   node apps/portal/bench/portal.ts [--clients 5000] [--rate 500] [--tls] [--heartbeats 2]
 *                                    [--heartbeat-interval 10000]
 *
 * The open-file limit: each side holds one descriptor per client, so the bench raises its own
 * soft RLIMIT_NOFILE to the hard limit with `prlimit --pid <own pid>` (util-linux) before
 * anything opens, and the portal child inherits it; it stops with a clear message when the hard
 * limit is below what N clients need.
 *
 * Reports the join rate used, TLS on/off, join latency (from starting the connection to `init`)
 * p50/p99, heartbeat round trip p50/p99, the portal's RSS with every client connected and its
 * CPU time over the run; the last line is exactly
 * `portal: clients=<n> join_p99_ms=<ms> rss_mb=<mb>`.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';

interface ChildReady {
  type: 'ready';
  port: number;
}
interface ChildStats {
  type: 'stats';
  rssBytes: number;
  cpuUserUs: number;
  cpuSystemUs: number;
  heapUsedBytes: number;
  externalBytes: number;
  /** Event-loop utilisation since the previous stats request (0..1). */
  loopUtilization: number;
  sessions: number;
  joinBatches: number;
  largestJoinBatch: number;
}
type ChildMessage = ChildReady | ChildStats;

const SELF = fileURLToPath(import.meta.url);

async function childMain(): Promise<void> {
  const { runServe } = await import('../src/serve.ts');
  const [database, tlsCert, tlsKey] = process.argv.slice(3);
  const portal = await runServe({
    database: database as string,
    listen: '127.0.0.1:0',
    tlsCert,
    tlsKey,
    upstreamDns: ['1.1.1.1'],
    handleSignals: true,
  });
  let lastElu = performance.eventLoopUtilization();
  process.on('message', (message: { type: string }) => {
    if (message.type === 'stats') {
      const elu = performance.eventLoopUtilization();
      const loopUtilization = performance.eventLoopUtilization(elu, lastElu).utilization;
      lastElu = elu;
      const cpu = process.cpuUsage();
      const memory = process.memoryUsage();
      const reply: ChildStats = {
        type: 'stats',
        rssBytes: memory.rss,
        heapUsedBytes: memory.heapUsed,
        externalBytes: memory.external + memory.arrayBuffers,
        loopUtilization,
        cpuUserUs: cpu.user,
        cpuSystemUs: cpu.system,
        sessions: portal.hub.sessionCount().clients,
        joinBatches: portal.hub.counters().joinBatches,
        largestJoinBatch: portal.hub.counters().largestJoinBatch,
      };
      process.send?.(reply);
    } else if (message.type === 'stop') {
      void portal.stop().then(() => process.exit(0));
    }
  });
  process.send?.({ type: 'ready', port: portal.port } satisfies ChildReady);
}

function raiseOpenFileLimit(needed: number): number {
  let hard = 0;
  let soft = 0;
  try {
    const out = execFileSync(
      'prlimit',
      ['--pid', String(process.pid), '--nofile', '--raw', '--noheadings', '--output=SOFT,HARD'],
      { encoding: 'utf8' },
    ).trim();
    const [s, h] = out.split(/\s+/);
    soft = s === 'unlimited' ? Infinity : Number(s);
    hard = h === 'unlimited' ? 1 << 20 : Number(h);
    if (soft < hard) {
      execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${hard}:${hard}`]);
      soft = hard;
    }
  } catch (error) {
    throw new Error(
      `bench: raising the open-file limit with prlimit failed: ${(error as Error).message}`,
      { cause: error },
    );
  }
  if (soft < needed) {
    throw new Error(
      `bench: ${needed} open files needed, the hard limit is ${hard}: raise it (ulimit -Hn as root, or /etc/security/limits.conf)`,
    );
  }
  return soft;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

function request(child: ChildProcess, type: string): Promise<ChildStats> {
  return new Promise((resolve) => {
    const onMessage = (message: ChildMessage): void => {
      if (message.type === 'stats') {
        child.off('message', onMessage);
        resolve(message);
      }
    };
    child.on('message', onMessage);
    child.send({ type });
  });
}

interface SimClient {
  ws: WebSocket;
  joinMs: number;
  heartbeatMs: number[];
}

/** One TLS context for every simulated client (a context per connection would load the CA store each time). */
const clientSecureContext = tls.createSecureContext({});

const DEVICES_PER_USER = 4;

function simulateClient(url: string, token: string, secure: boolean): Promise<SimClient> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      headers: { 'X-Authorization': `Bearer ${token}` },
      rejectUnauthorized: false,
      perMessageDeflate: false,
      ...(secure ? { secureContext: clientSecureContext } : {}),
    });
    const client: SimClient = { ws, joinMs: NaN, heartbeatMs: [] };
    const timer = setTimeout(() => reject(new Error('no init within 30 s')), 30_000);
    ws.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    ws.once('open', () => {
      ws.send(
        JSON.stringify({
          topic: 'client',
          event: 'phx_join',
          payload: {
            public_key: randomBytes(32).toString('base64'),
            device_id: randomBytes(8).toString('hex'),
            name: 'bench',
            os_name: 'Linux',
            os_version: '6',
          },
          ref: '1',
          join_ref: '1',
        }),
      );
    });
    let joined = false;
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as {
        event: string;
        ref: string | null;
        payload: { status?: string };
      };
      if (frame.event === 'phx_reply' && frame.ref === '1' && frame.payload.status !== 'ok') {
        clearTimeout(timer);
        reject(new Error(`join refused: ${JSON.stringify(frame.payload)}`));
      }
      if (frame.event === 'init' && !joined) {
        joined = true;
        client.joinMs = performance.now() - started;
        clearTimeout(timer);
        resolve(client);
      }
    });
  });
}

function heartbeat(client: SimClient, ref: string): Promise<void> {
  const sent = performance.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('heartbeat unanswered within 10 s')), 10_000);
    const onMessage = (data: Buffer): void => {
      const frame = JSON.parse(data.toString()) as { topic: string; ref: string | null };
      if (frame.topic === 'phoenix' && frame.ref === ref) {
        clearTimeout(timer);
        client.ws.off('message', onMessage);
        client.heartbeatMs.push(performance.now() - sent);
        resolve();
      }
    };
    client.ws.on('message', onMessage);
    client.ws.send(JSON.stringify({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref }));
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      clients: { type: 'string', default: '5000' },
      rate: { type: 'string', default: '500' },
      tls: { type: 'boolean', default: false },
      heartbeats: { type: 'string', default: '2' },
      'heartbeat-interval': { type: 'string', default: '10000' },
    },
  });
  const clients = Number(values.clients);
  const rate = Number(values.rate);
  const heartbeats = Number(values.heartbeats);
  const heartbeatIntervalMs = Number(values['heartbeat-interval']);
  if (
    !Number.isInteger(clients) ||
    clients < 1 ||
    !(rate > 0) ||
    !Number.isInteger(heartbeats) ||
    heartbeats < 0 ||
    !(heartbeatIntervalMs >= 0)
  ) {
    throw new Error(
      'usage: portal.ts [--clients N] [--rate JOINS_PER_S] [--tls] [--heartbeats K] [--heartbeat-interval MS]',
    );
  }
  const limit = raiseOpenFileLimit(clients + 256);
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-portal-'));
  let child: ChildProcess | undefined;
  try {
    const database = join(dir, 'portal.db');
    // Seed: one account, 50 users in 5 groups, 20 resources, a policy per group per 4 resources.
    const { openSqliteStorage } = await import('../src/db/sqlite-storage.ts');
    const storage = openSqliteStorage(database);
    const now = Date.now();
    const tokens: string[] = [];
    storage.transaction(() => {
      const account = storage.createAccount({ slug: 'bench', name: 'Bench', now });
      const site = storage.createSite(account.id, 'hq', now);
      const groups = Array.from({ length: 5 }, (_, i) =>
        storage.createGroup(account.id, `g${i}`, now),
      );
      // A few devices per person, well under MAX_DEVICES_PER_ACTOR (a person's devices are capped).
      const users = Array.from(
        { length: Math.max(1, Math.ceil(clients / DEVICES_PER_USER)) },
        (_, i) => {
          const user = storage.createActor({
            accountId: account.id,
            kind: 'user',
            name: `user${i}`,
            now,
          });
          storage.addMembership((groups[i % 5] as { id: string }).id, user.id, now);
          return user;
        },
      );
      for (let r = 0; r < 20; r++) {
        const resource = storage.createResource({
          accountId: account.id,
          siteId: site.id,
          type: 'cidr',
          name: `net${r}`,
          address: `10.${r}.0.0/16`,
          filters: [{ protocol: 'tcp', ports: [{ from: 443, to: 443 }] }],
          now,
        });
        storage.createPolicy({
          groupId: (groups[r % 5] as { id: string }).id,
          resourceId: resource.id,
          now,
        });
      }
      for (let i = 0; i < clients; i++) {
        const id = randomBytes(16).toString('base64url');
        const text = `gh.${id}.${randomBytes(32).toString('base64url')}`;
        storage.createToken({
          id,
          accountId: account.id,
          kind: 'headless_client',
          actorId: (users[i % users.length] as { id: string }).id,
          hash: createHash('sha256').update(text).digest('hex'),
          expiresAt: now + 86_400_000,
          now,
        });
        tokens.push(text);
      }
    });
    storage.close();
    const args = [database];
    if (values.tls) {
      const cert = join(dir, 'cert.pem');
      const key = join(dir, 'key.pem');
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
      args.push(cert, key);
    }
    // PORTAL_BENCH_CPU_PROF=DIR: the portal writes a V8 CPU profile there when it stops.
    const profileDir = process.env.PORTAL_BENCH_CPU_PROF;
    child = fork(SELF, ['--child', ...args], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      execArgv: [
        ...process.execArgv,
        ...(profileDir !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
      ],
    });
    const port = await new Promise<number>((resolve, reject) => {
      child?.once('message', (m: ChildMessage) =>
        m.type === 'ready' ? resolve(m.port) : reject(new Error('unexpected')),
      );
      child?.once('exit', (code) => reject(new Error(`the portal exited (${code})`)));
    });
    const url = `${values.tls ? 'wss' : 'ws'}://127.0.0.1:${port}/client/websocket`;
    const idle = await request(child, 'stats');
    console.log(
      `portal bench: ${clients} clients at ${rate} joins/s, TLS ${values.tls ? 'on' : 'off'}, open-file limit ${limit}, portal pid ${child.pid}, idle RSS ${(idle.rssBytes / 2 ** 20).toFixed(1)} MB`,
    );

    const started = performance.now();
    const generatorCpu = process.cpuUsage();
    const pending: Promise<SimClient>[] = [];
    for (let i = 0; i < clients; i++) {
      const due = started + (i / rate) * 1000;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      pending.push(simulateClient(url, tokens[i] as string, values.tls));
    }
    const settled = await Promise.allSettled(pending);
    const joinElapsed = (performance.now() - started) / 1000;
    const joinedClients = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const failures = settled.flatMap((s) =>
      s.status === 'rejected' ? [String((s.reason as Error).message)] : [],
    );
    const joinedStats = await request(child, 'stats');
    // Heartbeats as clients send them: every interval, each client at its own phase.
    for (let k = 0; k < heartbeats; k++) {
      await Promise.all(
        joinedClients.map(
          (c) =>
            new Promise<void>((resolve) => {
              setTimeout(() => {
                heartbeat(c, `hb${k}`)
                  .catch(() => failures.push('heartbeat'))
                  .finally(resolve);
              }, Math.random() * heartbeatIntervalMs);
            }),
        ),
      );
    }
    const loaded = await request(child, 'stats');
    const joins = joinedClients.map((c) => c.joinMs).sort((a, b) => a - b);
    const slices: string[] = [];
    const inOrder = joinedClients.map((c) => c.joinMs);
    for (let k = 0; k < 10; k++) {
      const part = inOrder
        .slice((k * inOrder.length) / 10, ((k + 1) * inOrder.length) / 10)
        .sort((a, b) => a - b);
      slices.push(percentile(part, 99).toFixed(0));
    }
    console.log(`join p99 by tenth of the run (ms): ${slices.join(' ')}`);
    const hbs = joinedClients.flatMap((c) => c.heartbeatMs).sort((a, b) => a - b);
    const cpuOf = (x: ChildStats): number => (x.cpuUserUs + x.cpuSystemUs) / 1e6;
    const joinCpuS = cpuOf(joinedStats) - cpuOf(idle);
    const heartbeatCpuS = cpuOf(loaded) - cpuOf(joinedStats);
    const heartbeatElapsed = (performance.now() - started) / 1000 - joinElapsed;
    // The higher of the two: with every client joined, and after the heartbeats.
    const rssMb = Math.max(joinedStats.rssBytes, loaded.rssBytes) / 2 ** 20;
    console.log(
      `joined ${joinedClients.length}/${clients} in ${joinElapsed.toFixed(1)} s (achieved ${(joinedClients.length / joinElapsed).toFixed(0)} joins/s), failures ${failures.length}${failures.length > 0 ? ` (first: ${failures[0]})` : ''}`,
    );
    console.log(
      `join latency (connect → init): p50 ${percentile(joins, 50).toFixed(1)} ms, p99 ${percentile(joins, 99).toFixed(1)} ms, max ${percentile(joins, 100).toFixed(1)} ms`,
    );
    console.log(
      `heartbeat round trip (${heartbeats} per client, one every ${heartbeatIntervalMs} ms each at its own phase): p50 ${percentile(hbs, 50).toFixed(1)} ms, p99 ${percentile(hbs, 99).toFixed(1)} ms`,
    );
    console.log(
      `portal process: ${loaded.sessions} sessions (joins in ${loaded.joinBatches} transactions, at most ${loaded.largestJoinBatch} in one), JS heap ${(loaded.heapUsedBytes / 2 ** 20).toFixed(1)} MB, external ${(loaded.externalBytes / 2 ** 20).toFixed(1)} MB; joining: event loop ${(joinedStats.loopUtilization * 100).toFixed(0)}% busy, CPU ${joinCpuS.toFixed(2)} s (${((joinCpuS / joinElapsed) * 100).toFixed(0)}% of one core); heartbeats: event loop ${(loaded.loopUtilization * 100).toFixed(0)}% busy, CPU ${heartbeatCpuS.toFixed(2)} s (${((heartbeatCpuS / Math.max(heartbeatElapsed, 0.001)) * 100).toFixed(0)}% of one core)`,
    );
    console.log(
      `portal RSS with every client joined ${(joinedStats.rssBytes / 2 ** 20).toFixed(1)} MB, after the heartbeats ${(loaded.rssBytes / 2 ** 20).toFixed(1)} MB`,
    );
    const generator = process.cpuUsage(generatorCpu);
    const generatorS = (generator.user + generator.system) / 1e6;
    console.log(
      `load generator (this process): CPU ${generatorS.toFixed(2)} s (${((generatorS / ((performance.now() - started) / 1000)) * 100).toFixed(0)}% of one core)`,
    );
    for (const c of joinedClients) c.ws.terminate();
    child.send({ type: 'stop' });
    await new Promise((r) => child?.once('exit', r));
    child = undefined;
    console.log(
      `portal: clients=${joinedClients.length} join_p99_ms=${percentile(joins, 99).toFixed(1)} rss_mb=${rssMb.toFixed(1)}`,
    );
    if (failures.length > 0) process.exitCode = 1;
  } finally {
    child?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') {
  void childMain();
} else {
  main().catch((error: unknown) => {
    console.error((error as Error).message);
    process.exit(1);
  });
}
