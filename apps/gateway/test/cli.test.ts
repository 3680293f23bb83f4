/**
 * gatehouse-gateway through its launcher: --help and --version, usage and
 * configuration errors (exit 2, one clear line, the token never echoed), and
 * a private key others can read refused before anything else is touched.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';

import packageJson from '../package.json' with { type: 'json' };
import { loadOrCreatePrivateKey } from '../src/private-key.ts';

const LAUNCHER = new URL('../bin/gatehouse-gateway', import.meta.url).pathname;
const TOKEN = 'gh-cli-test-token-1b7e44c2';

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the launcher with this test's environment, less any GATEHOUSE_ variable, plus `env`. */
function run(args: string[], env: Record<string, string> = {}): Promise<Outcome> {
  const childEnv: Record<string, string> = { ...env };
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !name.startsWith('GATEHOUSE_')) childEnv[name] = value;
  }
  return new Promise((resolve) => {
    const child = spawn(LAUNCHER, args, { env: childEnv });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function stateDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-gw-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const GOOD = ['--portal', 'https://127.0.0.1:9', '--endpoint', '192.0.2.1:51820'];

void test('--help prints the usage; --version the version', async () => {
  const help = await run(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage:\n {2}GATEHOUSE_TOKEN=\.\.\. /);
  assert.match(help.stdout, /Exit codes: 0 stopped by a signal, 1 runtime failure, 2 usage/);

  const version = await run(['--version']);
  assert.equal(version.code, 0);
  assert.equal(version.stdout, `gatehouse-gateway ${packageJson.version}\n`);
});

const usageErrors: { name: string; args: string[]; env: Record<string, string>; line: RegExp }[] = [
  {
    name: 'no token',
    args: GOOD,
    env: {},
    line: /^gatehouse-gateway: GATEHOUSE_TOKEN is not set: create a gateway token with `gatehouse-portal token create --gateway SITE` and pass it in the environment$/m,
  },
  {
    name: 'no portal',
    args: ['--endpoint', '192.0.2.1:51820'],
    env: { GATEHOUSE_TOKEN: TOKEN },
    line: /^gatehouse-gateway: the portal is needed: --portal URL \(or GATEHOUSE_PORTAL_URL\)$/m,
  },
  {
    name: 'no endpoint',
    args: ['--portal', 'https://127.0.0.1:9'],
    env: { GATEHOUSE_TOKEN: TOKEN },
    line: /^gatehouse-gateway: where clients reach this gateway is needed: --endpoint HOST:PORT \(or GATEHOUSE_ENDPOINTS, comma-separated\)$/m,
  },
  {
    name: 'a bad endpoint',
    args: ['--portal', 'https://127.0.0.1:9', '--endpoint', 'gw.example.com'],
    env: { GATEHOUSE_TOKEN: TOKEN },
    line: /^gatehouse-gateway: endpoint "gw\.example\.com": an endpoint is host:port/m,
  },
  {
    name: 'the token passed as an argument',
    args: [...GOOD, TOKEN],
    env: { GATEHOUSE_TOKEN: TOKEN },
    line: /^gatehouse-gateway: arguments other than options are not taken/m,
  },
];

for (const { name, args, env, line } of usageErrors) {
  void test(`usage error, exit 2: ${name}`, async () => {
    const outcome = await run(args, env);

    assert.equal(outcome.code, 2, outcome.stderr);
    assert.match(outcome.stderr, line);
    assert.match(outcome.stderr, /\nusage:\n/);
    assert.doesNotMatch(outcome.stdout + outcome.stderr, new RegExp(TOKEN));
  });
}

void test('a private key others can read: exit 2 with the fix, nothing else done', async (t) => {
  const dir = stateDir(t);
  const key = loadOrCreatePrivateKey(dir);
  chmodSync(key.path, 0o644);

  const outcome = await run([...GOOD, '--state-dir', dir], { GATEHOUSE_TOKEN: TOKEN });

  assert.equal(outcome.code, 2, outcome.stderr);
  assert.match(
    outcome.stderr,
    /^gatehouse-gateway: .*private-key is open to group or others \(mode 0644\): chmod 600 .*private-key$/m,
  );
  assert.doesNotMatch(outcome.stdout + outcome.stderr, new RegExp(TOKEN));
});
