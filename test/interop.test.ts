import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import { systemTestSkipReason } from './lib/netns.ts';

const orchestrator = fileURLToPath(new URL('./interop/wireguard-go.ts', import.meta.url));
const CONTRACT = /^interop: wireguard-go ok handshakes=\d+ echo=(\d+)\/\1 rekeys=[1-9]\d*$/;

void test('Gatehouse WireGuard interoperates with wireguard-go', { timeout: 90_000 }, async (t) => {
  const skipReason = systemTestSkipReason(['ip', 'wg', 'wireguard-go', 'ping']);
  if (skipReason !== undefined) return skipLoudly(t, skipReason);

  const child = spawn(process.execPath, [orchestrator], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const [code] = (await once(child, 'close')) as [number | null];

  const lastLine = stdout.trimEnd().split('\n').pop() ?? '';
  const report = `exit ${code}\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`;
  assert.equal(code, 0, report);
  assert.match(lastLine, CONTRACT, report);
});
