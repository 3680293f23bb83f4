/**
 * `gatehouse-tunnel up --portal` end to end against the real portal (in this process, on
 * 127.0.0.1), in the foreground with --dry-run: no root network changes. What the person sees:
 * the exit code, the sign-in-required message, the status with the portal's side.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { skipLoudly } from '@gatehouse/test-support';
import { startPortal, type PortalWorld } from './portal-support.ts';

const LAUNCHER = new URL('../bin/gatehouse-tunnel', import.meta.url).pathname;
const WAIT_MS = 20_000;

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface Running {
  output(): Outcome;
  exited: Promise<Outcome>;
  kill(signal: NodeJS.Signals): void;
}

function launch(args: string[], env: Record<string, string>): Running {
  const child = spawn(LAUNCHER, args, { env: { ...process.env, GATEHOUSE_TOKEN: '', ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<Outcome>((resolve) =>
    child.on('close', (code) => resolve({ code, stdout, stderr })),
  );
  return {
    output: () => ({ code: child.exitCode, stdout, stderr }),
    exited,
    kill: (signal) => child.kill(signal),
  };
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(25);
  }
}

async function setUp(t: TestContext) {
  const w: PortalWorld = await startPortal();
  const dir = mkdtempSync(join(tmpdir(), 'gh-cli-portal-'));
  t.after(async () => {
    await w.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const socket = join(dir, 'tunnel.sock');
  const tokenFile = (text: string): string => {
    const path = join(dir, 'client-token');
    rmSync(path, { force: true });
    writeFileSync(path, `${text}\n`, { mode: 0o600 });
    return path;
  };
  const up = (token: string, extra: string[] = []): Running =>
    launch(
      [
        'up',
        '--portal',
        w.portal.url,
        '--token-file',
        tokenFile(token),
        '--socket',
        socket,
        '--dry-run',
        ...extra,
      ],
      { STATE_DIRECTORY: join(dir, 'state') },
    );
  return { w, dir, socket, up };
}

void describe('gatehouse-tunnel up --portal against the real portal', () => {
  void it('a refused token: exit 4 with sign-in required and how to get a new one, the token never printed', async (t) => {
    if (process.getuid?.() !== 0) {
      skipLoudly(t, 'needs root: the token file must be owned by root');
      return;
    }
    const { w, up } = await setUp(t);
    const revoked = w.clientToken();
    w.revoke(revoked.id);
    const outcome = await up(revoked.text).exited;
    assert.equal(outcome.code, 4, outcome.stderr);
    assert.match(
      outcome.stderr,
      /sign-in required: the portal refused the token \(.+\)\. Get a new one .*gatehouse-tunnel up --portal URL/,
    );
    const secret = revoked.text.split('.')[2] ?? '?';
    assert.ok(!`${outcome.stdout}${outcome.stderr}`.includes(secret), 'the token was printed');
  });

  void it('comes up, status shows the portal, who is signed in and the resources; SIGHUP reconnects; SIGTERM exits 0', async (t) => {
    if (process.getuid?.() !== 0) {
      skipLoudly(t, 'needs root: the token file and the control socket are root-only');
      return;
    }
    const { w, socket, up } = await setUp(t);
    const client = up(w.token.text, ['--device-name', 'ci-box']);
    t.after(() => client.kill('SIGKILL'));
    await until(() => / is up; control socket/.test(client.output().stderr), 'the tunnel to be up');

    const status = await launch(['status', '--socket', socket], {}).exited;
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, new RegExp(`portal: ${w.portal.url} \\(connected\\)`));
    assert.match(status.stdout, /signed in as alice \(account acme\)/);
    assert.match(status.stdout, /wiki/);
    assert.match(status.stdout, /git/);
    assert.doesNotMatch(status.stdout, /forbidden/);
    const devices = w.storage.listDevices(w.accountId, w.alice);
    assert.deepEqual(
      devices.map((d) => d.name),
      ['ci-box'],
    );

    client.kill('SIGHUP');
    await until(
      () => client.output().stderr.includes('portal: connected again'),
      'the reconnect after SIGHUP',
    );
    assert.equal(client.output().code, null, 'SIGHUP did not end it');

    client.kill('SIGTERM');
    const outcome = await client.exited;
    assert.equal(outcome.code, 0, outcome.stderr);
    assert.match(outcome.stderr, /tunnel gatehouse0 is down/);
    assert.ok(!outcome.stderr.includes(w.token.text), 'the token was printed');
  });
});
