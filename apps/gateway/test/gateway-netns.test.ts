/**
 * The gateway's nftables table against the real `nft`, in namespaces this
 * test makes: a "client" namespace whose veth the table treats as the TUN, a
 * gateway namespace holding the table, and a resource host. A ping to a
 * mapped proxy address reaches the real address (DNAT) from the gateway's
 * own address (masquerade); one to an unmapped proxy address is dropped and
 * counted; the table reads back as applied; an empty plan empties it; the
 * removal deletes it and leaves an unrelated table alone. Then the TUN
 * configuration against a real TUN device.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import {
  systemTestSkipReason,
  withTestNetwork,
  type TestNetwork,
} from '../../../test/lib/netns.ts';
import { GatewayTable, type TablePlan } from '../src/nftables.ts';
import type { SystemCommand } from '../src/system-commands.ts';
import { TunInterface } from '../src/tun-interface.ts';

const TUN = 'ghgw-tun';

const PLAN: TablePlan = {
  tunnelRanges: { ipv4: '100.64.0.0/11', ipv6: 'fd00:2021:1111::/107' },
  proxyRanges: { ipv4: '100.96.0.0/11', ipv6: 'fd00:2021:1111:8000::/107' },
  dnat: [
    {
      family: 4,
      clientAddress: '100.64.0.2',
      proxyAddress: '100.96.0.1',
      realAddress: '10.77.1.2',
    },
    {
      family: 6,
      clientAddress: 'fd00:2021:1111::2',
      proxyAddress: 'fd00:2021:1111:8000::1',
      realAddress: 'fd77:1::2',
    },
  ],
};

interface NftItem {
  table?: { family: string; name: string };
  map?: { name: string; elem?: unknown[] };
  rule?: { chain: string; expr: Record<string, unknown>[] };
}

function commandIn(network: TestNetwork, namespace: string, tool: string): SystemCommand {
  return async (args, input) =>
    (await network.exec(namespace, [tool, ...args], input === undefined ? {} : { input })).stdout;
}

async function listTable(network: TestNetwork, namespace: string): Promise<NftItem[]> {
  const { stdout } = await network.exec(namespace, [
    'nft',
    '-j',
    'list',
    'table',
    'inet',
    'gatehouse_gateway',
  ]);
  return (JSON.parse(stdout) as { nftables: NftItem[] }).nftables;
}

async function tables(network: TestNetwork, namespace: string): Promise<string[]> {
  const { stdout } = await network.exec(namespace, ['nft', '-j', 'list', 'tables']);
  return (JSON.parse(stdout) as { nftables: NftItem[] }).nftables.flatMap((item) =>
    item.table === undefined ? [] : [`${item.table.family} ${item.table.name}`],
  );
}

async function pings(
  network: TestNetwork,
  namespace: string,
  destination: string,
): Promise<boolean> {
  const family = destination.includes(':') ? '-6' : '-4';
  try {
    await network.exec(namespace, ['ping', family, '-c', '1', '-W', '2', destination]);
    return true;
  } catch {
    return false;
  }
}

void test('the nftables table: DNAT, masquerade, the counted drop, atomic replace and removal', async (t) => {
  const skip = systemTestSkipReason(['ip', 'nft', 'ping']);
  if (skip !== undefined) return skipLoudly(t, skip);

  await withTestNetwork('gwnft', async (network) => {
    const client = await network.addNamespace();
    const gateway = await network.addNamespace();
    const resource = await network.addNamespace();
    // The client's veth end in the gateway is named like the TUN: the table's rules key on it.
    await network.addVethPair(
      { namespace: client, name: 'veth0', address: '100.64.0.2/32' },
      { namespace: gateway, name: TUN, address: '100.64.0.1/32' },
    );
    await network.addVethPair(
      { namespace: gateway, name: 'lan0', address: '10.77.1.1/24' },
      { namespace: resource, name: 'lan0', address: '10.77.1.2/24' },
    );
    const sh = (namespace: string, ...argv: string[]) => network.exec(namespace, argv);
    const v6 = (namespace: string, address: string, device: string) =>
      sh(namespace, 'ip', 'address', 'add', address, 'dev', device, 'nodad');
    await v6(client, 'fd00:2021:1111::2/128', 'veth0');
    await v6(gateway, 'fd00:2021:1111::1/128', TUN);
    await v6(gateway, 'fd77:1::1/64', 'lan0');
    await v6(resource, 'fd77:1::2/64', 'lan0');
    await sh(client, 'ip', 'route', 'add', '100.64.0.1/32', 'dev', 'veth0');
    await sh(client, 'ip', 'route', 'add', '100.96.0.0/11', 'via', '100.64.0.1', 'dev', 'veth0');
    await sh(client, 'ip', '-6', 'route', 'add', 'fd00:2021:1111::1/128', 'dev', 'veth0');
    await sh(
      client,
      'ip',
      '-6',
      'route',
      'add',
      'fd00:2021:1111:8000::/107',
      'via',
      'fd00:2021:1111::1',
    );
    await sh(gateway, 'ip', 'route', 'add', '100.64.0.0/11', 'dev', TUN);
    await sh(gateway, 'ip', '-6', 'route', 'add', 'fd00:2021:1111::/107', 'dev', TUN);
    // The gateway's way out for whatever the DNAT leaves alone: the forward chain sees it.
    await sh(gateway, 'ip', 'route', 'add', 'default', 'via', '10.77.1.2');
    await sh(gateway, 'ip', '-6', 'route', 'add', 'default', 'via', 'fd77:1::2');
    await sh(gateway, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
    await sh(gateway, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.forwarding=1');
    await sh(
      gateway,
      'nft',
      'add table inet other; add chain inet other input { type filter hook input priority 0; policy accept; }',
    );
    const table = new GatewayTable({ interfaceName: TUN, nft: commandIn(network, gateway, 'nft') });

    await table.apply(PLAN);
    await table.apply(PLAN); // applying again over the table is the same transaction

    const items = await listTable(network, gateway);
    const map = (name: string) => items.find((item) => item.map?.name === name)?.map?.elem;
    assert.deepEqual(map('dnat4'), [[{ concat: ['100.64.0.2', '100.96.0.1'] }, '10.77.1.2']]);
    assert.deepEqual(map('dnat6'), [
      [{ concat: ['fd00:2021:1111::2', 'fd00:2021:1111:8000::1'] }, 'fd77:1::2'],
    ]);
    const rules = (chain: string) => items.filter((item) => item.rule?.chain === chain).length;
    assert.deepEqual(
      {
        prerouting: rules('prerouting'),
        forward: rules('forward'),
        postrouting: rules('postrouting'),
      },
      { prerouting: 2, forward: 2, postrouting: 2 },
    );
    assert.ok(
      items.some((item) => item.rule?.expr.some((expression) => 'masquerade' in expression)),
      'a masquerade rule',
    );

    // The resource has no route to the tunnel ranges: it answers only what came masqueraded.
    const reach = async (destination: string) => pings(network, client, destination);
    assert.equal(await reach('100.96.0.1'), true, 'the mapped proxy address answers');
    assert.equal(await reach('fd00:2021:1111:8000::1'), true, 'so does the IPv6 one');
    assert.equal(await reach('100.96.0.2'), false, 'an unmapped proxy address does not');
    assert.equal(await reach('fd00:2021:1111:8000::2'), false, 'nor an IPv6 one');
    assert.deepEqual(await table.unmapped(), { packets: 2, bytes: 84 + 104 });

    await table.apply({ ...PLAN, dnat: [] });
    const emptied = await listTable(network, gateway);
    assert.equal(emptied.find((item) => item.map?.name === 'dnat4')?.map?.elem, undefined);
    assert.equal(await pings(network, client, '100.96.0.1'), false, 'the mapping is gone');
    assert.deepEqual(
      await table.unmapped(),
      { packets: 3, bytes: 84 + 104 + 84 },
      'the counter kept counting across the replace',
    );

    await table.remove();
    await table.remove(); // a missing table is not an error
    assert.deepEqual(await tables(network, gateway), ['inet other']);
    assert.equal(await table.unmapped(), undefined);
  });
});

void test('the TUN: leftover removal, MTU and link, host addresses, tagged routes', async (t) => {
  const skip = systemTestSkipReason(['ip']);
  if (skip !== undefined) return skipLoudly(t, skip);

  await withTestNetwork('gwtun', async (network) => {
    const namespace = await network.addNamespace();
    const ip = commandIn(network, namespace, 'ip');
    await ip(['tuntap', 'add', 'dev', TUN, 'mode', 'tun']);
    const tun = new TunInterface({ interfaceName: TUN, ip, ipv6: true });

    assert.equal(await tun.removeLeftover(), true);
    assert.equal(await tun.kind(), undefined);
    await ip(['tuntap', 'add', 'dev', TUN, 'mode', 'tun']);
    await tun.bringUp(1280);
    await tun.setAddresses({ ipv4: '100.64.0.1', ipv6: 'fd00:2021:1111::1' });
    await tun.setAddresses({ ipv4: '100.64.0.9', ipv6: 'fd00:2021:1111::1' });
    await tun.setRoutes({ ipv4: '100.64.0.0/11', ipv6: 'fd00:2021:1111::/107' });
    await tun.setRoutes({ ipv4: '100.64.0.0/11', ipv6: 'fd00:2021:1111::/107' });

    const [link] = JSON.parse(await ip(['-json', 'address', 'show', 'dev', TUN])) as {
      mtu: number;
      flags: string[];
      addr_info: { local: string; prefixlen: number; scope: string }[];
    }[];
    assert.equal(link?.mtu, 1280);
    assert.equal(link?.flags.includes('MULTICAST'), false);
    assert.equal(link?.flags.includes('UP'), true);
    assert.equal(link?.addr_info.filter((a) => a.scope === 'link').length, 0, 'no link-local');
    assert.deepEqual(
      link?.addr_info.filter((a) => a.scope === 'global').map((a) => `${a.local}/${a.prefixlen}`),
      ['100.64.0.9/32', 'fd00:2021:1111::1/128'],
    );
    const routes = async (family: string) =>
      (
        JSON.parse(await ip([family, '-json', 'route', 'show', 'dev', TUN, 'proto', '71'])) as {
          dst: string;
        }[]
      ).map((route) => route.dst);
    assert.deepEqual(await routes('-4'), ['100.64.0.0/11']);
    assert.deepEqual(await routes('-6'), ['fd00:2021:1111::/107']);

    await tun.remove();
    await tun.remove();
    assert.equal(await tun.kind(), undefined);
  });
});
