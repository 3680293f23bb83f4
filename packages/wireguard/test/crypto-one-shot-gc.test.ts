import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const STRESS = fileURLToPath(new URL('./fixtures/one-shot-gc-stress.ts', import.meta.url));
/** Concurrent children: the race needed several at once to show up reliably (7 of 12 crashed). */
const CHILDREN = 4;
const ITERATIONS = 40_000;

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

/** The stress fixture under a 1 MiB semi-space and one malloc arena, as gatehouse-tunnel runs. */
function stress(provider: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      ['--max-semi-space-size=1', STRESS, provider, `${ITERATIONS}`],
      { env: { ...process.env, MALLOC_ARENA_MAX: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

void describe('native one-shot seal/open keep their memory alive through a GC', () => {
  for (const provider of ['openssl-native', 'libsodium-native']) {
    void it(`${provider}: ${CHILDREN} × ${ITERATIONS} round trips under GC pressure, no heap corruption`, async () => {
      const outcomes = await Promise.all(Array.from({ length: CHILDREN }, () => stress(provider)));
      for (const { code, signal, output } of outcomes) {
        assert.equal(signal, null, `killed by ${signal}: ${output.trim()}`);
        assert.equal(code, 0, output.trim());
        assert.equal(output.trim(), `ok ${ITERATIONS}`);
      }
    });
  }
});
