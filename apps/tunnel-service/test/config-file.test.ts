import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { skipLoudly } from '@gatehouse/test-support';

import { configFileWarnings, MAX_CONFIG_BYTES, readConfigFile } from '../src/config-file.ts';

async function withDir(body: (dir: string) => void | Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-config-'));
  try {
    await body(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

void test('a private file owned by root reads without warnings', async (t) => {
  if (process.getuid?.() !== 0) return skipLoudly(t, 'needs root: the file must be owned by root');
  await withDir((dir) => {
    const file = join(dir, 'wg0.conf');
    writeFileSync(file, '[Interface]\n', { mode: 0o600 });
    assert.deepEqual(readConfigFile(file), { text: '[Interface]\n', warnings: [] });
  });
});

void test('a file others may access or not owned by root is read with a warning saying how to fix it', () => {
  assert.deepEqual(configFileWarnings('/etc/gatehouse/wg0.conf', { mode: 0o100644, uid: 0 }), [
    '/etc/gatehouse/wg0.conf holds the private key but its group or others may access it (mode 0644): chmod 600 /etc/gatehouse/wg0.conf',
  ]);
  assert.deepEqual(configFileWarnings('/home/me/my vpn.conf', { mode: 0o100620, uid: 1000 }), [
    "/home/me/my vpn.conf holds the private key but is owned by uid 1000, not root: chown root:root '/home/me/my vpn.conf'",
    "/home/me/my vpn.conf holds the private key but its group or others may access it (mode 0620): chmod 600 '/home/me/my vpn.conf'",
  ]);
  assert.deepEqual(configFileWarnings('wg0.conf', { mode: 0o100600, uid: 0 }), []);
});

void test('the warnings come from the file that was read', async (t) => {
  if (process.getuid?.() !== 0) return skipLoudly(t, 'needs root: chown');
  await withDir((dir) => {
    const file = join(dir, 'wg0.conf');
    writeFileSync(file, '[Interface]\n', { mode: 0o640 });
    chownSync(file, 65534, 0);
    const { warnings } = readConfigFile(file);
    assert.equal(warnings.length, 2);
    assert.match(warnings[0] ?? '', /owned by uid 65534, not root: chown root:root /);
    assert.match(warnings[1] ?? '', /\(mode 0640\): chmod 600 /);
  });
});

void test('symbolic links, FIFOs, directories and oversized files are refused', async (t) => {
  await withDir(async (dir) => {
    const file = join(dir, 'real.conf');
    writeFileSync(file, '[Interface]\n', { mode: 0o600 });
    const link = join(dir, 'wg0.conf');
    symlinkSync(file, link);
    const fifo = join(dir, 'fifo.conf');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const big = join(dir, 'big.conf');
    writeFileSync(big, Buffer.alloc(MAX_CONFIG_BYTES + 1, 0x20), { mode: 0o600 });
    const cases: [string, string, RegExp][] = [
      ['a symbolic link', link, /it is a symbolic link: give the file's own path \(readlink -f /],
      ['a FIFO (opened without waiting for a writer)', fifo, /not a regular file/],
      ['a directory', dir, /not a regular file/],
      ['an oversized file', big, /larger than 1048576 bytes/],
    ];
    for (const [name, path, message] of cases) {
      await t.test(name, () => assert.throws(() => readConfigFile(path), message));
    }
  });
});
