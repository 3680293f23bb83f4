import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAddress, parsePrefix, prefixContains } from '@gatehouse/addresses';
import {
  FAILURE_BACKOFF_INITIAL_MS,
  FAILURE_BACKOFF_MAX_MS,
  MAX_AUTHORIZED_NAMES,
  MAX_NAMES_PER_RESOURCE,
  MAX_PENDING_REQUESTS,
  NAME_CHECK_INTERVAL_MS,
  REQUEST_TIMEOUT_MS,
} from '../src/portal-session.ts';
import type { IpNetwork, PeerSpec } from '../src/tunnel-spec.ts';
import {
  CIDR2_ID,
  CIDR_ID,
  DNS_ID,
  GATEWAY_A,
  GATEWAY_B,
  INTERFACE,
  INTERNET_ID,
  RANGES,
  SITE_B,
  T0,
  actions,
  authorizationCreated,
  authorizationFailed,
  authorize,
  cidrResource,
  dnsResource,
  drain,
  init,
  initialized,
  internetResource,
  keyBytes,
  keyText,
  miss,
  newSession,
  resourceDeleted,
} from './portal-session-fixtures.ts';

const EVERY_KIND = init({
  resources: [
    cidrResource(),
    cidrResource({ id: CIDR2_ID, name: 'lab v6', address: 'fd00:50::/64' }),
    dnsResource(),
    internetResource(),
  ],
});

function network(text: string): IpNetwork {
  const [address = '', length = ''] = text.split('/');
  return { family: address.includes(':') ? 6 : 4, address, prefixLength: Number(length) };
}

/** The index of the peer whose most specific allowed IP holds `address` (the engine's choice). */
function coveringPeer(peers: readonly PeerSpec[], address: string): number | undefined {
  const { family, address: bytes } = parseAddress(address);
  let best: { index: number; length: number } | undefined;
  for (const [index, peer] of peers.entries()) {
    for (const allowed of peer.allowedIps) {
      const prefix = parsePrefix(`${allowed.address}/${allowed.prefixLength}`);
      if (prefix.family !== family || !prefixContains(prefix, bytes)) continue;
      if (best === undefined || prefix.length > best.length)
        best = { index, length: prefix.length };
    }
  }
  return best?.index;
}

const GATEWAY_A_OWN = [network('100.64.0.10/32'), network('fd00:2021:1111::10/128')];

void describe('PortalSession route misses', () => {
  void it('asks for the resource covering each kind of destination', async (t) => {
    const cases: { name: string; destination: string; request: Record<string, unknown> }[] = [
      {
        name: 'an IPv4 CIDR resource',
        destination: '10.50.0.7',
        request: { resource_id: CIDR_ID, connected_gateway_ids: [] },
      },
      {
        name: 'an IPv6 CIDR resource, the address in any spelling',
        destination: 'FD00:50:0::0:7',
        request: { resource_id: CIDR2_ID, connected_gateway_ids: [] },
      },
      {
        name: 'anything else: the Internet resource',
        destination: '198.51.100.1',
        request: { resource_id: INTERNET_ID, connected_gateway_ids: [] },
      },
      {
        name: 'a proxy address the stub gave a DNS resource name, with that name',
        destination: '100.96.0.5',
        request: {
          resource_id: DNS_ID,
          connected_gateway_ids: [],
          domain: {
            name: 'wiki.corp.example',
            proxy_ips: ['100.96.0.5', 'fd00:2021:1111:8000::5'],
          },
        },
      },
    ];
    for (const c of cases) {
      await t.test(c.name, () => {
        const harness = initialized(EVERY_KIND);
        harness.stub.add('Wiki.Corp.Example.', ['100.96.0.5', 'fd00:2021:1111:8000::5']);

        const sent = miss(harness.session, c.destination, T0);

        assert.deepEqual(sent, [c.request]);
        assert.equal(harness.session.stats().requestsSent, 1);
        assert.equal(harness.session.stats().pendingRequests, 1);
      });
    }
  });

  void it('asks the most specific CIDR resource', () => {
    const { session } = initialized(
      init({
        resources: [
          cidrResource({ address: '10.0.0.0/8' }),
          cidrResource({ id: CIDR2_ID, address: '10.50.7.0/24' }),
        ],
      }),
    );

    assert.deepEqual(
      miss(session, '10.50.7.1', T0).map((r) => r.resource_id),
      [CIDR2_ID],
    );
    assert.deepEqual(
      miss(session, '10.50.8.1', T0).map((r) => r.resource_id),
      [CIDR_ID],
    );
  });

  void it('counts destinations covered by nothing and asks nothing', async (t) => {
    const cases: {
      name: string;
      destination: string;
      internetResource?: boolean;
      stub?: [string, string[]];
      reason: string;
    }[] = [
      { name: 'not an address', destination: 'wiki.corp.example', reason: 'not_an_address' },
      { name: 'an empty string', destination: '', reason: 'not_an_address' },
      {
        name: 'no resource, the Internet resource disabled',
        destination: '198.51.100.1',
        internetResource: false,
        reason: 'no_resource',
      },
      {
        name: 'a proxy address the stub does not know',
        destination: '100.96.0.9',
        reason: 'unknown_proxy_address',
      },
      {
        name: 'a proxy address whose name no DNS resource matches',
        destination: '100.96.0.6',
        stub: ['printer.elsewhere.example', ['100.96.0.6']],
        reason: 'unmatched_name',
      },
      {
        name: 'a stub answer not holding the address',
        destination: '100.96.0.7',
        stub: ['wiki.corp.example', ['100.96.0.8']],
        reason: 'lookup_failed',
      },
      {
        name: 'a stub answer with a name that is not a DNS name',
        destination: '100.96.0.7',
        stub: ['wiki corp\u0000example', ['100.96.0.7']],
        reason: 'lookup_failed',
      },
    ];
    for (const c of cases) {
      await t.test(c.name, () => {
        const harness = initialized(
          EVERY_KIND,
          c.internetResource === undefined ? {} : { internetResource: c.internetResource },
        );
        if (c.stub !== undefined) {
          const [name, proxyAddresses] = c.stub;
          harness.stub.set(c.destination, { name, proxyAddresses });
        }

        const sent = miss(harness.session, c.destination, T0);

        assert.deepEqual(sent, []);
        const stats = harness.session.stats();
        assert.equal(stats.routeMisses, 1);
        assert.equal(stats.requestsSent, 0);
        assert.equal((stats.unroutable as Record<string, number>)[c.reason], 1);
      });
    }
  });

  void it('counts a stub lookup that throws as lookup_failed', () => {
    const harness = initialized(EVERY_KIND, {
      lookupProxyAddress: () => {
        throw new Error('stub gone');
      },
    });

    const sent = miss(harness.session, '100.96.0.5', T0);

    assert.deepEqual(sent, []);
    assert.equal(harness.session.stats().unroutable.lookup_failed, 1);
    assert.equal(harness.session.stats().internalErrors, 0);
  });

  void it('asks once per resource while unanswered, again after the request timeout', () => {
    const { session } = initialized(EVERY_KIND);

    const first = miss(session, '10.50.0.7', T0);
    const flood = [1, 2, 3, REQUEST_TIMEOUT_MS - 1].flatMap((dt) =>
      miss(session, `10.50.0.${dt % 200}`, T0 + dt),
    );
    const other = miss(session, '198.51.100.1', T0 + 5);
    const deadline = session.nextDeadline();
    const again = miss(session, '10.50.0.7', T0 + REQUEST_TIMEOUT_MS);

    assert.equal(first.length, 1);
    assert.deepEqual(flood, []);
    assert.deepEqual(
      other.map((r) => r.resource_id),
      [INTERNET_ID],
    );
    assert.equal(deadline, T0 + REQUEST_TIMEOUT_MS);
    assert.deepEqual(
      again.map((r) => r.resource_id),
      [CIDR_ID],
    );
    const stats = session.stats();
    assert.equal(stats.requestsSent, 3);
    assert.equal(stats.requestsSuppressed.in_flight, 4);
    assert.equal(stats.requestRetries, 1);
    assert.equal(stats.requestsTimedOut, 1);
  });

  void it('counts a request that timed out through handleTimeout as a retry when sent again', () => {
    const { session } = initialized(EVERY_KIND);
    miss(session, '10.50.0.7', T0);

    session.handleTimeout(T0 + REQUEST_TIMEOUT_MS);
    const deadline = session.nextDeadline();
    const again = miss(session, '10.50.0.7', T0 + REQUEST_TIMEOUT_MS + 1);

    assert.equal(deadline, undefined);
    assert.equal(again.length, 1);
    const stats = session.stats();
    assert.equal(stats.requestsTimedOut, 1);
    assert.equal(stats.requestRetries, 1);
  });

  void it('asks once per name of a DNS resource while unanswered', () => {
    const harness = initialized(EVERY_KIND);
    harness.stub.add('wiki.corp.example', ['100.96.0.5']);
    harness.stub.add('git.corp.example', ['100.96.0.6']);

    const wiki = miss(harness.session, '100.96.0.5', T0);
    const wikiAgain = miss(harness.session, '100.96.0.5', T0 + 1);
    const git = miss(harness.session, '100.96.0.6', T0 + 2);

    assert.equal(wiki.length, 1);
    assert.deepEqual(wikiAgain, []);
    assert.deepEqual(
      git.map((r) => (r.domain as { name: string }).name),
      ['git.corp.example'],
    );
  });

  void it('backs off after a refusal: 1 s doubling to the 30 s cap, then asks again', () => {
    const { session } = initialized(EVERY_KIND);
    const delays = [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000];
    let now = T0;
    assert.equal(miss(session, '10.50.0.7', now).length, 1);

    for (const delay of delays) {
      session.handleMessage('authorization_creation_failed', authorizationFailed(CIDR_ID), now);
      drain(session);

      assert.deepEqual(miss(session, '10.50.0.7', now + delay - 1), [], `within ${delay} ms`);
      assert.equal(miss(session, '10.50.0.7', now + delay).length, 1, `after ${delay} ms`);
      now += delay;
    }

    assert.equal(delays[0], FAILURE_BACKOFF_INITIAL_MS);
    assert.equal(delays.at(-1), FAILURE_BACKOFF_MAX_MS);
    const stats = session.stats();
    assert.equal(stats.authorizationFailures.offline, delays.length);
    assert.equal(stats.requestsSuppressed.backoff, delays.length);
    assert.equal(stats.backoffs, 1);
  });

  void it('a backoff is per resource, and an authorization ends it', () => {
    const harness = initialized(EVERY_KIND);
    const { session } = harness;
    miss(session, '10.50.0.7', T0);
    session.handleMessage('authorization_creation_failed', authorizationFailed(CIDR_ID), T0);

    const other = miss(session, 'fd00:50::1', T0 + 1);
    const retried = miss(session, '10.50.0.7', T0 + FAILURE_BACKOFF_INITIAL_MS);
    session.handleMessage('authorization_created', authorizationCreated(CIDR_ID), T0 + 1_001);

    assert.equal(other.length, 1);
    assert.equal(retried.length, 1);
    assert.equal(session.stats().backoffs, 0);
  });

  void it('counts refusals of each reason, an unknown one as unknown', () => {
    const { session } = initialized(EVERY_KIND);

    for (const reason of ['forbidden', 'not_found', 'something_new']) {
      session.handleMessage('authorization_creation_failed', { resource_id: CIDR_ID, reason }, T0);
    }

    const failures = session.stats().authorizationFailures;
    assert.equal(failures.forbidden, 1);
    assert.equal(failures.not_found, 1);
    assert.equal(failures.unknown, 1);
    assert.deepEqual(actions(session), []);
  });
});

void describe('PortalSession authorization_created', () => {
  void it("puts the resource on its gateway's peer", () => {
    const harness = initialized(EVERY_KIND);
    miss(harness.session, '10.50.0.7', T0);

    harness.session.handleMessage('authorization_created', authorizationCreated(CIDR_ID), T0 + 5);

    assert.deepEqual(actions(harness.session), [{ type: 'spec-changed' }]);
    assert.deepEqual(harness.session.spec()?.peers, [
      {
        publicKey: keyBytes(GATEWAY_A.keyFill),
        presharedKey: keyBytes(GATEWAY_A.pskFill),
        endpoint: { host: '203.0.113.7', port: 51820 },
        allowedIps: [...GATEWAY_A_OWN, network('10.50.0.0/24')],
        persistentKeepalive: 25,
      },
    ]);
    assert.equal(harness.session.resources().find((r) => r.id === CIDR_ID)?.authorized, true);
    const stats = harness.session.stats();
    assert.equal(stats.authorizations, 1);
    assert.equal(stats.authorizedResources, 1);
    assert.equal(stats.gateways, 1);
    assert.equal(stats.pendingRequests, 0);
  });

  void it('unions the allowed IPs of resources on the same gateway, one peer per gateway', () => {
    const harness = initialized(EVERY_KIND);
    harness.stub.add('wiki.corp.example', ['100.96.0.5', 'fd00:2021:1111:8000::5']);

    authorize(harness, '10.50.0.7', CIDR_ID, T0);
    authorize(harness, 'fd00:50::1', CIDR2_ID, T0 + 1);
    authorize(harness, '100.96.0.5', DNS_ID, T0 + 2);
    authorize(harness, '198.51.100.1', INTERNET_ID, T0 + 3, GATEWAY_B, { site_id: SITE_B.id });

    const peers = harness.session.spec()?.peers ?? [];
    assert.equal(peers.length, 2);
    assert.deepEqual(peers[0]?.allowedIps, [
      ...GATEWAY_A_OWN,
      network('10.50.0.0/24'),
      network('100.96.0.5/32'),
      network('fd00:2021:1111:8000::5/128'),
      network('fd00:50::/64'),
    ]);
    assert.deepEqual(peers[1]?.publicKey, keyBytes(GATEWAY_B.keyFill));
    assert.deepEqual(peers[1]?.endpoint, { host: '2001:db8::8', port: 51821 });
    assert.deepEqual(peers[1]?.allowedIps.slice(0, 2), [
      network('100.64.0.11/32'),
      network('fd00:2021:1111::11/128'),
    ]);
    assert.equal(coveringPeer(peers, '8.8.8.8'), 1);
    assert.equal(coveringPeer(peers, '2001:db8::1'), 1);
  });

  void it('names the connected gateways in later requests', () => {
    const harness = initialized(EVERY_KIND);
    authorize(harness, '10.50.0.7', CIDR_ID, T0);

    const sent = miss(harness.session, 'fd00:50::1', T0 + 1);

    assert.deepEqual(sent, [{ resource_id: CIDR2_ID, connected_gateway_ids: [GATEWAY_A.id] }]);
  });

  void it('suppresses route misses to what is already authorized', () => {
    const harness = initialized(EVERY_KIND);
    authorize(harness, '10.50.0.7', CIDR_ID, T0);

    const sent = miss(harness.session, '10.50.0.8', T0 + 1);

    assert.deepEqual(sent, []);
    assert.equal(harness.session.stats().requestsSuppressed.already_authorized, 1);
  });

  void it('takes a gateway endpoint host name as it is', () => {
    const harness = initialized(EVERY_KIND);

    authorize(harness, '10.50.0.7', CIDR_ID, T0, GATEWAY_A, {
      gateway_endpoints: ['gw.example.com:51820', '203.0.113.7:51820'],
    });

    assert.deepEqual(harness.session.spec()?.peers[0]?.endpoint, {
      host: 'gw.example.com',
      port: 51820,
    });
  });

  void it('authorizes a second name of a DNS resource on the same peer', () => {
    const harness = initialized(EVERY_KIND);
    harness.stub.add('wiki.corp.example', ['100.96.0.5']);
    harness.stub.add('git.corp.example', ['100.96.0.6']);

    authorize(harness, '100.96.0.5', DNS_ID, T0);
    authorize(harness, '100.96.0.6', DNS_ID, T0 + 1);

    assert.deepEqual(harness.session.spec()?.peers[0]?.allowedIps, [
      ...GATEWAY_A_OWN,
      network('100.96.0.5/32'),
      network('100.96.0.6/32'),
    ]);
    assert.deepEqual(miss(harness.session, '100.96.0.6', T0 + 2), []);
  });

  void it('does not use an authorization it cannot use, counting why', async (t) => {
    const cases: {
      name: string;
      payload: () => Record<string, unknown>;
      request?: string;
      internetResource?: boolean;
      reason: string;
    }[] = [
      {
        name: 'an unknown resource',
        payload: () => authorizationCreated('00000000-0000-4000-8000-0000000000ff'),
        reason: 'unknown_resource',
      },
      {
        name: 'the Internet resource while disabled',
        payload: () => authorizationCreated(INTERNET_ID),
        internetResource: false,
        reason: 'internet_resource_off',
      },
      {
        name: 'a DNS resource with no name asked for',
        payload: () => authorizationCreated(DNS_ID),
        reason: 'unrequested_name',
      },
      {
        name: 'from a site that does not serve the resource',
        payload: () => authorizationCreated(CIDR_ID, GATEWAY_A, { site_id: SITE_B.id }),
        request: '10.50.0.7',
        reason: 'wrong_site',
      },
      {
        name: 'already expired',
        payload: () => authorizationCreated(CIDR_ID, GATEWAY_A, { expires_at: T0 }),
        request: '10.50.0.7',
        reason: 'already_expired',
      },
    ];
    for (const c of cases) {
      await t.test(c.name, () => {
        const harness = initialized(
          EVERY_KIND,
          c.internetResource === undefined ? {} : { internetResource: c.internetResource },
        );
        if (c.request !== undefined) miss(harness.session, c.request, T0);
        const before = structuredClone(harness.session.spec());

        harness.session.handleMessage('authorization_created', c.payload(), T0);

        assert.deepEqual(harness.session.spec(), before);
        assert.deepEqual(actions(harness.session), []);
        const ignored = harness.session.stats().authorizationsIgnored as Record<string, number>;
        assert.equal(ignored[c.reason], 1);
        assert.equal(harness.session.stats().authorizations, 0);
        if (c.request !== undefined) {
          // Asked again only after a backoff, as after a refusal.
          assert.deepEqual(miss(harness.session, c.request, T0 + 1), []);
          assert.equal(miss(harness.session, c.request, T0 + FAILURE_BACKOFF_INITIAL_MS).length, 1);
        }
      });
    }
  });

  void it('ignores an authorization before init', () => {
    const { session } = newSession();

    session.handleMessage('authorization_created', authorizationCreated(CIDR_ID), T0);

    assert.equal(session.spec(), undefined);
    assert.equal(session.stats().authorizationsIgnored.before_init, 1);
    assert.deepEqual(actions(session), []);
  });

  void it('uses a late answer to a DNS request that timed out', () => {
    const harness = initialized(EVERY_KIND);
    harness.stub.add('wiki.corp.example', ['100.96.0.5']);
    miss(harness.session, '100.96.0.5', T0);
    harness.session.handleTimeout(T0 + REQUEST_TIMEOUT_MS);

    harness.session.handleMessage(
      'authorization_created',
      authorizationCreated(DNS_ID),
      T0 + REQUEST_TIMEOUT_MS + 500,
    );

    assert.deepEqual(harness.session.spec()?.peers[0]?.allowedIps, [
      ...GATEWAY_A_OWN,
      network('100.96.0.5/32'),
    ]);
    assert.equal(harness.session.stats().authorizationsIgnored.unrequested_name, 0);
  });

  void it('a proxy address the stub gave another name moves to that name', () => {
    const harness = initialized(EVERY_KIND);
    harness.stub.add('wiki.corp.example', ['100.96.0.5', '100.96.0.6']);
    authorize(harness, '100.96.0.5', DNS_ID, T0);
    harness.stub.add('git.corp.example', ['100.96.0.6']);

    authorize(harness, '100.96.0.6', DNS_ID, T0 + 1);

    assert.deepEqual(harness.session.spec()?.peers[0]?.allowedIps, [
      ...GATEWAY_A_OWN,
      network('100.96.0.5/32'),
      network('100.96.0.6/32'),
    ]);
    assert.equal(miss(harness.session, '100.96.0.6', T0 + 2).length, 0);
  });

  void it('a later authorization of the same resource takes its new expiry', () => {
    const harness = initialized(EVERY_KIND);
    authorize(harness, '10.50.0.7', CIDR_ID, T0, GATEWAY_A, { expires_at: T0 + 1_000 });

    harness.session.handleMessage(
      'authorization_created',
      authorizationCreated(CIDR_ID, GATEWAY_A, { expires_at: T0 + 5_000 }),
      T0 + 500,
    );
    harness.session.handleTimeout(T0 + 1_000);

    assert.equal(harness.session.nextDeadline(), T0 + 5_000);
    assert.equal(harness.session.spec()?.peers.length, 1);
  });

  void it('a gateway key under a new gateway id replaces the old gateway and its resources', () => {
    const harness = initialized(EVERY_KIND);
    authorize(harness, '10.50.0.7', CIDR_ID, T0);
    const renamed = { ...GATEWAY_B, keyFill: GATEWAY_A.keyFill };

    authorize(harness, 'fd00:50::1', CIDR2_ID, T0 + 1, renamed);

    const peers = harness.session.spec()?.peers ?? [];
    assert.equal(peers.length, 1);
    assert.deepEqual(peers[0]?.allowedIps, [
      network('100.64.0.11/32'),
      network('fd00:2021:1111::11/128'),
      network('fd00:50::/64'),
    ]);
    assert.equal(harness.session.stats().authorizationsEnded.gateway_replaced, 1);
    assert.equal(harness.session.stats().gateways, 1);
  });
});

void describe('PortalSession authorization ends', () => {
  void it('expires at expires_at, by handleTimeout, with nextDeadline saying when', () => {
    const harness = initialized(EVERY_KIND);
    const expiresAt = T0 + 60_000;
    authorize(harness, '10.50.0.7', CIDR_ID, T0, GATEWAY_A, { expires_at: expiresAt });
    authorize(harness, 'fd00:50::1', CIDR2_ID, T0, GATEWAY_A, { expires_at: null });

    const deadline = harness.session.nextDeadline();
    harness.session.handleTimeout(expiresAt - 1);
    const early = actions(harness.session);
    harness.session.handleTimeout(expiresAt);
    const due = actions(harness.session);

    assert.equal(deadline, expiresAt);
    assert.deepEqual(early, []);
    assert.deepEqual(due, [{ type: 'spec-changed' }]);
    assert.deepEqual(harness.session.spec()?.peers[0]?.allowedIps, [
      ...GATEWAY_A_OWN,
      network('fd00:50::/64'),
    ]);
    assert.equal(harness.session.nextDeadline(), undefined);
    assert.equal(harness.session.stats().authorizationsEnded.expired, 1);
    assert.equal(miss(harness.session, '10.50.0.7', expiresAt + 1).length, 1);
  });

  void it('takes the peer away with its last resource', () => {
    const harness = initialized(EVERY_KIND);
    authorize(harness, '10.50.0.7', CIDR_ID, T0, GATEWAY_A, { expires_at: T0 + 1_000 });

    harness.session.handleTimeout(T0 + 1_000);

    assert.deepEqual(harness.session.spec()?.peers, []);
    assert.equal(harness.session.stats().gateways, 0);
  });

  void it("expires each name of a DNS resource at its own authorization's end", () => {
    const harness = initialized(EVERY_KIND);
    harness.stub.add('wiki.corp.example', ['100.96.0.5']);
    harness.stub.add('git.corp.example', ['100.96.0.6']);
    authorize(harness, '100.96.0.5', DNS_ID, T0, GATEWAY_A, { expires_at: T0 + 1_000 });
    authorize(harness, '100.96.0.6', DNS_ID, T0, GATEWAY_A, { expires_at: T0 + 2_000 });

    const first = harness.session.nextDeadline();
    harness.session.handleTimeout(T0 + 1_000);
    const after = harness.session.spec()?.peers[0]?.allowedIps;
    const second = harness.session.nextDeadline();
    harness.session.handleTimeout(T0 + 2_000);

    assert.equal(first, T0 + 1_000);
    assert.deepEqual(after, [...GATEWAY_A_OWN, network('100.96.0.6/32')]);
    assert.equal(second, T0 + 2_000);
    assert.deepEqual(harness.session.spec()?.peers, []);
    assert.equal(harness.session.stats().authorizationsEnded.expired, 1);
  });

  void it("a gateway's handshake failure drops its resources and only those", () => {
    const harness = initialized(EVERY_KIND);
    authorize(harness, '10.50.0.7', CIDR_ID, T0);
    authorize(harness, 'fd00:50::1', CIDR2_ID, T0);
    authorize(harness, '198.51.100.1', INTERNET_ID, T0, GATEWAY_B, { site_id: SITE_B.id });

    harness.session.handlePeerHandshakeFailed(keyText(GATEWAY_A.keyFill), T0 + 1);

    assert.deepEqual(actions(harness.session), [{ type: 'spec-changed' }]);
    const peers = harness.session.spec()?.peers ?? [];
    assert.deepEqual(
      peers.map((p) => p.publicKey),
      [keyBytes(GATEWAY_B.keyFill)],
    );
    const stats = harness.session.stats();
    assert.equal(stats.authorizationsEnded.handshake_failed, 2);
    assert.equal(stats.handshakeFailures, 1);
    assert.equal(miss(harness.session, '10.50.0.7', T0 + 2).length, 1);
  });

  void it('counts a handshake failure of a peer it does not know and changes nothing', () => {
    const harness = initialized(EVERY_KIND);
    authorize(harness, '10.50.0.7', CIDR_ID, T0);
    const before = structuredClone(harness.session.spec());

    harness.session.handlePeerHandshakeFailed(keyText(0x77), T0 + 1);

    assert.deepEqual(harness.session.spec(), before);
    assert.deepEqual(actions(harness.session), []);
    assert.equal(harness.session.stats().handshakeFailuresUnknownPeer, 1);
  });

  void it('resource_deleted removes its authorization and its route', () => {
    const harness = initialized(EVERY_KIND);
    authorize(harness, '10.50.0.7', CIDR_ID, T0);
    authorize(harness, 'fd00:50::1', CIDR2_ID, T0);

    harness.session.handleMessage('resource_deleted', resourceDeleted(CIDR_ID), T0 + 1);

    const spec = harness.session.spec();
    assert.deepEqual(spec?.peers[0]?.allowedIps, [...GATEWAY_A_OWN, network('fd00:50::/64')]);
    assert.ok(!spec?.routes.includes('10.50.0.0/24'));
    assert.equal(harness.session.stats().authorizationsEnded.resource_gone, 1);
  });

  void it('an update moving the resource to another site removes its authorization', () => {
    const harness = initialized(EVERY_KIND);
    authorize(harness, '10.50.0.7', CIDR_ID, T0);

    harness.session.handleMessage(
      'resource_created_or_updated',
      cidrResource({ sites: [SITE_B] }),
      T0 + 1,
    );

    assert.deepEqual(harness.session.spec()?.peers, []);
    assert.equal(harness.session.stats().authorizationsEnded.resource_gone, 1);
  });

  void it('a later init keeps the authorizations of resources still offered, drops the rest', () => {
    const harness = initialized(EVERY_KIND);
    authorize(harness, '10.50.0.7', CIDR_ID, T0);
    authorize(harness, 'fd00:50::1', CIDR2_ID, T0);
    const cidrOnly = init({ resources: [cidrResource(), dnsResource(), internetResource()] });

    harness.session.handleMessage('init', cidrOnly, T0 + 1);

    assert.deepEqual(actions(harness.session), [{ type: 'spec-changed' }]);
    assert.deepEqual(harness.session.spec()?.peers[0]?.allowedIps, [
      ...GATEWAY_A_OWN,
      network('10.50.0.0/24'),
    ]);
    assert.equal(harness.session.stats().authorizationsEnded.resource_gone, 1);
  });

  void it('a later init with the same resources changes nothing', () => {
    const harness = initialized(EVERY_KIND);
    authorize(harness, '10.50.0.7', CIDR_ID, T0);
    const before = structuredClone(harness.session.spec());

    harness.session.handleMessage('init', EVERY_KIND, T0 + 1);

    assert.deepEqual(harness.session.spec(), before);
    assert.deepEqual(actions(harness.session), []);
  });
});

void describe('PortalSession bounds', () => {
  /** The n-th name of the DNS resource, with one proxy address of its own. */
  function name(n: number): { name: string; address: string } {
    return { name: `host${n}.corp.example`, address: `100.96.${n >> 8}.${n & 0xff}` };
  }

  void it('holds at most MAX_PENDING_REQUESTS requests in time; timed-out ones make room', () => {
    const harness = initialized(EVERY_KIND);
    for (let n = 0; n <= MAX_PENDING_REQUESTS; n += 1) {
      const { name: host, address } = name(n);
      harness.stub.add(host, [address]);
    }

    const sent = Array.from({ length: MAX_PENDING_REQUESTS }, (_, n) =>
      miss(harness.session, name(n).address, T0),
    ).flat();
    const refused = miss(harness.session, name(MAX_PENDING_REQUESTS).address, T0);
    harness.session.handleTimeout(T0 + REQUEST_TIMEOUT_MS);
    const later = miss(
      harness.session,
      name(MAX_PENDING_REQUESTS).address,
      T0 + REQUEST_TIMEOUT_MS,
    );

    assert.equal(sent.length, MAX_PENDING_REQUESTS);
    assert.deepEqual(refused, []);
    assert.equal(later.length, 1);
    const stats = harness.session.stats();
    assert.equal(stats.requestsSuppressed.pending_full, 1);
    assert.equal(stats.pendingRequests, 1);
  });

  void it('keeps at most MAX_NAMES_PER_RESOURCE names of one DNS resource, the oldest going', () => {
    const harness = initialized(EVERY_KIND);

    for (let n = 0; n <= MAX_NAMES_PER_RESOURCE; n += 1) {
      const { name: host, address } = name(n);
      harness.stub.add(host, [address]);
      authorize(harness, address, DNS_ID, T0 + n);
    }

    const allowed = harness.session.spec()?.peers[0]?.allowedIps ?? [];
    assert.equal(allowed.length, 2 + MAX_NAMES_PER_RESOURCE);
    assert.ok(!allowed.some((n) => n.address === name(0).address));
    assert.ok(allowed.some((n) => n.address === name(MAX_NAMES_PER_RESOURCE).address));
    assert.equal(harness.session.stats().namesEvicted, 1);
    assert.equal(miss(harness.session, name(0).address, T0 + 1_000).length, 1);
  });
});

void describe('PortalSession bounds across resources', () => {
  void it('keeps at most MAX_AUTHORIZED_NAMES names in all, the oldest going', () => {
    const zones = Math.ceil(MAX_AUTHORIZED_NAMES / MAX_NAMES_PER_RESOURCE) + 1;
    const zoneId = (zone: number) =>
      `00000000-0000-4000-8000-0000000a${zone.toString(16).padStart(4, '0')}`;
    const harness = initialized(
      init({
        resources: Array.from({ length: zones }, (_, zone) =>
          dnsResource({ id: zoneId(zone), name: `zone ${zone}`, address: `*.z${zone}.example` }),
        ),
      }),
    );
    let now = T0;

    for (let zone = 0; zone < zones; zone += 1) {
      for (let n = 0; n < MAX_NAMES_PER_RESOURCE; n += 1) {
        const address = `100.96.${zone}.${n}`;
        harness.stub.add(`h${n}.z${zone}.example`, [address]);
        authorize(harness, address, zoneId(zone), (now += 1));
      }
    }

    const stats = harness.session.stats();
    const allowed = harness.session.spec()?.peers[0]?.allowedIps ?? [];
    assert.equal(allowed.length, 2 + MAX_AUTHORIZED_NAMES);
    assert.equal(stats.namesEvicted, zones * MAX_NAMES_PER_RESOURCE - MAX_AUTHORIZED_NAMES);
    assert.ok(!allowed.some((n) => n.address === '100.96.0.0'), 'the oldest name went');
    assert.ok(
      allowed.some((n) => n.address === `100.96.${zones - 1}.255`),
      'the newest stayed',
    );
    assert.equal(stats.authorizedResources, zones - 1);
    assert.equal(stats.authorizationsEnded.resource_gone, 0);
  });
});

void describe('PortalSession DNS authorizations and the stub', () => {
  const changes: { name: string; payload: Record<string, unknown>; drops: boolean }[] = [
    {
      name: 'new upstream servers',
      payload: { interface: { ...INTERFACE, upstream_dns: [] } },
      drops: true,
    },
    {
      name: 'a new search domain',
      payload: { interface: { ...INTERFACE, search_domain: 'other.example' } },
      drops: true,
    },
    {
      name: 'new proxy ranges',
      payload: {
        interface: INTERFACE,
        address_ranges: { ...RANGES, proxy_ipv4: '100.100.0.0/16' },
      },
      drops: true,
    },
    {
      name: 'a new interface address only',
      payload: { interface: { ...INTERFACE, ipv4: '100.64.0.3' } },
      drops: false,
    },
    { name: 'nothing new', payload: { interface: INTERFACE }, drops: false },
  ];
  for (const c of changes) {
    void it(`config_changed with ${c.name}: the DNS names ${c.drops ? 'go' : 'stay'}`, () => {
      const harness = initialized(EVERY_KIND);
      harness.stub.add('wiki.corp.example', ['100.96.0.5']);
      authorize(harness, '100.96.0.5', DNS_ID, T0);
      authorize(harness, '10.50.0.7', CIDR_ID, T0);

      harness.session.handleMessage('config_changed', c.payload, T0 + 1);

      const allowed = harness.session.spec()?.peers[0]?.allowedIps ?? [];
      assert.equal(
        allowed.some((n) => n.address === '100.96.0.5'),
        !c.drops,
      );
      assert.ok(allowed.some((n) => n.address === '10.50.0.0'));
      assert.equal(harness.session.stats().authorizationsEnded.dns_reset, c.drops ? 1 : 0);
      assert.equal(miss(harness.session, '100.96.0.5', T0 + 2).length, c.drops ? 1 : 0);
    });
  }

  void it('a reconnect init with the same settings keeps the DNS names', () => {
    const harness = initialized(EVERY_KIND);
    harness.stub.add('wiki.corp.example', ['100.96.0.5']);
    authorize(harness, '100.96.0.5', DNS_ID, T0);

    harness.session.handleMessage('init', EVERY_KIND, T0 + 1);

    assert.equal(harness.session.stats().authorizationsEnded.dns_reset, 0);
    assert.equal(harness.session.resources().find((r) => r.id === DNS_ID)?.authorized, true);
    assert.equal(harness.session.stats().upstreamDnsSkipped, 0);
  });
});

void describe('PortalSession DNS names the stub lets go', () => {
  function withName(): ReturnType<typeof initialized> {
    const harness = initialized(EVERY_KIND);
    harness.stub.add('wiki.corp.example', ['100.96.0.5', 'fd00:2021:1111:8000::5']);
    authorize(harness, '100.96.0.5', DNS_ID, T0);
    authorize(harness, '10.50.0.7', CIDR_ID, T0);
    return harness;
  }

  void it('checks them every NAME_CHECK_INTERVAL_MS while there are any', () => {
    const harness = withName();

    const first = harness.session.nextDeadline();
    harness.session.handleTimeout(T0 + NAME_CHECK_INTERVAL_MS);
    const kept = actions(harness.session);
    const second = harness.session.nextDeadline();

    assert.equal(first, T0 + NAME_CHECK_INTERVAL_MS);
    assert.deepEqual(kept, []);
    assert.equal(second, T0 + 2 * NAME_CHECK_INTERVAL_MS);
    assert.equal(harness.session.stats().namesReleased, 0);
  });

  const cases: {
    name: string;
    change: (stub: ReturnType<typeof initialized>['stub']) => void;
    allowed: string[];
    released: number;
  }[] = [
    {
      name: 'every address taken back: the name goes',
      change: (stub) => {
        stub.remove('100.96.0.5');
        stub.remove('fd00:2021:1111:8000::5');
      },
      allowed: [],
      released: 1,
    },
    {
      name: 'one address given to another name: that address goes',
      change: (stub) => stub.add('git.corp.example', ['100.96.0.5']),
      allowed: ['fd00:2021:1111:8000::5'],
      released: 0,
    },
    {
      name: 'a lookup that fails: kept',
      change: (stub) => stub.set('100.96.0.5', { name: 'wiki.corp.example', proxyAddresses: [] }),
      allowed: ['100.96.0.5', 'fd00:2021:1111:8000::5'],
      released: 0,
    },
  ];
  for (const c of cases) {
    void it(c.name, () => {
      const harness = withName();
      c.change(harness.stub);

      harness.session.handleTimeout(T0 + NAME_CHECK_INTERVAL_MS);

      const allowed = (harness.session.spec()?.peers[0]?.allowedIps ?? []).map((n) => n.address);
      assert.deepEqual(
        allowed.filter((address) => address.startsWith('100.96.') || address.includes(':8000:')),
        c.allowed,
      );
      assert.ok(allowed.includes('10.50.0.0'), 'the CIDR resource stays');
      assert.equal(harness.session.stats().namesReleased, c.released);
      assert.equal(harness.session.stats().authorizationsEnded.names_released, c.released);
    });
  }

  void it('a name let go is asked for again on its next packet', () => {
    const harness = withName();
    harness.stub.add('git.corp.example', ['100.96.0.5', 'fd00:2021:1111:8000::5']);
    harness.session.handleTimeout(T0 + NAME_CHECK_INTERVAL_MS);

    const sent = miss(harness.session, '100.96.0.5', T0 + NAME_CHECK_INTERVAL_MS + 1);

    assert.deepEqual(
      sent.map((r) => (r.domain as { name: string }).name),
      ['git.corp.example'],
    );
    assert.equal(
      harness.session.nextDeadline(),
      T0 + NAME_CHECK_INTERVAL_MS + 1 + REQUEST_TIMEOUT_MS,
    );
  });

  void it('a lookup that throws lets nothing go', () => {
    let broken = false;
    const harness = initialized(EVERY_KIND, {
      lookupProxyAddress: (address) => {
        if (broken) throw new Error('stub gone');
        return address === '100.96.0.5'
          ? { name: 'wiki.corp.example', proxyAddresses: ['100.96.0.5'] }
          : undefined;
      },
    });
    authorize(harness, '100.96.0.5', DNS_ID, T0);
    broken = true;

    harness.session.handleTimeout(T0 + NAME_CHECK_INTERVAL_MS);

    assert.equal(harness.session.resources().find((r) => r.id === DNS_ID)?.authorized, true);
    assert.equal(harness.session.stats().internalErrors, 0);
  });
});

void describe('PortalSession the Internet resource beside the others', () => {
  void it("leaves the other resources' networks to them, so their first packets still ask", () => {
    const harness = initialized(EVERY_KIND);
    harness.stub.add('wiki.corp.example', ['100.96.0.5', 'fd00:2021:1111:8000::5']);

    authorize(harness, '198.51.100.1', INTERNET_ID, T0, GATEWAY_B, { site_id: SITE_B.id });
    const before = harness.session.spec()?.peers ?? [];
    const sent = ['10.50.0.7', 'fd00:50::1', '100.96.0.5'].map(
      (destination) => miss(harness.session, destination, T0 + 1).length,
    );

    for (const address of ['198.51.100.1', '8.8.8.8', '2001:db8::1', '100.64.0.1'])
      assert.equal(coveringPeer(before, address), 0, address);
    for (const address of ['10.50.0.7', 'fd00:50::1', '100.96.0.5', 'fd00:2021:1111:8000::5'])
      assert.equal(coveringPeer(before, address), undefined, address);
    assert.deepEqual(sent, [1, 1, 1]);
  });

  void it('a resource authorized on the Internet gateway itself is on its peer too', () => {
    const harness = initialized(EVERY_KIND);
    authorize(harness, '198.51.100.1', INTERNET_ID, T0, GATEWAY_B, { site_id: SITE_B.id });

    authorize(harness, '10.50.0.7', CIDR_ID, T0 + 1, GATEWAY_B);

    const peers = harness.session.spec()?.peers ?? [];
    assert.equal(peers.length, 1);
    assert.equal(coveringPeer(peers, '10.50.0.7'), 0);
    assert.equal(coveringPeer(peers, 'fd00:50::1'), undefined);
  });

  void it('without other resources it is the whole of both families', () => {
    const harness = initialized(init({ resources: [internetResource()] }));

    authorize(harness, '198.51.100.1', INTERNET_ID, T0, GATEWAY_B, { site_id: SITE_B.id });

    assert.deepEqual(harness.session.spec()?.peers[0]?.allowedIps, [
      network('100.64.0.11/32'),
      network('fd00:2021:1111::11/128'),
      network('0.0.0.0/0'),
      network('::/0'),
    ]);
  });
});
