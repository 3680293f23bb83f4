import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  interfaceNameProblem,
  planAddresses,
  planRoutes,
  ROUTE_PROTOCOL,
  TunInterface,
} from '../src/tun-interface.ts';

const TAG = ['proto', String(ROUTE_PROTOCOL)];

const addressCases: {
  name: string;
  current: { family?: string; local?: string; prefixlen?: number; scope?: string }[];
  wanted: string[];
  commands: string[][];
}[] = [
  {
    name: 'a fresh interface gets its host addresses (IPv6 without DAD)',
    current: [],
    wanted: ['100.64.0.1', 'fd00:2021:1111::1'],
    commands: [
      ['address', 'add', '100.64.0.1/32', 'dev', 'gw0'],
      ['address', 'add', 'fd00:2021:1111::1/128', 'dev', 'gw0', 'nodad'],
    ],
  },
  {
    name: 'the same addresses: nothing to do (IPv6 text compared canonically)',
    current: [
      { family: 'inet', local: '100.64.0.1', prefixlen: 32, scope: 'global' },
      { family: 'inet6', local: 'fd00:2021:1111:0::1', prefixlen: 128, scope: 'global' },
    ],
    wanted: ['100.64.0.1', 'fd00:2021:1111::1'],
    commands: [],
  },
  {
    name: 'a changed address: the old one goes, link-local ones stay',
    current: [
      { family: 'inet', local: '100.64.0.9', prefixlen: 32, scope: 'global' },
      { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' },
    ],
    wanted: ['100.64.0.1'],
    commands: [
      ['address', 'del', '100.64.0.9/32', 'dev', 'gw0'],
      ['address', 'add', '100.64.0.1/32', 'dev', 'gw0'],
    ],
  },
];

for (const { name, current, wanted, commands } of addressCases) {
  void test(`planAddresses: ${name}`, () => {
    assert.deepEqual(planAddresses('gw0', current, wanted), commands);
  });
}

const routeCases: {
  name: string;
  current: { dst?: string }[];
  wanted: string[];
  commands: string[][];
}[] = [
  {
    name: 'the tunnel range into the TUN',
    current: [],
    wanted: ['100.64.0.0/11'],
    commands: [['route', 'replace', '100.64.0.0/11', 'dev', 'gw0', ...TAG]],
  },
  {
    name: 'unchanged',
    current: [{ dst: '100.64.0.0/11' }],
    wanted: ['100.64.0.0/11'],
    commands: [],
  },
  {
    name: 'a changed range replaces the old one',
    current: [{ dst: 'fd00:2021:1111::/107' }],
    wanted: ['fd00:2021:2222::/107'],
    commands: [
      ['route', 'del', 'fd00:2021:1111::/107', 'dev', 'gw0', ...TAG],
      ['route', 'replace', 'fd00:2021:2222::/107', 'dev', 'gw0', ...TAG],
    ],
  },
];

for (const { name, current, wanted, commands } of routeCases) {
  void test(`planRoutes: ${name}`, () => {
    assert.deepEqual(planRoutes('gw0', current, wanted), commands);
  });
}

void test('interface names: what Linux takes, nothing that could be read as more', () => {
  assert.equal(interfaceNameProblem('gatehouse-gw'), undefined);
  assert.equal(interfaceNameProblem('gw_0.1'), undefined);
  for (const bad of ['', '.', '..', 'sixteen-chars-xx', 'gw 0', 'gw/0', 'gw"0']) {
    assert.match(interfaceNameProblem(bad) ?? '', /is not an interface name/, bad);
  }
});

void test('removeLeftover deletes a TUN of that name and refuses any other kind', async () => {
  const calls: string[][] = [];
  let kind: string | undefined = 'tun';
  const tun = new TunInterface({
    interfaceName: 'gw0',
    ipv6: true,
    ip: (args) => {
      calls.push([...args]);
      if (args.includes('show')) {
        if (kind === undefined) return Promise.reject(new Error('Device "gw0" does not exist.'));
        return Promise.resolve(JSON.stringify([{ ifname: 'gw0', linkinfo: { info_kind: kind } }]));
      }
      return Promise.resolve('');
    },
  });

  assert.equal(await tun.removeLeftover(), true);
  assert.deepEqual(calls.at(-1), ['link', 'delete', 'dev', 'gw0']);
  kind = undefined;
  assert.equal(await tun.removeLeftover(), false);
  kind = 'wireguard';
  await assert.rejects(tun.removeLeftover(), /exists and is not a TUN device \(wireguard\)/);
});
