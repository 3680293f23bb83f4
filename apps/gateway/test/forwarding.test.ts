import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test, type TestContext } from 'node:test';

import { FORWARDING_STATE_FILE, KernelForwarding } from '../src/forwarding.ts';

interface FakeHost {
  procSys: string;
  stateDir: string;
  read(sysctl: string): string;
}

/** A directory standing in for /proc/sys with the two sysctls (IPv6 optional). */
function fakeHost(t: TestContext, values: { ipv4: string; ipv6?: string }): FakeHost {
  const root = mkdtempSync(join(tmpdir(), 'gatehouse-gw-fwd-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const procSys = join(root, 'proc-sys');
  const write = (path: string, value: string) => {
    mkdirSync(dirname(join(procSys, path)), { recursive: true });
    writeFileSync(join(procSys, path), `${value}\n`);
  };
  write('net/ipv4/ip_forward', values.ipv4);
  if (values.ipv6 !== undefined) write('net/ipv6/conf/all/forwarding', values.ipv6);
  const stateDir = join(root, 'state');
  mkdirSync(stateDir);
  return {
    procSys,
    stateDir,
    read: (path) => readFileSync(join(procSys, path), 'utf8').trim(),
  };
}

void test('enable turns both on; restore puts back what was there and forgets it', (t) => {
  const host = fakeHost(t, { ipv4: '0', ipv6: '0' });
  const forwarding = new KernelForwarding(host);

  assert.deepEqual(forwarding.enable(), { ipv4: '0', ipv6: '0' });
  assert.equal(host.read('net/ipv4/ip_forward'), '1');
  assert.equal(host.read('net/ipv6/conf/all/forwarding'), '1');
  assert.equal(existsSync(join(host.stateDir, FORWARDING_STATE_FILE)), true);

  forwarding.restore();
  assert.equal(host.read('net/ipv4/ip_forward'), '0');
  assert.equal(host.read('net/ipv6/conf/all/forwarding'), '0');
  assert.equal(existsSync(join(host.stateDir, FORWARDING_STATE_FILE)), false);
});

void test('a host that forwarded already keeps forwarding after restore', (t) => {
  const host = fakeHost(t, { ipv4: '1', ipv6: '0' });
  const forwarding = new KernelForwarding(host);

  forwarding.enable();
  forwarding.restore();

  assert.equal(host.read('net/ipv4/ip_forward'), '1');
  assert.equal(host.read('net/ipv6/conf/all/forwarding'), '0');
});

void test('after a crash, the next run restores the values from before the crashed run', (t) => {
  const host = fakeHost(t, { ipv4: '0', ipv6: '0' });
  new KernelForwarding(host).enable(); // the crashed run: never restores

  const next = new KernelForwarding(host);
  assert.deepEqual(next.enable(), { ipv4: '0', ipv6: '0' });
  next.restore();

  assert.equal(host.read('net/ipv4/ip_forward'), '0');
  assert.equal(host.read('net/ipv6/conf/all/forwarding'), '0');
});

void test('a host without IPv6: only IPv4 forwarding changes', (t) => {
  const host = fakeHost(t, { ipv4: '0' });
  const forwarding = new KernelForwarding(host);

  assert.equal(forwarding.ipv6, false);
  assert.deepEqual(forwarding.enable(), { ipv4: '0' });
  forwarding.restore();
  assert.equal(host.read('net/ipv4/ip_forward'), '0');
});

void test('restore before enable changes nothing', (t) => {
  const host = fakeHost(t, { ipv4: '1', ipv6: '1' });

  new KernelForwarding(host).restore();

  assert.equal(host.read('net/ipv4/ip_forward'), '1');
});
