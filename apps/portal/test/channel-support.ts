/**
 * Test support for the portal's live side: a real `serve` on 127.0.0.1 port 0 over SQLite in a
 * temp dir, an account seeded through the storage, tokens made the way the portal makes them,
 * and a raw `ws` client that queues the frames it receives.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { parsePortalToClient, parsePortalToGateway } from '@gatehouse/protocol';
import type { PortalStorage, TokenKind } from '../src/db/storage.ts';
import { runServe, type RunningPortal, type ServeOptions } from '../src/serve.ts';

export interface Frame {
  topic: string;
  event: string;
  payload: Record<string, unknown>;
  ref: string | number | null;
  join_ref?: string | number | null;
}

export function wgKey(): string {
  return randomBytes(32).toString('base64');
}

/** A token of `kind` in the storage; returns its id and text. */
export function makeToken(
  storage: PortalStorage,
  input: {
    accountId: string;
    kind: TokenKind;
    actorId?: string;
    siteId?: string;
    expiresAt?: number | null;
  },
): { id: string; text: string } {
  const id = randomBytes(16).toString('base64url');
  const text = `gh.${id}.${randomBytes(32).toString('base64url')}`;
  storage.createToken({
    id,
    accountId: input.accountId,
    kind: input.kind,
    actorId: input.actorId ?? null,
    siteId: input.siteId ?? null,
    hash: createHash('sha256').update(text).digest('hex'),
    expiresAt: input.expiresAt === undefined ? Date.now() + 3_600_000 : input.expiresAt,
    now: Date.now(),
  });
  return { id, text };
}

export interface World {
  portal: RunningPortal;
  dir: string;
  dbPath: string;
  storage: PortalStorage;
  accountId: string;
  alice: string;
  bob: string;
  eng: string;
  ops: string;
  siteId: string;
  /** alice (eng) may reach it. */
  wiki: string;
  /** bob (ops) may reach it. */
  db: string;
  /** alice (eng) may reach it: a DNS resource. */
  git: string;
  policyWiki: string;
  close(): Promise<void>;
}

export async function startWorld(extra: Partial<ServeOptions> = {}): Promise<World> {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-portal-channel-'));
  const dbPath = join(dir, 'portal.db');
  const portal = await runServe({
    database: dbPath,
    listen: '127.0.0.1:0',
    handleSignals: false,
    upstreamDns: ['1.1.1.1'],
    searchDomain: 'corp.example',
    channels: { mapper: { pollIntervalMs: 100, batchDelayMs: 10 }, ...extra.channels },
    ...extra,
  });
  const storage = portal.storage;
  const now = Date.now();
  const account = storage.createAccount({ slug: 'acme', name: 'Acme', now });
  const alice = storage.createActor({ accountId: account.id, kind: 'user', name: 'alice', now }).id;
  const bob = storage.createActor({ accountId: account.id, kind: 'user', name: 'bob', now }).id;
  const eng = storage.createGroup(account.id, 'eng', now).id;
  const ops = storage.createGroup(account.id, 'ops', now).id;
  storage.addMembership(eng, alice, now);
  storage.addMembership(ops, bob, now);
  const siteId = storage.createSite(account.id, 'hq', now).id;
  const wiki = storage.createResource({
    accountId: account.id,
    siteId,
    type: 'cidr',
    name: 'wiki',
    address: '10.0.0.0/24',
    filters: [{ protocol: 'tcp', ports: [{ from: 443, to: 443 }] }],
    now,
  }).id;
  const db = storage.createResource({
    accountId: account.id,
    siteId,
    type: 'cidr',
    name: 'db',
    address: '10.0.1.0/24',
    now,
  }).id;
  const git = storage.createResource({
    accountId: account.id,
    siteId,
    type: 'dns',
    name: 'git',
    address: '*.git.corp.example',
    now,
  }).id;
  const policyWiki = storage.createPolicy({ groupId: eng, resourceId: wiki, now }).id;
  storage.createPolicy({ groupId: ops, resourceId: db, now });
  storage.createPolicy({ groupId: eng, resourceId: git, now });
  portal.hub.mapper.markDirty(account.id);
  return {
    portal,
    dir,
    dbPath,
    storage,
    accountId: account.id,
    alice,
    bob,
    eng,
    ops,
    siteId,
    wiki,
    db,
    git,
    policyWiki,
    async close() {
      await portal.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export class TestSocket {
  readonly ws: WebSocket;
  readonly frames: Frame[] = [];
  closeCode: number | undefined;
  private waiters: (() => void)[] = [];
  private nextRef = 1;

  /** Pushes that did not parse with the protocol package's schema for their channel. */
  readonly invalid: string[] = [];
  channel: 'client' | 'gateway' | undefined;
  /** A gateway that answers every authorize_flow with flow_authorized, as a real one does. */
  answerFlows = false;

  constructor(ws: WebSocket, channel?: 'client' | 'gateway') {
    this.ws = ws;
    this.channel = channel;
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as Frame;
      if (
        this.channel !== undefined &&
        frame.topic === this.channel &&
        !frame.event.startsWith('phx_')
      ) {
        const parse = this.channel === 'client' ? parsePortalToClient : parsePortalToGateway;
        const result = parse(frame.event, frame.payload);
        if (!result.ok) this.invalid.push(`${frame.event}: ${result.problem}`);
        else if (result.ok && 'invalidResources' in result && result.invalidResources.length > 0) {
          this.invalid.push(`${frame.event}: ${result.invalidResources.join('; ')}`);
        }
      }
      this.frames.push(frame);
      if (this.answerFlows && frame.event === 'authorize_flow') {
        this.send({
          topic: 'gateway',
          event: 'flow_authorized',
          payload: { ref: frame.payload.ref },
          ref: null,
        });
      }
      this.wake();
    });
    ws.on('close', (code) => {
      this.closeCode = code;
      this.wake();
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  send(value: unknown): void {
    this.ws.send(
      typeof value === 'string' || Buffer.isBuffer(value) ? value : JSON.stringify(value),
    );
  }

  ref(): string {
    return String(this.nextRef++);
  }

  /** The first queued frame matching `pred` (removed from the queue), waiting up to `ms`. */
  async next(pred: (f: Frame) => boolean, ms = 3000, what = 'a frame'): Promise<Frame> {
    const deadline = Date.now() + ms;
    while (true) {
      const i = this.frames.findIndex(pred);
      if (i >= 0) return this.frames.splice(i, 1)[0] as Frame;
      const left = deadline - Date.now();
      if (left <= 0) {
        assert.fail(
          `timed out waiting for ${what}; got ${JSON.stringify(this.frames.map((f) => f.event))}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  event(event: string, ms = 3000): Promise<Frame> {
    return this.next((f) => f.event === event, ms, event);
  }

  /** No frame matching `pred` arrives within `ms`. */
  async none(pred: (f: Frame) => boolean, ms = 300): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
    assert.equal(this.frames.filter(pred).length, 0, JSON.stringify(this.frames.filter(pred)));
  }

  async reply(topic: string, event: string, payload: unknown): Promise<Frame> {
    const ref = this.ref();
    this.send({ topic, event, payload, ref, join_ref: event === 'phx_join' ? ref : undefined });
    return this.next(
      (f) => f.event === 'phx_reply' && String(f.ref) === ref,
      5000,
      `the reply to ${event}`,
    );
  }

  async heartbeat(): Promise<void> {
    const reply = await this.reply('phoenix', 'heartbeat', {});
    assert.equal((reply.payload as { status: string }).status, 'ok');
  }

  async closed(ms = 3000): Promise<number> {
    const deadline = Date.now() + ms;
    while (this.closeCode === undefined && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.notEqual(this.closeCode, undefined, 'the socket was not closed');
    return this.closeCode as number;
  }

  /** Every push so far parsed with the protocol's schema. */
  assertValid(): void {
    assert.deepEqual(this.invalid, [], 'pushes the protocol schema refuses');
  }

  close(): void {
    this.assertValid();
    this.ws.terminate();
  }
}

export type UpgradeResult =
  { ok: true; socket: TestSocket } | { ok: false; status: number; body: string };

export function connect(
  portal: RunningPortal,
  path: string,
  token?: string,
  headers: Record<string, string> = {},
): Promise<UpgradeResult> {
  const url = portal.url.replace(/^http/, 'ws') + path;
  const allHeaders: Record<string, string> = { ...headers };
  if (token !== undefined) allHeaders['X-Authorization'] = `Bearer ${token}`;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: allHeaders, rejectUnauthorized: false });
    const channel = path.startsWith('/client')
      ? 'client'
      : path.startsWith('/gateway')
        ? 'gateway'
        : undefined;
    ws.once('open', () => resolve({ ok: true, socket: new TestSocket(ws, channel) }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ ok: false, status: res.statusCode ?? 0, body }));
    });
    ws.once('error', (error) => reject(error));
  });
}

export async function connected(
  portal: RunningPortal,
  path: string,
  token: string,
): Promise<TestSocket> {
  const result = await connect(portal, path, token);
  if (!result.ok) assert.fail(`upgrade refused: ${result.status} ${result.body}`);
  return result.socket;
}

/** A client of `actorId` joined: the socket and its init. */
export async function joinClient(
  world: World,
  actorId: string,
  token?: string,
): Promise<{
  socket: TestSocket;
  init: Frame;
  token: { id: string; text: string };
  publicKey: string;
}> {
  const t =
    token === undefined
      ? makeToken(world.storage, { accountId: world.accountId, kind: 'headless_client', actorId })
      : { id: '', text: token };
  const socket = await connected(world.portal, '/client/websocket', t.text);
  const publicKey = wgKey();
  const reply = await socket.reply('client', 'phx_join', {
    public_key: publicKey,
    device_id: `dev-${randomBytes(4).toString('hex')}`,
    name: 'laptop',
    os_name: 'Debian',
    os_version: '13',
  });
  assert.equal((reply.payload as { status: string }).status, 'ok', JSON.stringify(reply.payload));
  const init = await socket.event('init');
  return { socket, init, token: t, publicKey };
}

export async function joinGateway(
  world: World,
  siteId = world.siteId,
  answerFlows = true,
): Promise<{
  socket: TestSocket;
  init: Frame;
  token: { id: string; text: string };
  publicKey: string;
}> {
  const token = makeToken(world.storage, {
    accountId: world.accountId,
    kind: 'gateway',
    siteId,
    expiresAt: null,
  });
  const socket = await connected(world.portal, '/gateway/websocket', token.text);
  const publicKey = wgKey();
  const reply = await socket.reply('gateway', 'phx_join', {
    public_key: publicKey,
    device_id: 'gw-1',
    name: 'gw-1',
    endpoints: ['192.0.2.10:51820'],
  });
  assert.equal((reply.payload as { status: string }).status, 'ok', JSON.stringify(reply.payload));
  const init = await socket.event('init');
  socket.answerFlows = answerFlows;
  return { socket, init, token, publicKey };
}

export function resourceIds(init: Frame): string[] {
  return ((init.payload.resources ?? []) as { id: string }[]).map((r) => r.id).sort();
}
