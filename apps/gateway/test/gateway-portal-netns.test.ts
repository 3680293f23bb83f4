/**
 * The gateway as its own process next to a real portal, in a namespace this
 * test makes: it joins with its token, its TUN takes the init's addresses,
 * the table, routes and forwarding follow the account's ranges, SIGUSR1
 * logs a status line, and SIGTERM takes it all away again (exit 0). A token
 * the portal refuses ends it with exit 3, the fix in its last words, and the
 * same clean-up.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import {
  systemTestSkipReason,
  withTestNetwork,
  type NamespaceProcess,
  type TestNetwork,
} from '../../../test/lib/netns.ts';

const REPO = new URL('../../../', import.meta.url).pathname;
const PORTAL = join(REPO, 'node_modules/.bin/gatehouse-portal');
const GATEWAY = new URL('../bin/gatehouse-gateway', import.meta.url).pathname;
const EXAMPLE = join(REPO, 'apps/portal/examples/acme.yaml');
const TUN = 'ghgw0';
const PORT = 18480;

async function waitFor(process: NamespaceProcess, pattern: RegExp, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!pattern.test(process.output())) {
    if (!process.running || Date.now() > deadline) {
      throw new Error(`${what} did not happen; output:\n${process.output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function sysctl(network: TestNetwork, namespace: string, name: string): Promise<string> {
  return (await network.exec(namespace, ['sysctl', '-n', name])).stdout.trim();
}

async function nftTables(network: TestNetwork, namespace: string): Promise<string> {
  return (await network.exec(namespace, ['nft', 'list', 'tables'])).stdout;
}

async function links(network: TestNetwork, namespace: string): Promise<string> {
  return (await network.exec(namespace, ['ip', '-o', 'link', 'show'])).stdout;
}

/** A portal database with the example organisation, a gateway token for its office site. */
function portalDatabase(t: TestContext): { db: string; token: string; stateDir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-gw-portal-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const db = join(dir, 'portal.sqlite');
  execFileSync(PORTAL, ['--db', db, 'apply', EXAMPLE], { stdio: 'pipe' });
  const token = execFileSync(PORTAL, ['--db', db, 'token', 'create', '--gateway', 'office'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
    .toString()
    .trim();
  return { db, token, stateDir: join(dir, 'gateway-state') };
}

function gatewayArgs(stateDir: string): string[] {
  return [
    GATEWAY,
    '--portal',
    `http://127.0.0.1:${PORT}`,
    '--endpoint',
    '192.0.2.1:51820',
    '--interface',
    TUN,
    '--listen-port',
    '51999',
    '--state-dir',
    stateDir,
    '--verbose',
  ];
}

void test('gatehouse-gateway joins a real portal, sets itself up, and undoes it on SIGTERM', async (t) => {
  const skip = systemTestSkipReason(['ip', 'nft', 'sysctl']);
  if (skip !== undefined) return skipLoudly(t, skip);
  const { db, token, stateDir } = portalDatabase(t);

  await withTestNetwork('gwportal', async (network) => {
    const namespace = await network.addNamespace();
    await network.exec(namespace, ['nft', 'add', 'table', 'inet', 'other']);
    const portal = network.spawn(namespace, [
      PORTAL,
      '--db',
      db,
      'serve',
      '--listen',
      `127.0.0.1:${PORT}`,
    ]);
    await waitFor(portal, /listening on/, 'the portal listening');

    const gateway = network.spawn(namespace, gatewayArgs(stateDir), {
      env: { GATEHOUSE_TOKEN: token, GATEHOUSE_ID: 'gw-office-test' },
    });
    await waitFor(gateway, /joined the portal/, 'the join');
    await waitFor(gateway, new RegExp(`${TUN}: 10\\.77\\.`), 'the init’s addresses');
    await waitFor(gateway, /plan v\d+ applied/, 'the first plan after init');

    const addresses = (await network.exec(namespace, ['ip', '-o', 'address', 'show', 'dev', TUN]))
      .stdout;
    assert.match(addresses, /inet 10\.77\.\d+\.\d+\/32/);
    assert.match(addresses, /inet6 [0-9a-f:]+\/128/);
    const routes = (
      await network.exec(namespace, ['ip', 'route', 'show', 'dev', TUN, 'proto', '71'])
    ).stdout;
    assert.match(routes, /^10\.77\.0\.0\/20 /m);
    const table = (
      await network.exec(namespace, ['nft', 'list', 'table', 'inet', 'gatehouse_gateway'])
    ).stdout;
    assert.match(table, new RegExp(`ip saddr 10\\.77\\.0\\.0/20 oifname != "${TUN}" masquerade`));
    assert.match(table, /ip daddr 10\.77\.16\.0\/20 counter name "proxy_unmapped" drop/);
    assert.equal(await sysctl(network, namespace, 'net.ipv4.ip_forward'), '1');
    assert.doesNotMatch(gateway.output(), new RegExp(token.slice(0, 16)));

    gateway.child.kill('SIGUSR1');
    await waitFor(gateway, /status: portal joined/, 'the status line');

    const exit = await gateway.stop(10_000);
    assert.deepEqual(exit, { code: 0, signal: null }, gateway.output());
    assert.equal(await nftTables(network, namespace), 'table inet other\n');
    assert.doesNotMatch(await links(network, namespace), new RegExp(TUN));
    assert.equal(await sysctl(network, namespace, 'net.ipv4.ip_forward'), '0');
    assert.doesNotMatch(gateway.output(), new RegExp(token.slice(0, 16)));
  });
});

void test('a token the portal refuses: exit 3 with the fix, everything undone', async (t) => {
  const skip = systemTestSkipReason(['ip', 'nft', 'sysctl']);
  if (skip !== undefined) return skipLoudly(t, skip);
  const { db, stateDir } = portalDatabase(t);

  await withTestNetwork('gwrefused', async (network) => {
    const namespace = await network.addNamespace();
    const portal = network.spawn(namespace, [
      PORTAL,
      '--db',
      db,
      'serve',
      '--listen',
      `127.0.0.1:${PORT}`,
    ]);
    await waitFor(portal, /listening on/, 'the portal listening');

    const gateway = network.spawn(namespace, gatewayArgs(stateDir), {
      env: { GATEHOUSE_TOKEN: 'not-a-token-the-portal-made' },
    });
    const exit = await gateway.exited;

    assert.deepEqual(exit, { code: 3, signal: null }, gateway.output());
    assert.match(
      gateway.output(),
      /error: the portal refused the gateway token: create a new one with `gatehouse-portal token create --gateway SITE`/,
    );
    assert.doesNotMatch(gateway.output(), /not-a-token-the-portal-made/);
    assert.equal(await nftTables(network, namespace), '');
    assert.doesNotMatch(await links(network, namespace), new RegExp(TUN));
    assert.equal(await sysctl(network, namespace, 'net.ipv4.ip_forward'), '0');
  });
});
