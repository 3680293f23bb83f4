import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { test } from 'node:test';

import { GatewaySession, type GatewayEffect, type GatewayPlan } from '../src/gateway-session.ts';

const T0 = 1_800_000_000_000;
const RANGES = {
  tunnel_ipv4: '100.64.0.0/10',
  tunnel_ipv6: 'fd00:2021:1111::/107',
  proxy_ipv4: '100.96.0.0/11',
  proxy_ipv6: 'fd00:2021:1111:8000::/107',
};
const INTERFACE = { ipv4: '100.64.0.1', ipv6: 'fd00:2021:1111::1' };

function key(): string {
  return randomBytes(32).toString('base64');
}

function client(n: number, publicKey = key()) {
  return {
    id: randomUUID(),
    public_key: publicKey,
    preshared_key: key(),
    ipv4: `100.64.1.${n}`,
    ipv6: `fd00:2021:1111::1:${n}`,
  };
}

function cidr(address: string, filters: unknown[] = []) {
  return { type: 'cidr', id: randomUUID(), name: `net ${address}`, address, filters };
}

const wiki = cidr('10.61.0.0/24');
const git = {
  type: 'dns',
  id: randomUUID(),
  name: 'git',
  address: '*.git.corp.example',
  filters: [],
};
const internet = { type: 'internet', id: randomUUID(), name: 'Internet', filters: [] };

let nextRef = 0;
function flow(
  who: ReturnType<typeof client>,
  resource: Record<string, unknown>,
  extra: Record<string, unknown> = {},
) {
  nextRef += 1;
  return { ref: String(nextRef), client: who, resource, expires_at: null, ...extra };
}

function initPayload(authorizations: unknown[] = []) {
  return { interface: INTERFACE, address_ranges: RANGES, relays: [], authorizations };
}

/** Drains the effects; applies every plan the session asks for at once unless told not to. */
function drain(session: GatewaySession, apply = true): GatewayEffect[] {
  const effects: GatewayEffect[] = [];
  for (let effect = session.pollEffect(); effect; effect = session.pollEffect()) {
    effects.push(effect);
    if (apply && effect.type === 'plan-changed') session.planApplied(session.plan().version);
  }
  return effects;
}

function confirmed(effects: GatewayEffect[]): string[] {
  return effects.flatMap((e) =>
    e.type === 'push' && e.event === 'flow_authorized' ? [(e.payload as { ref: string }).ref] : [],
  );
}

function resolves(effects: GatewayEffect[]): string[] {
  return effects.flatMap((e) => (e.type === 'resolve' ? [e.name] : []));
}

function started(authorizations: unknown[] = []): GatewaySession {
  const session = new GatewaySession();
  session.handleMessage('init', initPayload(authorizations), T0);
  drain(session);
  return session;
}

function peerView(plan: GatewayPlan) {
  return plan.peers.map((peer) => ({
    publicKey: Buffer.from(peer.publicKey).toString('base64'),
    allowedIps: peer.allowedIps,
    policy: peer.policy,
  }));
}

void test('init sets the interface and ranges; no peers until a flow', () => {
  const session = new GatewaySession();

  session.handleMessage('init', initPayload(), T0);
  const effects = drain(session);

  const plan = session.plan();
  assert.deepEqual(plan.interface, INTERFACE);
  assert.deepEqual(plan.tunnelRanges, { ipv4: '100.64.0.0/10', ipv6: 'fd00:2021:1111::/107' });
  assert.deepEqual(plan.proxyRanges, {
    ipv4: '100.96.0.0/11',
    ipv6: 'fd00:2021:1111:8000::/107',
  });
  assert.deepEqual(plan.peers, []);
  assert.equal(plan.version, 1);
  assert.equal(effects.filter((e) => e.type === 'plan-changed').length, 1);
});

void test('a CIDR flow makes a peer with its filters, confirmed only after the plan is applied', () => {
  const session = started();
  const alice = client(2);
  const web = cidr('10.61.0.0/24', [
    { protocol: 'tcp', port_range_start: 80, port_range_end: 80 },
    { protocol: 'icmp' },
  ]);
  const message = flow(alice, web);

  session.handleMessage('authorize_flow', message, T0);
  const before = drain(session, false);
  const version = session.plan().version;
  session.planApplied(version);
  const after = drain(session);

  assert.deepEqual(confirmed(before), []);
  assert.deepEqual(confirmed(after), [message.ref]);
  assert.deepEqual(peerView(session.plan()), [
    {
      publicKey: alice.public_key,
      allowedIps: ['100.64.1.2/32', 'fd00:2021:1111::1:2/128'],
      policy: [
        { destination: '10.61.0.0/24', protocol: 'tcp', ports: [{ from: 80, to: 80 }] },
        { destination: '10.61.0.0/24', protocol: 'icmp' },
      ],
    },
  ]);
  assert.deepEqual(
    Buffer.from(session.plan().peers[0]!.presharedKey!).toString('base64'),
    alice.preshared_key,
  );
});

void test("one client's flows make one peer; another client's flow leaves its config identical", () => {
  const session = started();
  const alice = client(2);
  const bob = client(3);
  session.handleMessage('authorize_flow', flow(alice, wiki), T0);
  session.handleMessage('authorize_flow', flow(alice, internet), T0);
  drain(session);
  const alicePeer = peerView(session.plan())[0];

  session.handleMessage('authorize_flow', flow(bob, wiki), T0);
  drain(session);

  const peers = peerView(session.plan());
  assert.equal(peers.length, 2);
  assert.deepEqual(
    peers.find((p) => p.publicKey === alice.public_key),
    alicePeer,
  );
  assert.deepEqual(alicePeer?.policy, [
    { destination: '0.0.0.0/0', protocol: 'any' },
    { destination: '10.61.0.0/24', protocol: 'any' },
    { destination: '::/0', protocol: 'any' },
  ]);
});

void test('a DNS flow asks for its name, maps the proxy addresses to the answer, then confirms', () => {
  const session = started();
  const alice = client(2);
  const message = flow(alice, git, {
    domain: { name: 'Code.Git.Corp.Example.', proxy_ips: ['100.96.0.1', 'fd00:2021:1111:8000::1'] },
  });

  session.handleMessage('authorize_flow', message, T0);
  const asked = drain(session);
  session.handleResolution(
    'code.git.corp.example',
    { ok: true, ipv4: ['10.62.0.5'], ipv6: [], ttlSeconds: 60 },
    T0 + 10,
  );
  const answered = drain(session);

  assert.deepEqual(resolves(asked), ['code.git.corp.example']);
  assert.deepEqual(confirmed(asked), []);
  assert.deepEqual(confirmed(answered), [message.ref]);
  assert.deepEqual(session.plan().dnat, [
    {
      family: 4,
      clientAddress: '100.64.1.2',
      proxyAddress: '100.96.0.1',
      realAddress: '10.62.0.5',
    },
  ]);
  assert.equal(session.stats().unmappedProxyAddresses, 1);
  assert.deepEqual(peerView(session.plan())[0]?.policy, [
    { destination: '100.96.0.1/32', protocol: 'any' },
    { destination: 'fd00:2021:1111:8000::1/128', protocol: 'any' },
  ]);
});

void test("a name is resolved again when its TTL runs out, clamped to the session's bounds", () => {
  const session = new GatewaySession({ minTtlSeconds: 30, maxTtlSeconds: 120 });
  session.handleMessage('init', initPayload(), T0);
  session.handleMessage(
    'authorize_flow',
    flow(client(2), git, { domain: { name: 'a.git.corp.example', proxy_ips: ['100.96.0.1'] } }),
    T0,
  );
  drain(session);

  session.handleResolution(
    'a.git.corp.example',
    { ok: true, ipv4: ['10.62.0.5'], ipv6: [], ttlSeconds: 5 },
    T0,
  );
  drain(session);
  const deadline = session.nextDeadline();
  session.handleTimeout(T0 + 29_999);
  const early = drain(session);
  session.handleTimeout(T0 + 30_000);
  const due = drain(session);
  session.handleResolution(
    'a.git.corp.example',
    { ok: true, ipv4: ['10.62.0.9'], ipv6: [], ttlSeconds: 86_400 },
    T0 + 30_001,
  );
  drain(session);

  assert.equal(deadline, T0 + 30_000);
  assert.deepEqual(resolves(early), []);
  assert.deepEqual(resolves(due), ['a.git.corp.example']);
  assert.equal(session.plan().dnat[0]?.realAddress, '10.62.0.9');
  assert.equal(session.nextDeadline(), T0 + 30_001 + 120_000);
});

void test('a failed resolution keeps the last answer and retries with backoff', () => {
  const session = started();
  session.handleMessage(
    'authorize_flow',
    flow(client(2), git, { domain: { name: 'a.git.corp.example', proxy_ips: ['100.96.0.1'] } }),
    T0,
  );
  drain(session);
  session.handleResolution(
    'a.git.corp.example',
    { ok: true, ipv4: ['10.62.0.5'], ipv6: [], ttlSeconds: 30 },
    T0,
  );
  drain(session);
  session.handleTimeout(T0 + 30_000);
  drain(session);

  session.handleResolution('a.git.corp.example', { ok: false, problem: 'SERVFAIL' }, T0 + 30_000);
  const effects = drain(session);

  assert.equal(session.plan().dnat[0]?.realAddress, '10.62.0.5');
  assert.equal(session.stats().resolutionsFailed, 1);
  assert.equal(session.nextDeadline(), T0 + 31_000);
  assert.ok(effects.some((e) => e.type === 'log' && e.message.includes('SERVFAIL')));
});

void test('a flow ends at its expiry and its peer goes with its last flow', () => {
  const session = started();
  const alice = client(2);
  session.handleMessage('authorize_flow', flow(alice, wiki, { expires_at: T0 + 60_000 }), T0);
  session.handleMessage('authorize_flow', flow(alice, internet, { expires_at: T0 + 90_000 }), T0);
  drain(session);

  assert.equal(session.nextDeadline(), T0 + 60_000);
  session.handleTimeout(T0 + 60_000);
  drain(session);
  const afterFirst = peerView(session.plan())[0]?.policy;
  session.handleTimeout(T0 + 90_000);
  drain(session);

  assert.deepEqual(afterFirst, [
    { destination: '0.0.0.0/0', protocol: 'any' },
    { destination: '::/0', protocol: 'any' },
  ]);
  assert.deepEqual(session.plan().peers, []);
  assert.equal(session.stats().flowsEnded.expired, 2);
  assert.equal(session.nextDeadline(), undefined);
});

void test('reject_access removes exactly that flow', () => {
  const session = started();
  const alice = client(2);
  const bob = client(3);
  session.handleMessage('authorize_flow', flow(alice, wiki), T0);
  session.handleMessage('authorize_flow', flow(bob, wiki), T0);
  drain(session);

  session.handleMessage('reject_access', { client_id: alice.id, resource_id: wiki.id }, T0);
  drain(session);

  assert.deepEqual(
    peerView(session.plan()).map((p) => p.publicKey),
    [bob.public_key],
  );
  assert.equal(session.stats().flowsEnded.reject_access, 1);
});

void test('init reconciles: the flows become exactly its authorizations, kept ones unchanged', () => {
  const alice = client(2);
  const bob = client(3);
  const session = started([flow(alice, wiki), flow(bob, wiki)]);
  const aliceBefore = session
    .plan()
    .peers.find((p) => Buffer.from(p.publicKey).toString('base64') === alice.public_key);
  const versionBefore = session.plan().version;

  session.handleMessage('init', initPayload([flow(alice, wiki)]), T0 + 1000);
  const effects = drain(session);

  assert.equal(session.plan().peers.length, 1);
  assert.deepEqual(session.plan().peers[0], aliceBefore);
  assert.equal(session.plan().version, versionBefore + 1);
  assert.equal(session.stats().flowsEnded.not_in_init, 1);
  assert.equal(confirmed(effects).length, 1);
});

void test('the same init again changes nothing', () => {
  const alice = client(2);
  const authorizations = [flow(alice, wiki)];
  const session = started(authorizations);
  const version = session.plan().version;

  session.handleMessage('init', initPayload(authorizations), T0 + 1000);
  const effects = drain(session);

  assert.equal(session.plan().version, version);
  assert.equal(effects.filter((e) => e.type === 'plan-changed').length, 0);
});

void test('a client that comes back with a new key loses the flows of its old key', () => {
  const session = started();
  const alice = client(2);
  session.handleMessage('authorize_flow', flow(alice, wiki), T0);
  drain(session);

  const rekeyed = { ...alice, public_key: key(), preshared_key: key() };
  session.handleMessage('authorize_flow', flow(rekeyed, internet), T0);
  drain(session);

  assert.deepEqual(
    peerView(session.plan()).map((p) => p.publicKey),
    [rekeyed.public_key],
  );
  assert.equal(session.stats().flowsEnded.client_rekeyed, 1);
});

void test('authorizations that do not fit are refused, counted and change nothing', () => {
  const alice = client(2);
  const cases: { name: string; message: Record<string, unknown>; refusal: string }[] = [
    { name: 'expired', message: flow(alice, wiki, { expires_at: T0 - 1 }), refusal: 'expired' },
    {
      name: 'client outside the tunnel range',
      message: flow({ ...alice, ipv4: '192.168.1.2' }, wiki),
      refusal: 'client_outside_tunnel_range',
    },
    { name: 'dns without a domain', message: flow(alice, git), refusal: 'dns_without_domain' },
    {
      name: 'proxy address outside the proxy range',
      message: flow(alice, git, {
        domain: { name: 'a.git.corp.example', proxy_ips: ['10.0.0.1'] },
      }),
      refusal: 'proxy_outside_range',
    },
  ];
  for (const { name, message, refusal } of cases) {
    const session = started();
    const version = session.plan().version;

    session.handleMessage('authorize_flow', message, T0);
    const effects = drain(session);

    assert.equal(session.plan().version, version, name);
    assert.deepEqual(confirmed(effects), [], name);
    assert.equal(session.stats().flowsRefused[refusal as 'expired'], 1, name);
  }
});

void test('a second client with the key or the address of another is refused', () => {
  const session = started();
  const alice = client(2);
  session.handleMessage('authorize_flow', flow(alice, wiki), T0);
  drain(session);

  session.handleMessage('authorize_flow', flow(client(3, alice.public_key), wiki), T0);
  session.handleMessage('authorize_flow', flow({ ...client(2) }, wiki), T0);
  drain(session);

  assert.equal(session.plan().peers.length, 1);
  assert.equal(session.stats().flowsRefused.key_of_another_client, 1);
  assert.equal(session.stats().flowsRefused.address_of_another_client, 1);
});

void test('a flow whose filters the engine cannot express configures no peer (never an open one)', () => {
  const session = started();
  const portZero = cidr('10.61.0.0/24', [
    { protocol: 'tcp', port_range_start: 0, port_range_end: 0 },
  ]);

  session.handleMessage('authorize_flow', flow(client(2), portZero), T0);
  drain(session);

  assert.deepEqual(session.plan().peers, []);
  assert.equal(session.stats().peersWithoutRules, 1);
  assert.equal(session.stats().unenforceableFilters, 1);
});

void test('authorize_flow before init is refused', () => {
  const session = new GatewaySession();

  session.handleMessage('authorize_flow', flow(client(2), wiki), T0);
  const effects = drain(session);

  assert.deepEqual(session.plan().peers, []);
  assert.equal(session.stats().flowsRefused.before_init, 1);
  assert.deepEqual(confirmed(effects), []);
});

void test('resource_updated changes the filters of its flows; a new DNS pattern ends them', () => {
  const session = started();
  const alice = client(2);
  session.handleMessage('authorize_flow', flow(alice, wiki), T0);
  session.handleMessage(
    'authorize_flow',
    flow(alice, git, { domain: { name: 'a.git.corp.example', proxy_ips: ['100.96.0.1'] } }),
    T0,
  );
  drain(session);

  session.handleMessage(
    'resource_updated',
    { ...wiki, filters: [{ protocol: 'udp', port_range_start: 53, port_range_end: 53 }] },
    T0,
  );
  session.handleMessage('resource_updated', { ...git, address: '*.other.example' }, T0);
  drain(session);

  assert.deepEqual(peerView(session.plan())[0]?.policy, [
    { destination: '10.61.0.0/24', protocol: 'udp', ports: [{ from: 53, to: 53 }] },
  ]);
  assert.equal(session.stats().flowsEnded.resource_changed, 1);
});

void test('malformed and unknown pushes are counted and change nothing', () => {
  const alice = client(2);
  const good = flow(alice, wiki);
  const cases: [string, unknown][] = [
    ['init', null],
    ['init', []],
    ['init', 'init'],
    ['init', { interface: INTERFACE }],
    ['init', { interface: { ipv4: '1.2.3', ipv6: '::1' }, address_ranges: RANGES }],
    ['init', { interface: INTERFACE, address_ranges: { ...RANGES, tunnel_ipv4: 'x' } }],
    ['authorize_flow', {}],
    ['authorize_flow', { ...good, ref: '' }],
    ['authorize_flow', { ...good, ref: 'r'.repeat(10_000) }],
    ['authorize_flow', { ...good, client: { ...alice, public_key: 'not a key' } }],
    ['authorize_flow', { ...good, client: { ...alice, preshared_key: 42 } }],
    ['authorize_flow', { ...good, client: { ...alice, id: 'not-a-uuid' } }],
    ['authorize_flow', { ...good, expires_at: -5 }],
    ['authorize_flow', { ...good, expires_at: 'soon' }],
    ['authorize_flow', { ...good, resource: { ...wiki, address: '10.61.0.0/99' } }],
    ['authorize_flow', { ...good, resource: { ...wiki, filters: [{ protocol: 'sctp' }] } }],
    ['authorize_flow', { ...good, domain: { name: 'bad name\u0000', proxy_ips: ['100.96.0.1'] } }],
    ['reject_access', { client_id: 7 }],
    ['resource_updated', { type: 'cidr' }],
    ['__proto__', {}],
    ['constructor', {}],
    ['flow_authorized', { ref: '1' }],
    ['', {}],
  ];
  const session = started([good]);
  const plan = session.plan();
  const before = session.stats();

  for (const [event, payload] of cases) {
    assert.doesNotThrow(() => session.handleMessage(event, payload, T0), event);
  }
  const effects = drain(session);

  const after = session.stats();
  assert.equal(session.plan(), plan);
  assert.ok(effects.every((e) => e.type === 'log'));
  assert.equal(
    after.malformed + after.unknownEvents - before.malformed - before.unknownEvents,
    cases.length,
  );
  assert.equal(after.unknownEvents - before.unknownEvents, 4);
});

void test('relay and ICE messages are ignored and counted', () => {
  const session = started();
  const version = session.plan().version;

  session.handleMessage('relays_presence', { connected: [], disconnected_ids: [] }, T0);
  drain(session);

  assert.equal(session.plan().version, version);
  assert.equal(session.stats().ignored + session.stats().malformed, 1);
});

void test('a log line never carries a preshared key', () => {
  const session = new GatewaySession();
  const alice = client(2);
  const lines: string[] = [];

  session.handleMessage('authorize_flow', flow(alice, wiki), T0);
  session.handleMessage('init', initPayload([flow(alice, wiki)]), T0);
  session.handleMessage('authorize_flow', flow({ ...alice, preshared_key: 'x' }, wiki), T0);
  for (const effect of drain(session)) if (effect.type === 'log') lines.push(effect.message);

  assert.ok(lines.length > 0);
  for (const line of lines) assert.ok(!line.includes(alice.preshared_key), line);
});
