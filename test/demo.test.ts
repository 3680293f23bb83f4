import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import { systemTestSkipReason } from './lib/netns.ts';

const demo = fileURLToPath(new URL('./demo/demo.ts', import.meta.url));

void test(
  'npm run demo: the headless client end to end ends with "demo: ok"',
  { timeout: 90_000 },
  async (t) => {
    const skipReason = systemTestSkipReason([
      'ip',
      'unshare',
      'nsenter',
      'mount',
      'wireguard-go',
      'wg',
      'getent',
      'ping',
    ]);
    if (skipReason !== undefined) return skipLoudly(t, skipReason);

    const child = spawn(process.execPath, [demo], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const [code] = (await once(child, 'close')) as [number | null];

    const lastLine = stdout.trimEnd().split('\n').pop() ?? '';
    const report = `exit ${code}\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`;
    assert.equal(lastLine, 'demo: ok', report);
    assert.equal(code, 0, report);
  },
);
