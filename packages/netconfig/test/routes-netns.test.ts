/**
 * Gatehouse's routing in a throwaway network namespace: a veth pair stands
 * in for tun-gatehouse, another for the LAN with a default route.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import type { IpCommand } from '../src/routes/gatehouse-routing.ts';
import { findIpExecutable, GatehouseRouting } from '../src/routes/gatehouse-routing.ts';
import { rootSkipReason, run, runOrThrow } from './process-helpers.ts';

const NAMESPACE = `gh-routes-${process.pid}`;
const TUN = 'gh-tun';
const LAN = 'gh-lan';
const MARK = '0x4748';

const skipReason = rootSkipReason(['ip']);

function ipIn(record?: string[]): IpCommand {
  return (args, input) => {
    if (input !== undefined) record?.push(input);
    return new Promise((resolve, reject) => {
      const child = execFile(
        'ip',
        ['-n', NAMESPACE, ...args],
        { timeout: 20_000 },
        (error, stdout, stderr) =>
          error ? reject(new Error(`ip ${args.join(' ')}: ${stderr.trim()}`)) : resolve(stdout),
      );
      if (input !== undefined) child.stdin?.end(input);
    });
  };
}

function ip(...args: string[]): string {
  return runOrThrow(['ip', '-n', NAMESPACE, ...args]);
}

/** The device and table the kernel picks for `destination` (optionally with a mark). */
function routeGet(
  destination: string,
  mark?: string,
): { dev: string | undefined; table: string | undefined } {
  const args = [
    '-json',
    'route',
    'get',
    destination,
    ...(mark === undefined ? [] : ['mark', mark]),
  ];
  const result = run(['ip', '-n', NAMESPACE, ...args]);
  if (result.status !== 0) return { dev: undefined, table: undefined };
  const [entry] = JSON.parse(result.stdout) as Array<{ dev?: string; table?: string }>;
  return { dev: entry?.dev, table: entry?.table };
}

function ownRules(family: 4 | 6): Array<Record<string, unknown>> {
  return (
    JSON.parse(ip(`-${family}`, '-json', 'rule', 'show')) as Array<Record<string, unknown>>
  ).filter((rule) => rule['protocol'] === '71');
}

function tableRoutes(family: 4 | 6): string[] {
  const listed = run([
    'ip',
    '-n',
    NAMESPACE,
    `-${family}`,
    '-json',
    'route',
    'show',
    'table',
    '18248',
  ]);
  if (/table does not exist/.test(listed.stderr)) return [];
  return (JSON.parse(listed.stdout) as Array<{ dst: string }>).map((route) => route.dst).sort();
}

void describe('Gatehouse routing in a network namespace', () => {
  before(() => {
    if (skipReason !== undefined) return;
    runOrThrow(['ip', 'netns', 'add', NAMESPACE]);
    for (const command of [
      ['link', 'set', 'lo', 'up'],
      ['link', 'add', TUN, 'type', 'veth', 'peer', 'name', `${TUN}p`],
      ['link', 'add', LAN, 'type', 'veth', 'peer', 'name', `${LAN}p`],
      ['link', 'set', `${TUN}p`, 'up'],
      ['link', 'set', LAN, 'up'],
      ['link', 'set', `${LAN}p`, 'up'],
      ['address', 'add', '192.168.50.2/24', 'dev', LAN],
      ['-6', 'address', 'add', 'fd99::2/64', 'dev', LAN, 'nodad'],
      ['route', 'add', 'default', 'via', '192.168.50.1', 'dev', LAN],
      ['-6', 'route', 'add', 'default', 'via', 'fd99::1', 'dev', LAN],
    ]) {
      ip(...command);
    }
  });
  after(() => {
    if (skipReason === undefined) run(['ip', 'netns', 'delete', NAMESPACE]);
  });

  void it('brings the interface up with its addresses and MTU, as a diff', async (t) => {
    if (skipReason !== undefined) return skipLoudly(t, skipReason);
    const routing = new GatehouseRouting({ interfaceName: TUN, ip: ipIn() });
    await routing.configureInterface({
      addresses: ['100.64.0.2/32', 'fd00:2021:1111::2/128', '100.100.111.1/32'],
      mtu: 1280,
    });
    const [link] = JSON.parse(ip('-json', 'address', 'show', 'dev', TUN)) as Array<{
      mtu: number;
      flags: string[];
      addr_info: Array<{ local: string; prefixlen: number; scope: string }>;
    }>;
    assert.equal(link?.mtu, 1280);
    assert.ok(link?.flags.includes('UP'));
    const global = (link?.addr_info ?? [])
      .filter((entry) => entry.scope !== 'link')
      .map((e) => `${e.local}/${e.prefixlen}`);
    assert.deepEqual(global.sort(), ['100.100.111.1/32', '100.64.0.2/32', 'fd00:2021:1111::2/128']);

    await routing.configureInterface({
      addresses: ['100.64.0.3/32', 'fd00:2021:1111::2/128'],
      mtu: 1280,
    });
    const [changed] = JSON.parse(ip('-json', 'address', 'show', 'dev', TUN)) as Array<{
      addr_info: Array<{ local: string; scope: string }>;
    }>;
    assert.deepEqual(
      (changed?.addr_info ?? [])
        .filter((entry) => entry.scope !== 'link')
        .map((entry) => entry.local)
        .sort(),
      ['100.64.0.3', 'fd00:2021:1111::2'],
    );
  });

  void it('split tunnel: resource routes in table 18248 behind `not fwmark`, marked traffic bypasses', async (t) => {
    if (skipReason !== undefined) return skipLoudly(t, skipReason);
    const routing = new GatehouseRouting({ interfaceName: TUN, ip: ipIn() });
    await routing.flush();
    await routing.setRoutes([
      '10.1.0.0/16',
      '100.96.0.0/11',
      'fd00:2021:1111:8000::/107',
      '192.168.50.128/25',
    ]);

    for (const family of [4, 6] as const) {
      assert.deepEqual(ownRules(family), [
        {
          priority: 18240,
          not: null,
          src: 'all',
          fwmark: MARK,
          table: '18248',
          suppress_prefixlen: 0,
          protocol: '71',
        },
      ]);
    }
    assert.deepEqual(tableRoutes(4), ['10.1.0.0/16', '100.96.0.0/11', '192.168.50.128/25']);
    assert.deepEqual(tableRoutes(6), ['fd00:2021:1111:8000::/107']);

    assert.deepEqual(routeGet('10.1.2.3'), { dev: TUN, table: '18248' });
    assert.deepEqual(routeGet('fd00:2021:1111:8000::7'), { dev: TUN, table: '18248' });
    assert.equal(routeGet('192.168.50.200').dev, TUN, 'a resource beats an overlapping LAN route');
    assert.equal(routeGet('192.168.50.7').dev, LAN);
    assert.equal(routeGet('8.8.8.8').dev, LAN, 'split tunnel: the Internet stays outside');
    assert.equal(routeGet('2001:db8::1').dev, LAN);
    assert.equal(
      routeGet('10.1.2.3', MARK).dev,
      LAN,
      "Gatehouse's own marked sockets never enter the tunnel",
    );
    assert.equal(routeGet('fd00:2021:1111:8000::7', MARK).dev, LAN);
  });

  void it('full tunnel: Internet through the tunnel, LAN and connected subnets bypass, marked traffic bypasses', async (t) => {
    if (skipReason !== undefined) return skipLoudly(t, skipReason);
    const routing = new GatehouseRouting({ interfaceName: TUN, ip: ipIn() });
    await routing.setRoutes(['10.1.0.0/16', '192.168.50.128/25', '0.0.0.0/0', '::/0']);

    assert.deepEqual(
      ownRules(4).map((rule) => [
        rule['priority'],
        rule['table'],
        rule['suppress_prefixlen'] ?? '-',
        'not' in rule,
      ]),
      [
        [18240, '18248', 0, true],
        [18241, 'main', 0, false],
        [18242, '18248', '-', true],
      ],
    );
    assert.equal(ownRules(6).length, 3);
    assert.equal(routeGet('8.8.8.8').dev, TUN);
    assert.equal(routeGet('2001:db8::1').dev, TUN);
    assert.equal(
      routeGet('192.168.50.7').dev,
      LAN,
      'the directly connected LAN bypasses the tunnel',
    );
    assert.equal(routeGet('fd99::7').dev, LAN);
    assert.equal(routeGet('192.168.50.200').dev, TUN, 'resources still beat the LAN');
    assert.equal(routeGet('8.8.8.8', MARK).dev, LAN);
    assert.equal(routeGet('2001:db8::1', MARK).dev, LAN);

    await routing.setRoutes(['10.1.0.0/16']);
    assert.equal(ownRules(4).length, 1, 'leaving full-tunnel mode removes its rules');
    assert.equal(routeGet('8.8.8.8').dev, LAN);
  });

  void it('applies changes as a diff, hundreds of routes at a time', async (t) => {
    if (skipReason !== undefined) return skipLoudly(t, skipReason);
    const batches: string[] = [];
    const routing = new GatehouseRouting({ interfaceName: TUN, ip: ipIn(batches) });
    await routing.flush();
    const many = Array.from({ length: 500 }, (_, index) => `10.2.${index >> 8}.${index & 0xff}/32`);
    const started = performance.now();
    await routing.setRoutes(['10.1.0.0/16', ...many]);
    const elapsed = performance.now() - started;
    assert.equal(tableRoutes(4).length, 501);
    assert.ok(elapsed < 5000, `500 routes took ${elapsed.toFixed(0)} ms`);

    batches.length = 0;
    await routing.setRoutes(['10.1.0.0/16', '10.3.0.0/16', ...many.slice(1)]);
    const lines = batches.join('').trim().split('\n');
    assert.deepEqual(lines, [
      `route replace 10.3.0.0/16 dev ${TUN} table 18248 proto 71`,
      'route del 10.2.0.0/32 table 18248 proto 71',
    ]);
    assert.ok(tableRoutes(4).includes('10.3.0.0/16'));
    assert.ok(!tableRoutes(4).includes('10.2.0.0'));

    batches.length = 0;
    await routing.setRoutes(['10.1.0.0/16', '10.3.0.0/16', ...many.slice(1)]);
    assert.deepEqual(batches, [], 'no change, no commands');
  });

  void it('start-up flush after a crash removes exactly Gatehouse’s rules and routes', async (t) => {
    if (skipReason !== undefined) return skipLoudly(t, skipReason);
    const crashed = new GatehouseRouting({ interfaceName: TUN, ip: ipIn() });
    await crashed.setRoutes(['10.1.0.0/16', '0.0.0.0/0', '::/0', 'fd00:2021:1111:8000::/107']);
    ip('route', 'add', '10.77.0.0/16', 'dev', TUN, 'table', '18248', 'proto', 'static');
    ip('route', 'add', '10.78.0.0/16', 'dev', LAN, 'proto', 'static');
    ip('rule', 'add', 'priority', '18245', 'lookup', 'main');
    ip('-6', 'rule', 'add', 'priority', '18240', 'lookup', 'main');

    const restarted = new GatehouseRouting({ interfaceName: TUN, ip: ipIn() });
    await restarted.flush();

    assert.deepEqual(ownRules(4), []);
    assert.deepEqual(ownRules(6), []);
    assert.deepEqual(
      tableRoutes(4),
      ['10.77.0.0/16'],
      'a route of another protocol in the same table survives',
    );
    assert.deepEqual(tableRoutes(6), []);
    assert.match(ip('route', 'show', '10.78.0.0/16'), /10\.78\.0\.0\/16 dev gh-lan proto static/);
    assert.match(ip('rule', 'show', 'priority', '18245'), /18245:\s+from all lookup main/);
    assert.match(ip('-6', 'rule', 'show', 'priority', '18240'), /18240:\s+from all lookup main/);
    assert.equal(routeGet('8.8.8.8').dev, LAN);

    await restarted.flush();
    ip('rule', 'del', 'priority', '18245');
    ip('-6', 'rule', 'del', 'priority', '18240');
  });

  void it('listen-only addresses (the DNS sentinels) are never the source, older or not', async (t) => {
    if (skipReason !== undefined) return skipLoudly(t, skipReason);
    const routing = new GatehouseRouting({ interfaceName: TUN, ip: ipIn() });
    const sentinels = ['100.100.111.1', 'fd00:2021:1111:8000:100:100:111:1'];
    await routing.flush();
    await routing.setRoutes(['100.96.0.0/11', 'fd00:2021:1111:8000::/107']);
    const steps: Array<{ addresses: string[]; ipv4: string; ipv6: string }> = [
      // No tunnel address yet: the LAN's addresses are the only candidates besides the sentinels.
      { addresses: [], ipv4: '192.168.50.2', ipv6: 'fd99::2' },
      // Added after the sentinels, so older addresses are not what decides.
      {
        addresses: ['100.64.0.2/32', 'fd00:2021:1111::2/128'],
        ipv4: '100.64.0.2',
        ipv6: 'fd00:2021:1111::2',
      },
    ];
    for (const step of steps) {
      await routing.configureInterface({
        addresses: step.addresses,
        listenOnlyAddresses: sentinels,
        mtu: 1280,
      });
      assert.match(
        ip('-4', 'route', 'get', '100.96.0.1'),
        new RegExp(`dev ${TUN} .*src ${step.ipv4} `),
      );
      assert.match(
        ip('-6', 'route', 'get', 'fd00:2021:1111:8000::1'),
        new RegExp(`dev ${TUN} .*src ${step.ipv6} `),
      );
      assert.match(
        ip('-4', 'route', 'get', sentinels[0] ?? ''),
        /^local /,
        'still delivered locally',
      );
    }
    await routing.flush();
  });

  void it('runs ip by its absolute path: an ip first on PATH is never run', async (t) => {
    if (skipReason !== undefined) return skipLoudly(t, skipReason);
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-path-'));
    try {
      const marker = join(dir, 'ran');
      writeFileSync(join(dir, 'ip'), `#!/bin/sh\ntouch ${marker}\nexit 1\n`, { mode: 0o755 });
      const module = new URL('../src/routes/gatehouse-routing.ts', import.meta.url).pathname;
      const script = `import { GatehouseRouting } from ${JSON.stringify(module)};
await new GatehouseRouting({ interfaceName: ${JSON.stringify(TUN)} }).flush();`;
      const child = run([
        'ip',
        'netns',
        'exec',
        NAMESPACE,
        'env',
        `PATH=${dir}`,
        process.execPath,
        '--disable-warning=ExperimentalWarning',
        '--input-type=module',
        '-e',
        script,
      ]);
      assert.equal(child.status, 0, child.stderr);
      assert.equal(existsSync(marker), false, 'the ip on PATH ran');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

void test('without iproute2 the error names where ip was looked for', () => {
  assert.throws(
    () => findIpExecutable(['/nonexistent/sbin/ip', '/nonexistent/bin/ip']),
    /iproute2's ip is not installed \(looked for \/nonexistent\/sbin\/ip, \/nonexistent\/bin\/ip\): apt-get install iproute2/,
  );
});
