import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import { listNamespaces, systemTestSkipReason } from './lib/netns.ts';
import { TOPOLOGY_TOOLS } from './lib/topology.ts';
import { CHROMIUM } from './lib/topology-sign-in.ts';

const start = fileURLToPath(new URL('./start/start.ts', import.meta.url));

void test(
  'npm start: portal, gateway, resource host and client end to end end with "start: ok"',
  { timeout: 180_000 },
  async (t) => {
    const skipReason = systemTestSkipReason(TOPOLOGY_TOOLS);
    if (skipReason !== undefined) return skipLoudly(t, skipReason);
    if (!existsSync(CHROMIUM)) return skipLoudly(t, `no Chromium at ${CHROMIUM}`);

    const child = spawn(process.execPath, [start], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const [code] = (await once(child, 'close')) as [number | null];

    const lastLine = stdout.trimEnd().split('\n').pop() ?? '';
    const report = `exit ${code}\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`;
    assert.equal(lastLine, 'start: ok', report);
    assert.equal(code, 0, report);
    const ours = new RegExp(`^gh-start-${child.pid}-`);
    assert.deepEqual(
      listNamespaces().filter((name) => ours.test(name)),
      [],
      'no namespace left behind',
    );
  },
);

void test('npm start -- --bogus: exit 2 and a FAIL line naming the usage', async () => {
  const child = spawn(process.execPath, [start, '--bogus'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  const [code] = (await once(child, 'close')) as [number | null];

  assert.equal(code, 2);
  assert.match(stdout.trimEnd().split('\n').pop() ?? '', /^start: FAIL .*usage: npm start/);
});
