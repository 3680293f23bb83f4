import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAddress, parsePrefix, prefixContains } from '@gatehouse/addresses';
import { MAX_INTERNET_NETWORKS, internetNetworks } from '../src/portal-session-internet.ts';
import { prefixText } from '../src/tunnel-spec.ts';

function rest(excluded: string[]): string[] {
  return internetNetworks(excluded.map(parsePrefix)).networks.map(prefixText);
}

void describe('internetNetworks', () => {
  void it('is everything but the excluded networks, in the fewest prefixes', async (t) => {
    const cases: { name: string; excluded: string[]; networks: string[] }[] = [
      { name: 'nothing excluded', excluded: [], networks: ['0.0.0.0/0', '::/0'] },
      {
        name: 'one IPv4 /8',
        excluded: ['10.0.0.0/8'],
        networks: [
          '0.0.0.0/5',
          '8.0.0.0/7',
          '11.0.0.0/8',
          '12.0.0.0/6',
          '16.0.0.0/4',
          '32.0.0.0/3',
          '64.0.0.0/2',
          '128.0.0.0/1',
          '::/0',
        ],
      },
      {
        name: 'the upper half of IPv6',
        excluded: ['8000::/1'],
        networks: ['0.0.0.0/0', '::/1'],
      },
      { name: 'both families whole', excluded: ['0.0.0.0/0', '::/0'], networks: [] },
      {
        name: 'a network inside another excluded one',
        excluded: ['128.0.0.0/1', '192.168.0.0/16'],
        networks: ['0.0.0.0/1', '::/0'],
      },
      {
        name: 'one address',
        excluded: ['255.255.255.255/32'],
        networks: [
          ...Array.from({ length: 32 }, (_, n) => {
            const bits = 2 ** 32 - 2 ** (32 - n);
            const text = [24, 16, 8, 0]
              .map((shift) => Math.floor(bits / 2 ** shift) % 256)
              .join('.');
            return `${text}/${n + 1}`;
          }),
          '::/0',
        ],
      },
    ];
    for (const c of cases) {
      await t.test(c.name, () => {
        assert.deepEqual(rest(c.excluded), c.networks);
      });
    }
  });

  void it('covers an address exactly when no excluded network holds it', () => {
    const excluded = [
      '10.50.0.0/24',
      '10.0.0.0/8',
      '100.96.0.0/11',
      '172.16.5.0/26',
      'fd00:2021:1111:8000::/107',
      'fd00:50::/64',
      '2001:db8::1/128',
    ].map(parsePrefix);
    const networks = internetNetworks(excluded).networks.map((n) => parsePrefix(prefixText(n)));
    const probes = [
      '10.50.0.7',
      '10.1.2.3',
      '9.255.255.255',
      '11.0.0.0',
      '100.95.255.255',
      '100.96.0.5',
      '100.127.255.255',
      '100.128.0.0',
      '172.16.5.63',
      '172.16.5.64',
      '8.8.8.8',
      'fd00:2021:1111:8000::5',
      'fd00:50::1',
      'fd00:51::1',
      '2001:db8::1',
      '2001:db8::2',
      '::1',
    ];

    for (const probe of probes) {
      const { family, address } = parseAddress(probe);
      const holds = (prefixes: typeof networks) =>
        prefixes.filter((p) => p.family === family && prefixContains(p, address)).length;
      const inExcluded = holds(excluded) > 0;
      assert.equal(holds(networks), inExcluded ? 0 : 1, probe);
    }
  });

  void it('takes a family whole past MAX_INTERNET_NETWORKS prefixes', () => {
    const many = Array.from({ length: MAX_INTERNET_NETWORKS }, (_, n) =>
      parsePrefix(`10.${n >> 8}.${n & 0xff}.0/25`),
    );

    const { networks, overflow } = internetNetworks(many);

    assert.equal(overflow, true);
    assert.deepEqual(networks.map(prefixText), ['0.0.0.0/0', '::/0']);
  });
});
