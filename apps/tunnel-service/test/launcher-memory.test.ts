/**
 * The service's one malloc knob is the launcher's MALLOC_ARENA_MAX, applied
 * by glibc before Node starts a thread. Checked on what glibc does, not on
 * the variable: every thread heap glibc creates for a further arena is a
 * HEAP_MAX_SIZE (64 MiB) mapping aligned to its size, readable and writable
 * in front and reserved behind, and it shows in /proc/PID/maps.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const LAUNCHER = new URL('../bin/gatehouse-tunnel', import.meta.url).pathname;
const HEAP_MAX_SIZE = 64n << 20n;
const START_TIMEOUT_MS = 10_000;

const key = (fill: number) => Buffer.alloc(32, fill).toString('base64');
const CONFIG = `[Interface]
PrivateKey = ${key(1)}
Address = 10.9.0.2/24

[Peer]
PublicKey = ${key(2)}
Endpoint = 192.0.2.1:51820
AllowedIPs = 10.9.0.0/24
`;

/** The glibc thread heaps (arenas beyond the main one) in a process's memory map. */
function threadHeaps(pid: number): number {
  const mappings = readFileSync(`/proc/${pid}/maps`, 'utf8')
    .trim()
    .split('\n')
    .map((line) => {
      const [range = '', permissions] = line.split(' ');
      const [start = '0', end = '0'] = range.split('-');
      return { start: BigInt(`0x${start}`), end: BigInt(`0x${end}`), permissions };
    });
  let heaps = 0;
  mappings.forEach((mapping, index) => {
    if (mapping.permissions !== 'rw-p' || mapping.start % HEAP_MAX_SIZE !== 0n) return;
    const reserved = mappings[index + 1];
    const end =
      reserved?.start === mapping.end && reserved.permissions === '---p'
        ? reserved.end
        : mapping.end;
    if (end - mapping.start === HEAP_MAX_SIZE) heaps++;
  });
  return heaps;
}

/** Runs `up --dry-run` through the launcher with `environment` and returns its thread heaps once it is up. */
async function heapsOfService(environment: Record<string, string | undefined>): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-launcher-'));
  const configFile = join(dir, 'gh-mem0.conf');
  writeFileSync(configFile, CONFIG, { mode: 0o600 });
  const env = { ...process.env, ...environment };
  for (const [name, value] of Object.entries(env)) if (value === undefined) delete env[name];
  const child = spawn(
    LAUNCHER,
    ['up', '--config', configFile, '--socket', join(dir, 'run', 'tunnel.sock'), '--dry-run'],
    { env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const exited = new Promise((resolve) => child.once('close', resolve));
  try {
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!stderr.includes('is up')) {
      if (Date.now() > deadline || child.exitCode !== null) {
        throw new Error(`up --dry-run did not start:\n${stderr}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // The launcher execs Node, so the child's pid is the service's.
    return threadHeaps(child.pid!);
  } finally {
    child.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

void test('the launcher runs the service on one malloc arena: no thread heaps', async () => {
  assert.equal(await heapsOfService({ MALLOC_ARENA_MAX: undefined }), 0);
});

void test('an operator’s MALLOC_ARENA_MAX wins over the launcher’s (and thread heaps show)', async () => {
  const heaps = await heapsOfService({ MALLOC_ARENA_MAX: '8' });
  assert.ok(heaps > 0, `expected thread heaps with 8 arenas allowed, found ${heaps}`);
});
