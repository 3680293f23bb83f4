/**
 * `serve` in its own process stops cleanly on SIGTERM and on SIGINT: every joined session gets
 * phx_close and close code 1001, the process logs "stopped" and exits 0.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { WebSocket } from 'ws';
import { openSqliteStorage } from '../src/db/sqlite-storage.ts';
import { makeToken, TestSocket, wgKey } from './channel-support.ts';

const CHILD = fileURLToPath(new URL('./serve-child.ts', import.meta.url));

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  void test(`serve stops on ${signal}: phx_close, close code 1001, exit 0`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-serve-signal-'));
    const database = join(dir, 'portal.db');
    const storage = openSqliteStorage(database);
    const now = Date.now();
    const account = storage.createAccount({ slug: 'sig', name: 'Sig', now });
    const actor = storage.createActor({ accountId: account.id, kind: 'user', name: 'u', now });
    const token = makeToken(storage, {
      accountId: account.id,
      kind: 'headless_client',
      actorId: actor.id,
    });
    storage.close();
    const child = spawn(
      process.execPath,
      ['--disable-warning=ExperimentalWarning', CHILD, database],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const exited = new Promise<number | null>((resolve) =>
      child.once('exit', (code) => resolve(code)),
    );
    try {
      const port = await new Promise<number>((resolve, reject) => {
        let out = '';
        child.stdout.setEncoding('utf8').on('data', (c: string) => {
          out += c;
          const line = out.split('\n')[0];
          if (out.includes('\n') && line !== undefined)
            resolve((JSON.parse(line) as { port: number }).port);
        });
        void exited.then((code) => reject(new Error(`the portal exited (${code}): ${stderr}`)));
      });
      const ws = new WebSocket(`ws://127.0.0.1:${port}/client/websocket`, {
        headers: { 'X-Authorization': `Bearer ${token.text}` },
      });
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      const socket = new TestSocket(ws, 'client');
      const reply = await socket.reply('client', 'phx_join', {
        public_key: wgKey(),
        device_id: randomBytes(4).toString('hex'),
        name: 'sig',
        os_name: 'Debian',
        os_version: '13',
      });
      assert.equal((reply.payload as { status: string }).status, 'ok');
      await socket.event('init');
      child.kill(signal);
      const close = await socket.event('phx_close', 5000);
      assert.equal(close.topic, 'client');
      assert.equal(await socket.closed(5000), 1001);
      assert.equal(await exited, 0);
      assert.match(stderr, /listening on http:\/\/127\.0\.0\.1:\d+/);
      assert.match(stderr, new RegExp(`${signal}, stopping`));
      assert.match(stderr, /portal: stopped/);
      socket.assertValid();
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
