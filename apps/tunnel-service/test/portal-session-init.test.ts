import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CIDR2_ID,
  CIDR_ID,
  DNS_ID,
  INTERFACE,
  INTERNET_ID,
  RANGES,
  SITE_A,
  SITE_B,
  T0,
  actions,
  cidrResource,
  dnsResource,
  drain,
  init,
  initialized,
  internetResource,
  keyBytes,
  newSession,
  resourceDeleted,
} from './portal-session-fixtures.ts';

const PROXY_ROUTES = [RANGES.proxy_ipv4, RANGES.proxy_ipv6];
const DEFAULT_ROUTES = ['0.0.0.0/0', '::/0'];

void describe('PortalSession before init', () => {
  void it('has no spec, identity or resources and asks for nothing', () => {
    const { session } = newSession();

    session.handleRouteMiss('10.50.0.7', T0);

    assert.equal(session.spec(), undefined);
    assert.equal(session.identity(), undefined);
    assert.deepEqual(session.resources(), []);
    assert.deepEqual(drain(session), []);
    assert.equal(session.nextDeadline(), undefined);
    assert.equal(session.stats().requestsSuppressed.before_init, 1);
  });
});

void describe('PortalSession init → spec()', () => {
  void it('gives the interface, MTU, DNS and the key, with no peers until authorized', () => {
    const { session } = newSession();

    session.handleMessage('init', init(), T0);

    assert.deepEqual(actions(session), [{ type: 'spec-changed' }]);
    assert.deepEqual(session.spec(), {
      interfaceName: 'gh-portal0',
      privateKey: keyBytes(0x01),
      listenPort: undefined,
      fwMark: undefined,
      addresses: [
        { family: 4, address: '100.64.0.2', prefixLength: 32 },
        { family: 6, address: 'fd00:2021:1111::2', prefixLength: 128 },
      ],
      mtu: 1280,
      peers: [],
      routes: ['10.50.0.0/24'],
      dns: { servers: ['1.1.1.1', '2606:4700:4700::1111'], searchDomains: ['corp.example'] },
      dnsResources: [],
      proxyRanges: { ipv4: RANGES.proxy_ipv4, ipv6: RANGES.proxy_ipv6 },
      lanBypass: true,
    });
  });

  void it('routes each resource as its options allow', async (t) => {
    const cases: {
      name: string;
      resources: Record<string, unknown>[];
      internetResource?: boolean;
      routes: string[];
      dnsResources?: string[];
    }[] = [
      { name: 'no resources', resources: [], routes: [] },
      {
        name: 'two CIDR resources, host bits cleared',
        resources: [
          cidrResource({ address: '10.50.0.9/24' }),
          cidrResource({ id: CIDR2_ID, address: 'fd00:50::/64' }),
        ],
        routes: ['10.50.0.0/24', 'fd00:50::/64'],
      },
      {
        name: 'a DNS resource: the proxy ranges',
        resources: [dnsResource()],
        routes: PROXY_ROUTES,
        dnsResources: ['*.corp.example'],
      },
      {
        name: 'two DNS resources: the ranges once, each pattern',
        resources: [
          dnsResource(),
          dnsResource({ id: id5(), address: 'gitlab.example.com', name: 'gitlab' }),
        ],
        routes: PROXY_ROUTES,
        dnsResources: ['*.corp.example', 'gitlab.example.com'],
      },
      {
        name: 'the Internet resource offered and enabled',
        resources: [internetResource()],
        routes: DEFAULT_ROUTES,
      },
      {
        name: 'the Internet resource offered but disabled',
        resources: [internetResource()],
        internetResource: false,
        routes: [],
      },
      {
        name: 'every kind',
        resources: [cidrResource(), dnsResource(), internetResource()],
        routes: [...DEFAULT_ROUTES, '10.50.0.0/24', ...PROXY_ROUTES].sort(),
        dnsResources: ['*.corp.example'],
      },
    ];
    for (const c of cases) {
      await t.test(c.name, () => {
        const { session } = newSession(
          c.internetResource === undefined ? {} : { internetResource: c.internetResource },
        );

        session.handleMessage('init', init({ resources: c.resources }), T0);

        const spec = session.spec();
        assert.ok(spec !== undefined);
        assert.deepEqual([...spec.routes].sort(), [...c.routes].sort());
        assert.deepEqual(spec.dnsResources, c.dnsResources ?? []);
        assert.deepEqual(spec.peers, []);
      });
    }
  });

  void it('takes the upstream DNS servers that are addresses on port 53, counting the rest', async (t) => {
    const cases: { name: string; upstream: string[]; servers: string[]; skipped: number }[] = [
      { name: 'none: the system resolvers', upstream: [], servers: [], skipped: 0 },
      {
        name: 'IPv4 and IPv6',
        upstream: ['9.9.9.9:53', '[::1]:53'],
        servers: ['9.9.9.9', '::1'],
        skipped: 0,
      },
      {
        name: 'a duplicate',
        upstream: ['9.9.9.9:53', '9.9.9.9:53'],
        servers: ['9.9.9.9'],
        skipped: 0,
      },
      { name: 'another port', upstream: ['9.9.9.9:5353'], servers: [], skipped: 1 },
      {
        name: 'a host name',
        upstream: ['dns.example.com:53', '9.9.9.9:53'],
        servers: ['9.9.9.9'],
        skipped: 1,
      },
    ];
    for (const c of cases) {
      await t.test(c.name, () => {
        const { session } = newSession();
        const upstream_dns = c.upstream.map((address) => ({ protocol: 'ip_port', address }));

        session.handleMessage('init', init({ interface: { ...INTERFACE, upstream_dns } }), T0);

        assert.deepEqual(session.spec()?.dns.servers, c.servers);
        assert.equal(session.stats().upstreamDnsSkipped, c.skipped);
      });
    }
  });

  void it('takes the MTU and LAN bypass options', () => {
    const { session } = initialized(init(), { mtu: 1400, lanBypass: false });

    assert.equal(session.spec()?.mtu, 1400);
    assert.equal(session.spec()?.lanBypass, false);
  });

  void it('takes a search domain without its trailing dot, and none', () => {
    const dotted = initialized(
      init({ interface: { ...INTERFACE, search_domain: 'corp.example.' } }),
    );
    const none = initialized(init({ interface: { ...INTERFACE, search_domain: null } }));

    assert.deepEqual(dotted.session.spec()?.dns.searchDomains, ['corp.example']);
    assert.deepEqual(none.session.spec()?.dns.searchDomains, []);
  });
});

void describe('PortalSession identity()', () => {
  void it('is who the init says signed in', () => {
    const { session } = initialized();

    assert.deepEqual(session.identity(), { accountSlug: 'acme', actorName: 'Alice Example' });
  });

  void it('is undefined for an older portal without one', () => {
    const payload = init();
    delete payload.identity;
    const { session } = initialized(payload);

    assert.equal(session.identity(), undefined);
    assert.equal(session.stats().invalidIdentity, 0);
  });

  void it('counts an unusable identity and leaves it out, keeping the init', async (t) => {
    const cases: { name: string; identity: unknown }[] = [
      { name: 'a string', identity: 'alice' },
      { name: 'an empty name', identity: { account_slug: 'acme', actor_name: '' } },
      { name: 'control characters', identity: { account_slug: 'acme', actor_name: 'a\u001b[2Jb' } },
      { name: 'a missing slug', identity: { actor_name: 'Alice' } },
      { name: 'a slug with a space', identity: { account_slug: 'acme corp', actor_name: 'Alice' } },
      {
        name: 'a slug of 101 characters',
        identity: { account_slug: 'a'.repeat(101), actor_name: 'Alice' },
      },
      { name: 'a huge name', identity: { account_slug: 'acme', actor_name: 'x'.repeat(100_000) } },
    ];
    for (const c of cases) {
      await t.test(c.name, () => {
        const { session } = initialized(init({ identity: c.identity }));

        assert.equal(session.identity(), undefined);
        assert.equal(session.stats().invalidIdentity, 1);
        assert.deepEqual(session.spec()?.routes, ['10.50.0.0/24']);
      });
    }
  });

  void it('follows a later init', () => {
    const { session } = initialized();

    session.handleMessage(
      'init',
      init({ identity: { account_slug: 'acme', actor_name: 'Bob' } }),
      T0 + 1,
    );

    assert.deepEqual(session.identity(), { accountSlug: 'acme', actorName: 'Bob' });
  });
});

void describe('PortalSession resources()', () => {
  void it('lists the resources by name with their site and its status', () => {
    const { session } = initialized(
      init({
        resources: [
          cidrResource({ name: 'b-lab', status: 'online' }),
          dnsResource({ name: 'a-wiki', status: 'offline' }),
          internetResource({ name: 'c-internet', status: 'unknown' }),
          cidrResource({
            id: CIDR2_ID,
            name: 'd-nosite',
            address: '10.60.0.0/16',
            sites: [],
            status: 'unknown',
          }),
        ],
      }),
    );

    assert.deepEqual(session.resources(), [
      {
        id: DNS_ID,
        name: 'a-wiki',
        type: 'dns',
        address: '*.corp.example',
        siteName: SITE_A.name,
        siteStatus: 'offline',
        authorized: false,
      },
      {
        id: CIDR_ID,
        name: 'b-lab',
        type: 'cidr',
        address: '10.50.0.0/24',
        siteName: SITE_A.name,
        siteStatus: 'online',
        authorized: false,
      },
      {
        id: INTERNET_ID,
        name: 'c-internet',
        type: 'internet',
        address: null,
        siteName: SITE_B.name,
        siteStatus: 'unknown',
        authorized: false,
      },
      {
        id: CIDR2_ID,
        name: 'd-nosite',
        type: 'cidr',
        address: '10.60.0.0/16',
        siteName: null,
        siteStatus: 'unknown',
        authorized: false,
      },
    ]);
  });

  void it('reads an unknown site status as unknown', () => {
    const { session } = initialized(init({ resources: [cidrResource({ status: 'napping' })] }));

    assert.equal(session.resources()[0]?.siteStatus, 'unknown');
  });

  void it('leaves out resources of unknown types and counts them', () => {
    const { session } = initialized(
      init({
        resources: [cidrResource(), { id: id5(), type: 'static_device_pool', name: 'IoT' }],
      }),
    );

    assert.deepEqual(
      session.resources().map((r) => r.id),
      [CIDR_ID],
    );
    assert.equal(session.stats().ignoredResources, 1);
  });

  void it('leaves out resources of known types that do not parse and counts them', () => {
    const { session } = initialized(
      init({
        resources: [cidrResource(), { ...cidrResource(), id: CIDR2_ID, address: '10.0.0.0/33' }],
      }),
    );

    assert.deepEqual(
      session.resources().map((r) => r.id),
      [CIDR_ID],
    );
    assert.equal(session.stats().invalidResources, 1);
  });
});

void describe('PortalSession resource pushes after init', () => {
  void it('adds, updates and removes resources and their routes', () => {
    const { session } = initialized();

    session.handleMessage('resource_created_or_updated', dnsResource(), T0 + 1);
    const added = session.spec()?.routes;
    session.handleMessage(
      'resource_created_or_updated',
      cidrResource({ address: '10.51.0.0/24' }),
      T0 + 2,
    );
    const updated = session.spec()?.routes;
    session.handleMessage('resource_deleted', resourceDeleted(DNS_ID), T0 + 3);
    const removed = session.spec();

    assert.deepEqual(added, ['10.50.0.0/24', ...PROXY_ROUTES].sort());
    assert.deepEqual(updated, ['10.51.0.0/24', ...PROXY_ROUTES].sort());
    assert.deepEqual(removed?.routes, ['10.51.0.0/24']);
    assert.deepEqual(removed?.dnsResources, []);
  });

  void it('follows config_changed (the interface, and the ranges when given)', () => {
    const { session } = initialized(init({ resources: [dnsResource()] }));
    const ranges = { ...RANGES, proxy_ipv4: '100.100.0.0/16' };

    session.handleMessage(
      'config_changed',
      { interface: { ...INTERFACE, ipv4: '100.64.0.3', upstream_dns: [] } },
      T0 + 1,
    );
    const changed = session.spec();
    session.handleMessage(
      'config_changed',
      { interface: INTERFACE, address_ranges: ranges },
      T0 + 2,
    );

    assert.deepEqual(changed?.addresses[0], {
      family: 4,
      address: '100.64.0.3',
      prefixLength: 32,
    });
    assert.deepEqual(changed?.dns.servers, []);
    assert.deepEqual(changed?.proxyRanges.ipv4, RANGES.proxy_ipv4);
    assert.deepEqual(session.spec()?.proxyRanges.ipv4, '100.100.0.0/16');
    assert.ok(session.spec()?.routes.includes('100.100.0.0/16'));
  });

  void it('ignores resource pushes before init, counting them', () => {
    const { session } = newSession();

    session.handleMessage('resource_created_or_updated', cidrResource(), T0);
    session.handleMessage('resource_deleted', resourceDeleted(CIDR_ID), T0);
    session.handleMessage('config_changed', { interface: INTERFACE }, T0);

    assert.equal(session.spec(), undefined);
    assert.deepEqual(session.resources(), []);
    assert.equal(session.stats().ignored, 3);
    assert.deepEqual(actions(session), []);
  });

  void it('ignores a deletion of a resource it does not have', () => {
    const { session } = initialized();
    const before = structuredClone(session.spec());

    session.handleMessage('resource_deleted', resourceDeleted(CIDR2_ID), T0 + 1);

    assert.deepEqual(session.spec(), before);
    assert.equal(session.stats().ignored, 1);
    assert.deepEqual(actions(session), []);
  });
});

function id5(): string {
  return '00000000-0000-4000-8000-000000000005';
}
