import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  GatewayTable,
  parseCounter,
  renderTable,
  renderTableRemoval,
  type TablePlan,
} from '../src/nftables.ts';

const HEAD = `table inet gatehouse_gateway {
\tcounter proxy_unmapped {
\t}
\tmap dnat4 {
\t\ttype ipv4_addr . ipv4_addr : ipv4_addr
\t}
\tmap dnat6 {
\t\ttype ipv6_addr . ipv6_addr : ipv6_addr
\t}
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t}
}
flush chain inet gatehouse_gateway prerouting
flush chain inet gatehouse_gateway forward
flush chain inet gatehouse_gateway postrouting
flush map inet gatehouse_gateway dnat4
flush map inet gatehouse_gateway dnat6
`;

const DNAT_RULES = `add rule inet gatehouse_gateway prerouting iifname "gatehouse-gw" dnat ip to ip saddr . ip daddr map @dnat4
add rule inet gatehouse_gateway prerouting iifname "gatehouse-gw" dnat ip6 to ip6 saddr . ip6 daddr map @dnat6
`;

const RANGES = {
  tunnelRanges: { ipv4: '100.64.0.0/11', ipv6: 'fd00:2021:1111::/107' },
  proxyRanges: { ipv4: '100.96.0.0/11', ipv6: 'fd00:2021:1111:8000::/107' },
};

const RANGE_RULES = `add rule inet gatehouse_gateway forward iifname "gatehouse-gw" ip daddr 100.96.0.0/11 counter name "proxy_unmapped" drop
add rule inet gatehouse_gateway forward iifname "gatehouse-gw" ip6 daddr fd00:2021:1111:8000::/107 counter name "proxy_unmapped" drop
add rule inet gatehouse_gateway postrouting ip saddr 100.64.0.0/11 oifname != "gatehouse-gw" masquerade
add rule inet gatehouse_gateway postrouting ip6 saddr fd00:2021:1111::/107 oifname != "gatehouse-gw" masquerade
`;

const cases: { name: string; plan: TablePlan; text: string; duplicates?: number }[] = [
  {
    name: 'before the first init: the chains, maps and counter, only the DNAT lookups',
    plan: { tunnelRanges: undefined, proxyRanges: undefined, dnat: [] },
    text: HEAD + DNAT_RULES,
  },
  {
    name: 'ranges without DNS flows: masquerade and the proxy drop, empty maps',
    plan: { ...RANGES, dnat: [] },
    text: HEAD + DNAT_RULES + RANGE_RULES,
  },
  {
    name: 'DNS flows of both families, addresses written canonically',
    plan: {
      ...RANGES,
      dnat: [
        {
          family: 4,
          clientAddress: '100.64.0.2',
          proxyAddress: '100.96.0.1',
          realAddress: '10.0.0.5',
        },
        {
          family: 4,
          clientAddress: '100.64.0.3',
          proxyAddress: '100.96.0.1',
          realAddress: '10.0.0.6',
        },
        {
          family: 6,
          clientAddress: 'FD00:2021:1111:0:0:0:0:2',
          proxyAddress: 'fd00:2021:1111:8000::1',
          realAddress: '2001:db8::5',
        },
      ],
    },
    text:
      HEAD +
      'add element inet gatehouse_gateway dnat4 { 100.64.0.2 . 100.96.0.1 : 10.0.0.5, 100.64.0.3 . 100.96.0.1 : 10.0.0.6 }\n' +
      'add element inet gatehouse_gateway dnat6 { fd00:2021:1111::2 . fd00:2021:1111:8000::1 : 2001:db8::5 }\n' +
      DNAT_RULES +
      RANGE_RULES,
  },
  {
    name: 'a second mapping for the same (client, proxy) is left out and counted',
    plan: {
      tunnelRanges: undefined,
      proxyRanges: undefined,
      dnat: [
        {
          family: 4,
          clientAddress: '100.64.0.2',
          proxyAddress: '100.96.0.1',
          realAddress: '10.0.0.5',
        },
        {
          family: 4,
          clientAddress: '100.64.0.2',
          proxyAddress: '100.96.0.1',
          realAddress: '10.0.0.9',
        },
      ],
    },
    text:
      HEAD +
      'add element inet gatehouse_gateway dnat4 { 100.64.0.2 . 100.96.0.1 : 10.0.0.5 }\n' +
      DNAT_RULES,
    duplicates: 1,
  },
];

for (const { name, plan, text, duplicates } of cases) {
  void test(`renderTable: ${name}`, () => {
    const rendered = renderTable(plan, 'gatehouse-gw');
    assert.equal(rendered.text, text);
    assert.equal(rendered.duplicateMappings, duplicates ?? 0);
  });
}

void test('renderTable: ranges are written as networks (host bits cleared)', () => {
  const rendered = renderTable(
    {
      tunnelRanges: { ipv4: '100.64.0.1/11', ipv6: 'fd00:2021:1111::1/107' },
      proxyRanges: undefined,
      dnat: [],
    },
    'gw0',
  );
  assert.match(rendered.text, /ip saddr 100\.64\.0\.0\/11 oifname != "gw0" masquerade/);
  assert.match(rendered.text, /ip6 saddr fd00:2021:1111::\/107 oifname != "gw0" masquerade/);
});

const refusals: { name: string; plan: TablePlan; interfaceName?: string; error: RegExp }[] = [
  {
    name: 'an interface name that could break out of the quotes',
    plan: { tunnelRanges: undefined, proxyRanges: undefined, dnat: [] },
    interfaceName: 'gw" accept',
    error: /not an interface name/,
  },
  {
    name: 'an IPv6 address in an IPv4 mapping',
    plan: {
      tunnelRanges: undefined,
      proxyRanges: undefined,
      dnat: [
        {
          family: 4,
          clientAddress: '100.64.0.2',
          proxyAddress: '100.96.0.1',
          realAddress: '2001:db8::1',
        },
      ],
    },
    error: /is not an IPv4 address/,
  },
  {
    name: 'text that is not an address',
    plan: {
      tunnelRanges: undefined,
      proxyRanges: undefined,
      dnat: [
        {
          family: 4,
          clientAddress: '100.64.0.2; flush ruleset',
          proxyAddress: '100.96.0.1',
          realAddress: '10.0.0.1',
        },
      ],
    },
    error: /not an IP address/,
  },
  {
    name: 'an IPv4 range where IPv6 belongs',
    plan: {
      tunnelRanges: { ipv4: '100.64.0.0/11', ipv6: '100.65.0.0/16' },
      proxyRanges: undefined,
      dnat: [],
    },
    error: /is not an IPv6 prefix/,
  },
];

for (const { name, plan, interfaceName, error } of refusals) {
  void test(`renderTable refuses ${name}`, () => {
    assert.throws(() => renderTable(plan, interfaceName ?? 'gatehouse-gw'), error);
  });
}

void test('renderTableRemoval declares the table first, so deleting a missing table does not fail', () => {
  assert.equal(
    renderTableRemoval(),
    'table inet gatehouse_gateway\ndelete table inet gatehouse_gateway\n',
  );
});

void test('GatewayTable runs nft -f - with the rendered text, and counts failures', async () => {
  const calls: { args: readonly string[]; input: string | undefined }[] = [];
  let fail = false;
  const table = new GatewayTable({
    interfaceName: 'gatehouse-gw',
    nft: (args, input) => {
      calls.push({ args, input });
      return fail ? Promise.reject(new Error('nft: syntax error')) : Promise.resolve('');
    },
  });
  const plan: TablePlan = { ...RANGES, dnat: [] };

  await table.apply(plan);
  fail = true;
  await assert.rejects(table.apply(plan), /syntax error/);
  fail = false;
  await table.remove();

  assert.deepEqual(
    calls.map((call) => call.args),
    [
      ['-f', '-'],
      ['-f', '-'],
      ['-f', '-'],
    ],
  );
  assert.equal(calls[0]?.input, renderTable(plan, 'gatehouse-gw').text);
  assert.equal(calls[2]?.input, renderTableRemoval());
  assert.equal(table.applyFailures, 1);
});

void test('parseCounter reads the proxy_unmapped counter of nft -j output', () => {
  const json = JSON.stringify({
    nftables: [
      { metainfo: { version: '1.0.6' } },
      {
        counter: {
          family: 'inet',
          name: 'proxy_unmapped',
          table: 'gatehouse_gateway',
          packets: 3,
          bytes: 252,
        },
      },
    ],
  });
  assert.deepEqual(parseCounter(json), { packets: 3, bytes: 252 });
  assert.equal(parseCounter('{"nftables": []}'), undefined);
  assert.equal(parseCounter('not json'), undefined);
});
