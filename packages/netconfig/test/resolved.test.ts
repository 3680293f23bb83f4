import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { ResolvedLinkSettings, ResolvedManager, ResolvedServer } from '../src/dns/resolved.ts';
import { ResolvedDnsControl, resolvedUpstreams } from '../src/dns/resolved.ts';

const GATEHOUSE = 9;

void describe('resolvedUpstreams', () => {
  const cases: Array<{
    name: string;
    servers: ResolvedServer[];
    defaultRouteLinks: number[];
    ownIfindex?: number;
    expected: string[];
  }> = [
    { name: 'no servers at all', servers: [], defaultRouteLinks: [], expected: [] },
    {
      name: 'global servers, in order',
      servers: [
        { ifindex: 0, address: '9.9.9.9' },
        { ifindex: 0, address: '2620:fe::fe' },
      ],
      defaultRouteLinks: [],
      expected: ['9.9.9.9', '2620:fe::fe'],
    },
    {
      name: "a default-route link's servers (DHCP on the LAN)",
      servers: [{ ifindex: 2, address: '192.168.1.1' }],
      defaultRouteLinks: [2],
      expected: ['192.168.1.1'],
    },
    {
      name: 'a link without the default route only answers its own domains (another VPN)',
      servers: [
        { ifindex: 2, address: '192.168.1.1' },
        { ifindex: 5, address: '10.50.0.53' },
      ],
      defaultRouteLinks: [2],
      expected: ['192.168.1.1'],
    },
    {
      name: "Gatehouse's own link never (a stale sentinel would loop)",
      servers: [
        { ifindex: 2, address: '192.168.1.1' },
        { ifindex: GATEHOUSE, address: '100.100.111.1' },
      ],
      defaultRouteLinks: [2, GATEHOUSE],
      ownIfindex: GATEHOUSE,
      expected: ['192.168.1.1'],
    },
    {
      name: 'IPv6 link-local servers are left out, others canonicalized and deduplicated',
      servers: [
        { ifindex: 2, address: 'fe80::1' },
        { ifindex: 2, address: '2001:DB8:0:0::53' },
        { ifindex: 3, address: '2001:db8::53' },
        { ifindex: 0, address: '192.168.1.1' },
        { ifindex: 3, address: '192.168.1.1' },
      ],
      defaultRouteLinks: [2, 3],
      expected: ['2001:db8::53', '192.168.1.1'],
    },
  ];
  for (const c of cases) {
    void it(c.name, () => {
      assert.deepEqual(
        resolvedUpstreams(c.servers, new Set(c.defaultRouteLinks), c.ownIfindex),
        c.expected,
      );
    });
  }
});

/** A resolved in memory: per-link settings, the calls made, links that vanish. */
function fakeManager(links: Record<number, ResolvedLinkSettings>, globals: string[] = []) {
  const calls: string[] = [];
  const manager: ResolvedManager = {
    setLinkDns: async (ifindex, servers) => {
      calls.push(`dns ${ifindex} ${servers.join(' ')}`);
    },
    setLinkDomains: async (ifindex, domains) => {
      calls.push(
        `domains ${ifindex} ${domains.map((d) => (d.routingOnly ? '~' : '') + d.domain).join(' ')}`,
      );
    },
    setLinkDefaultRoute: async (ifindex, defaultRoute) => {
      calls.push(`default-route ${ifindex} ${defaultRoute}`);
    },
    flushCaches: async () => {
      calls.push('flush');
    },
    revertLink: async (ifindex) => {
      calls.push(`revert ${ifindex}`);
    },
    linkSettings: async (ifindex) => {
      const settings = links[ifindex];
      if (settings === undefined) throw new Error(`Link ${ifindex} not known`);
      return settings;
    },
    dnsServers: async () => [
      ...globals.map((address) => ({ ifindex: 0, address })),
      ...Object.entries(links).flatMap(([ifindex, settings]) =>
        settings.servers.map((address) => ({ ifindex: Number(ifindex), address })),
      ),
      { ifindex: 77, address: '198.51.100.77' }, // a link gone by the time it is read
    ],
  };
  return { manager, calls };
}

const link = (servers: string[], defaultRoute: boolean): ResolvedLinkSettings => ({
  servers,
  domains: [],
  defaultRoute,
});

void describe('ResolvedDnsControl', () => {
  const control = (manager: ResolvedManager, present = true) =>
    new ResolvedDnsControl({
      interfaceName: 'tun-gatehouse',
      manager,
      interfaceIndex: async () => {
        if (!present) throw new Error('ENOENT');
        return GATEHOUSE;
      },
    });

  void it("reads the system's resolvers: global and default-route links, not its own", async () => {
    const { manager } = fakeManager(
      {
        2: link(['192.168.1.1'], true),
        5: link(['10.50.0.53'], false),
        [GATEHOUSE]: link(['100.100.111.1'], true),
      },
      ['9.9.9.9'],
    );
    assert.deepEqual(await control(manager).systemResolvers(), ['9.9.9.9', '192.168.1.1']);
    assert.deepEqual(await control(manager, false).systemResolvers(), [
      '9.9.9.9',
      '192.168.1.1',
      '100.100.111.1',
    ]);
  });

  void it('applies link DNS, domains and default route, notices trampling, reverts', async () => {
    const applied: ResolvedLinkSettings = {
      servers: ['100.100.111.1'],
      domains: [
        { domain: 'corp.example', routingOnly: false },
        { domain: '.', routingOnly: true },
      ],
      defaultRoute: true,
    };
    const links: Record<number, ResolvedLinkSettings> = { [GATEHOUSE]: applied };
    const { manager, calls } = fakeManager(links);
    const settings = { servers: ['100.100.111.1'], searchDomains: ['corp.example'] };
    await control(manager).apply(settings);
    assert.deepEqual(calls, [
      `dns ${GATEHOUSE} 100.100.111.1`,
      `domains ${GATEHOUSE} corp.example ~.`,
      `default-route ${GATEHOUSE} true`,
      'flush',
    ]);
    assert.equal(await control(manager).isTrampled(settings), false);
    links[GATEHOUSE] = link([], true);
    assert.equal(await control(manager).isTrampled(settings), true);

    await control(manager).restore();
    await control(manager, false).restore();
    assert.deepEqual(calls.slice(4), [`revert ${GATEHOUSE}`, 'flush']);
  });
});
