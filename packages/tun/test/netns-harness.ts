/**
 * Test-only: runs a contract case against a real TUN device
 * (netns-contract-case.ts) in a child process inside a network namespace
 * this run creates (`gh-tun-<pid>-<n>`) and deletes afterwards, and
 * explains loudly when a system test cannot run here.
 */
import { execFileSync, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { fileURLToPath } from 'node:url';

const NODE = process.execPath;
const CASE = fileURLToPath(new URL('./netns-contract-case.ts', import.meta.url));
let namespaces = 0;

/** Why a TUN system test cannot run here, or undefined. */
export function systemSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root: creates network namespaces and TUN devices';
  try {
    accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
  } catch {
    return 'needs a usable /dev/net/tun';
  }
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'needs iproute2 (ip)';
  }
  return undefined;
}

/** Runs the contract case `name` in a fresh namespace; rejects with its failure. */
export async function runContractCase(
  name: string,
  variant: 'plain' | 'offload',
  timeoutMs = 60_000,
): Promise<void> {
  const namespace = `gh-tun-${process.pid}-${namespaces++}`;
  execFileSync('ip', ['netns', 'add', namespace]);
  try {
    execFileSync('ip', ['-n', namespace, 'link', 'set', 'lo', 'up']);
    // No IPv6 chatter (router solicitations) on the device: every packet is the test's.
    execFileSync('ip', [
      'netns',
      'exec',
      namespace,
      'sysctl',
      '-qw',
      'net.ipv6.conf.all.disable_ipv6=1',
      'net.ipv6.conf.default.disable_ipv6=1',
    ]);
    const child = spawn('ip', ['netns', 'exec', namespace, NODE, CASE, name, variant], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearTimeout(timer);
    if (code !== 0 || stdout.trim() !== '{}') {
      throw new Error(`case "${name}" (${variant}) exited ${code}: ${stderr.slice(-4000)}`);
    }
  } finally {
    execFileSync('ip', ['netns', 'delete', namespace]);
  }
}
