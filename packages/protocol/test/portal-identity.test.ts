import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePortalToClient } from '../src/index.ts';

const INIT = {
  interface: {
    ipv4: '100.64.0.2',
    ipv6: 'fd00:2021:1111::2',
    upstream_dns: [],
    search_domain: null,
  },
  address_ranges: {
    tunnel_ipv4: '100.64.0.0/11',
    tunnel_ipv6: 'fd00:2021:1111::/107',
    proxy_ipv4: '100.96.0.0/11',
    proxy_ipv6: 'fd00:2021:1111:8000::/107',
  },
  resources: [],
  relays: [],
};

void test('init.identity: parsed when present, absent from an older portal, a bad one read as absent', () => {
  const table: [string, unknown, unknown][] = [
    [
      'a user',
      { account_slug: 'acme', actor_name: 'alice' },
      { account_slug: 'acme', actor_name: 'alice' },
    ],
    [
      'a service account, extra fields stripped',
      { account_slug: 'acme_2', actor_name: 'ci runner', future: 1 },
      { account_slug: 'acme_2', actor_name: 'ci runner' },
    ],
    ['a slug with a space', { account_slug: 'ac me', actor_name: 'alice' }, undefined],
    ['an empty name', { account_slug: 'acme', actor_name: '' }, undefined],
    ['a name with a newline', { account_slug: 'acme', actor_name: 'a\nb' }, undefined],
    ['a name too long', { account_slug: 'acme', actor_name: 'x'.repeat(256) }, undefined],
    ['not an object', 'alice@acme', undefined],
  ];
  for (const [name, identity, expected] of table) {
    const result = parsePortalToClient('init', { ...INIT, identity });
    assert.ok(result.ok, `${name}: ${result.ok ? '' : result.problem}`);
    assert.equal(result.message.event, 'init');
    if (result.message.event === 'init')
      assert.deepEqual(result.message.payload.identity, expected, name);
  }
  const older = parsePortalToClient('init', INIT);
  assert.ok(older.ok);
  assert.ok(older.message.event === 'init' && !('identity' in older.message.payload));
});
