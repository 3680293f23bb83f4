import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { AddressJson, FamilyState, RoutingIdentity } from '../src/routes/routing-plan.ts';
import {
  normalizePrefix,
  planAddresses,
  planFlush,
  planRouting,
} from '../src/routes/routing-plan.ts';

const IDENTITY: RoutingIdentity = {
  interfaceName: 'tun-gatehouse',
  mark: 0x4748,
  table: 18248,
  priority: 18240,
  protocol: 71,
};
const RESOURCE_RULE = {
  priority: 18240,
  not: null,
  fwmark: '0x4748',
  table: '18248',
  suppress_prefixlen: 0,
  protocol: '71',
};
const EMPTY: FamilyState = { rules: [], routes: [] };

void describe('planRouting', () => {
  const cases: Array<{
    name: string;
    family: 4 | 6;
    current: FamilyState;
    prefixes: string[];
    lanBypass?: boolean;
    lines: string[];
  }> = [
    {
      name: 'first routes add the route and the resource rule',
      family: 4,
      current: EMPTY,
      prefixes: ['10.0.0.0/8', 'fd00::/8'],
      lines: [
        'route replace 10.0.0.0/8 dev tun-gatehouse table 18248 proto 71',
        'rule add priority 18240 not fwmark 0x4748 lookup 18248 suppress_prefixlength 0 protocol 71',
      ],
    },
    {
      name: 'IPv6 host routes are written as /128 in canonical form',
      family: 6,
      current: { rules: [RESOURCE_RULE], routes: [] },
      prefixes: ['FD00:0:0:0::1'],
      lines: ['route replace fd00::1/128 dev tun-gatehouse table 18248 proto 71'],
    },
    {
      name: 'a /0 turns on full tunnel: default route plus LAN-bypass and default rules',
      family: 4,
      current: { rules: [RESOURCE_RULE], routes: [{ dst: '10.0.0.0/8' }] },
      prefixes: ['10.0.0.0/8', '0.0.0.0/0'],
      lines: [
        'route replace 0.0.0.0/0 dev tun-gatehouse table 18248 proto 71',
        'rule add priority 18241 lookup main suppress_prefixlength 0 protocol 71',
        'rule add priority 18242 not fwmark 0x4748 lookup 18248 protocol 71',
      ],
    },
    {
      name: 'a /0 without the LAN bypass: no main-table rule, the LAN goes into the tunnel too',
      family: 6,
      current: EMPTY,
      prefixes: ['::/0'],
      lanBypass: false,
      lines: [
        'route replace ::/0 dev tun-gatehouse table 18248 proto 71',
        'rule add priority 18240 not fwmark 0x4748 lookup 18248 suppress_prefixlength 0 protocol 71',
        'rule add priority 18242 not fwmark 0x4748 lookup 18248 protocol 71',
      ],
    },
    {
      name: 'the LAN bypass turned off while in full tunnel removes its rule',
      family: 4,
      current: {
        rules: [
          RESOURCE_RULE,
          { priority: 18241, table: 'main', suppress_prefixlen: 0, protocol: '71' },
          { priority: 18242, not: null, fwmark: '0x4748', table: '18248', protocol: '71' },
        ],
        routes: [{ dst: 'default' }],
      },
      prefixes: ['0.0.0.0/0'],
      lanBypass: false,
      lines: ['rule del priority 18241 lookup main suppress_prefixlength 0 protocol 71'],
    },
    {
      name: 'without a /0 the LAN bypass setting changes nothing',
      family: 4,
      current: { rules: [RESOURCE_RULE], routes: [{ dst: '10.0.0.0/8' }] },
      prefixes: ['10.0.0.0/8'],
      lanBypass: false,
      lines: [],
    },
    {
      name: 'dropping the /0 leaves full tunnel; ip lists it as "default"',
      family: 4,
      current: {
        rules: [
          RESOURCE_RULE,
          { priority: 18241, table: 'main', suppress_prefixlen: 0, protocol: '71' },
          { priority: 18242, not: null, fwmark: '0x4748', table: '18248', protocol: '71' },
        ],
        routes: [{ dst: 'default' }, { dst: '10.0.0.0/8' }],
      },
      prefixes: ['10.0.0.0/8'],
      lines: [
        'rule del priority 18241 lookup main suppress_prefixlength 0 protocol 71',
        'rule del priority 18242 not fwmark 0x4748 lookup 18248 protocol 71',
        'route del 0.0.0.0/0 table 18248 proto 71',
      ],
    },
    {
      name: 'host routes listed without a length are matched, nothing to do',
      family: 4,
      current: { rules: [RESOURCE_RULE], routes: [{ dst: '10.9.9.9' }] },
      prefixes: ['10.9.9.9/32'],
      lines: [],
    },
    {
      name: 'rules of others (no protocol, other priority) are never touched',
      family: 4,
      current: {
        rules: [
          { priority: 18240, table: 'main' },
          { priority: 100, table: '5', protocol: '71' },
        ],
        routes: [],
      },
      prefixes: [],
      lines: [
        'rule add priority 18240 not fwmark 0x4748 lookup 18248 suppress_prefixlength 0 protocol 71',
      ],
    },
  ];
  for (const { name, family, current, prefixes, lanBypass, lines } of cases) {
    const options = lanBypass === undefined ? {} : { lanBypass };
    void it(name, () =>
      assert.deepEqual(planRouting(IDENTITY, family, current, prefixes, options), lines),
    );
  }
});

void describe('planFlush', () => {
  void it('deletes own rules by priority and protocol, and own routes in any table', () => {
    const lines = planFlush(
      IDENTITY,
      6,
      [
        RESOURCE_RULE,
        { priority: 18245, table: 'main' },
        { priority: 32766, table: 'main', protocol: '71' },
      ],
      [
        { dst: 'default', table: '18248' },
        { dst: 'fd00::/8', table: '18248' },
        { dst: '2001:db8::/32', table: 'main', type: 'unreachable' },
      ],
    );
    assert.deepEqual(lines, [
      'rule del priority 18240 protocol 71',
      'route del ::/0 table 18248 proto 71',
      'route del fd00::/8 table 18248 proto 71',
      'route del unreachable 2001:db8::/32 table main proto 71',
    ]);
  });
});

void describe('planAddresses', () => {
  void it('adds missing, removes extra global addresses, keeps link-local ones, and skips IPv6 DAD', () => {
    const current = [
      { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' },
      { family: 'inet6', local: 'fd00::1', prefixlen: 128, scope: 'global' },
      { family: 'inet', local: '100.64.0.9', prefixlen: 32, scope: 'global' },
    ];
    assert.deepEqual(planAddresses(IDENTITY, 6, current, ['fd00::2/128', '100.64.0.2/32']), [
      'address add fd00::2/128 dev tun-gatehouse nodad',
      'address del fd00::1/128 dev tun-gatehouse',
    ]);
  });

  void it('keeps each address with its prefix as written (host bits kept), as wg-quick assigns them', () => {
    const current = [
      { family: 'inet', local: '10.8.0.2', prefixlen: 24, scope: 'global' },
      { family: 'inet', local: '10.9.0.2', prefixlen: 32, scope: 'global' },
    ];
    assert.deepEqual(
      planAddresses(IDENTITY, 4, current, ['10.8.0.2/24', '10.9.0.2/16', '100.100.111.1/32']),
      [
        'address add 10.9.0.2/16 dev tun-gatehouse',
        'address add 100.100.111.1/32 dev tun-gatehouse',
        'address del 10.9.0.2/32 dev tun-gatehouse',
      ],
    );
    assert.deepEqual(planAddresses(IDENTITY, 6, [], ['fd00:a::2/64']), [
      'address add fd00:a::2/64 dev tun-gatehouse nodad',
    ]);
  });

  const listenOnlyCases: Array<{
    name: string;
    family: 4 | 6;
    current: AddressJson[];
    lines: string[];
  }> = [
    {
      name: 'IPv4 listen-only addresses get scope host',
      family: 4,
      current: [],
      lines: [
        'address add 10.8.0.2/24 dev tun-gatehouse',
        'address add 100.100.111.1/32 dev tun-gatehouse scope host',
      ],
    },
    {
      name: 'IPv6 listen-only addresses are deprecated, without DAD',
      family: 6,
      current: [],
      lines: [
        'address add fd00:a::2/64 dev tun-gatehouse nodad',
        'address add fd00:2021:1111:8000:100:100:111:1/128 dev tun-gatehouse nodad preferred_lft 0',
      ],
    },
    {
      name: 'a listen-only address already there stays; one no longer wanted goes',
      family: 4,
      current: [
        { family: 'inet', local: '10.8.0.2', prefixlen: 24, scope: 'global' },
        { family: 'inet', local: '100.100.111.1', prefixlen: 32, scope: 'host' },
        { family: 'inet', local: '100.100.111.2', prefixlen: 32, scope: 'host' },
      ],
      lines: ['address del 100.100.111.2/32 dev tun-gatehouse'],
    },
  ];
  for (const c of listenOnlyCases) {
    void it(c.name, () => {
      assert.deepEqual(
        planAddresses(
          IDENTITY,
          c.family,
          c.current,
          ['10.8.0.2/24', 'fd00:a::2/64'],
          ['100.100.111.1', 'fd00:2021:1111:8000:100:100:111:1'],
        ),
        c.lines,
      );
    });
  }
});

void describe('normalizePrefix', () => {
  const cases: Array<[input: string, family: 4 | 6 | undefined, output: string]> = [
    ['default', 4, '0.0.0.0/0'],
    ['default', 6, '::/0'],
    ['10.0.0.1', undefined, '10.0.0.1/32'],
    ['FD00:2021:1111:8000:0:0:0:0/107', undefined, 'fd00:2021:1111:8000::/107'],
    ['10.0.0.2/24', undefined, '10.0.0.2/24'],
    ['::FFFF:10.0.0.1/128', undefined, '::ffff:10.0.0.1/128'],
  ];
  for (const [input, family, output] of cases) {
    void it(`${input} → ${output}`, () => assert.equal(normalizePrefix(input, family), output));
  }
});
