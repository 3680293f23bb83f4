import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { PortalSession, PortalSessionEffect } from '../src/portal-session.ts';
import { diffTunnelSpecs, type TunnelSpec } from '../src/tunnel-spec.ts';
import {
  CIDR2_ID,
  CIDR_ID,
  DNS_ID,
  GATEWAY_A,
  INTERFACE,
  RANGES,
  T0,
  authorizationCreated,
  authorizationFailed,
  authorize,
  cidrResource,
  dnsResource,
  drain,
  init,
  initialized,
  internetResource,
  keyText,
  miss,
  newSession,
  type Harness,
} from './portal-session-fixtures.ts';

const FULL = init({ resources: [cidrResource(), dnsResource(), internetResource()] });

/** A session with a CIDR resource and a DNS name authorized, and a request in flight. */
function busySession(): Harness {
  const harness = initialized(FULL);
  harness.stub.add('wiki.corp.example', ['100.96.0.5']);
  authorize(harness, '10.50.0.7', CIDR_ID, T0, GATEWAY_A, { expires_at: T0 + 60_000 });
  authorize(harness, '100.96.0.5', DNS_ID, T0);
  miss(harness.session, '198.51.100.1', T0);
  return harness;
}

function snapshot(session: PortalSession): unknown {
  return structuredClone({
    spec: session.spec(),
    identity: session.identity(),
    resources: session.resources(),
    deadline: session.nextDeadline(),
  });
}

function dropped(session: PortalSession): { malformed: number; unknown: number; ignored: number } {
  const stats = session.stats();
  return { malformed: stats.malformed, unknown: stats.unknownEvents, ignored: stats.ignored };
}

const valid = authorizationCreated(CIDR_ID);
const huge = 'x'.repeat(1_000_000);

const BAD: { name: string; event: string; payload: unknown; kind?: 'unknown' | 'ignored' }[] = [
  { name: 'init: null', event: 'init', payload: null },
  { name: 'init: an array', event: 'init', payload: [FULL] },
  { name: 'init: a string', event: 'init', payload: JSON.stringify(FULL) },
  { name: 'init: a number', event: 'init', payload: 42 },
  { name: 'init: no interface', event: 'init', payload: { ...FULL, interface: undefined } },
  {
    name: 'init: an address as a number',
    event: 'init',
    payload: { ...FULL, interface: { ...INTERFACE, ipv4: 1684275202 } },
  },
  {
    name: 'init: an IPv4 address out of range',
    event: 'init',
    payload: { ...FULL, interface: { ...INTERFACE, ipv4: '999.64.0.2' } },
  },
  {
    name: 'init: a huge IPv6 address',
    event: 'init',
    payload: { ...FULL, interface: { ...INTERFACE, ipv6: huge } },
  },
  {
    name: 'init: a bad proxy range',
    event: 'init',
    payload: { ...FULL, address_ranges: { ...RANGES, proxy_ipv4: '100.96.0.0/40' } },
  },
  {
    name: 'init: an IPv6 range where IPv4 goes',
    event: 'init',
    payload: { ...FULL, address_ranges: { ...RANGES, tunnel_ipv4: 'fd00::/64' } },
  },
  {
    name: 'init: resources as an object',
    event: 'init',
    payload: { ...FULL, resources: { [CIDR_ID]: cidrResource() } },
  },
  {
    name: 'init: more resources than any account has',
    event: 'init',
    payload: {
      ...FULL,
      resources: Array.from({ length: 10_001 }, () => ({ type: 'cidr' })),
    },
  },
  {
    name: 'init: an upstream DNS server with a control character',
    event: 'init',
    payload: {
      ...FULL,
      interface: { ...INTERFACE, upstream_dns: [{ protocol: 'ip_port', address: '1.1.1.1\n:53' }] },
    },
  },
  {
    name: 'authorization_created: a key that is not 32 bytes',
    event: 'authorization_created',
    payload: { ...valid, gateway_public_key: 'a'.repeat(44) },
  },
  {
    name: 'authorization_created: no preshared key',
    event: 'authorization_created',
    payload: { ...valid, preshared_key: undefined },
  },
  {
    name: 'authorization_created: a gateway address with control characters',
    event: 'authorization_created',
    payload: { ...valid, gateway_ipv4: '100.64.0.10\u0000' },
  },
  {
    name: 'authorization_created: a resource id that is not a UUID',
    event: 'authorization_created',
    payload: { ...valid, resource_id: '../../etc/passwd' },
  },
  {
    name: 'authorization_created: an endpoint without a port',
    event: 'authorization_created',
    payload: { ...valid, gateway_endpoints: ['203.0.113.7'] },
  },
  {
    name: 'authorization_created: endpoints as a string',
    event: 'authorization_created',
    payload: { ...valid, gateway_endpoints: '203.0.113.7:51820' },
  },
  {
    name: 'authorization_created: expires_at as a string',
    event: 'authorization_created',
    payload: { ...valid, expires_at: String(T0 + 1) },
  },
  {
    name: 'authorization_created: expires_at negative',
    event: 'authorization_created',
    payload: { ...valid, expires_at: -1 },
  },
  {
    name: 'authorization_created: expires_at a fraction',
    event: 'authorization_created',
    payload: { ...valid, expires_at: T0 + 0.5 },
  },
  {
    name: 'resource_created_or_updated: a bad CIDR',
    event: 'resource_created_or_updated',
    payload: { ...cidrResource(), address: '10.0.0.0/99' },
  },
  {
    name: 'resource_created_or_updated: a CIDR with a bad address',
    event: 'resource_created_or_updated',
    payload: { ...cidrResource(), address: '10.0.0.256/24' },
  },
  {
    name: 'resource_created_or_updated: a huge name',
    event: 'resource_created_or_updated',
    payload: { ...cidrResource(), name: huge },
  },
  {
    name: 'resource_created_or_updated: a DNS pattern that is not one',
    event: 'resource_created_or_updated',
    payload: { ...dnsResource(), address: 'wiki..corp example' },
  },
  {
    name: 'resource_created_or_updated: no type',
    event: 'resource_created_or_updated',
    payload: { ...cidrResource(), type: undefined },
  },
  {
    name: 'resource_created_or_updated: an unknown type',
    event: 'resource_created_or_updated',
    payload: { ...cidrResource(), type: 'static_device_pool' },
    kind: 'ignored',
  },
  {
    name: 'resource_deleted: the bare id, not an object',
    event: 'resource_deleted',
    payload: CIDR_ID,
  },
  { name: 'resource_deleted: an id as a number', event: 'resource_deleted', payload: { id: 1 } },
  {
    name: 'resource_deleted: only a __proto__ key',
    event: 'resource_deleted',
    payload: JSON.parse(`{"__proto__": {"id": "${CIDR_ID}"}}`) as unknown,
  },
  {
    name: 'config_changed: no interface',
    event: 'config_changed',
    payload: { address_ranges: RANGES },
  },
  {
    name: 'authorization_creation_failed: no resource id',
    event: 'authorization_creation_failed',
    payload: { reason: 'forbidden' },
  },
  { name: 'disconnect: an empty reason', event: 'disconnect', payload: { reason: '' } },
  { name: 'an unknown event', event: 'authorization_revoked', payload: {}, kind: 'unknown' },
  { name: 'an event in capitals', event: 'INIT', payload: FULL, kind: 'unknown' },
  { name: 'the event __proto__', event: '__proto__', payload: {}, kind: 'unknown' },
  { name: 'the event constructor', event: 'constructor', payload: {}, kind: 'unknown' },
  { name: 'an empty event', event: '', payload: {}, kind: 'unknown' },
  {
    name: 'an event with control characters',
    event: 'init\u0000\u001b[2J',
    payload: FULL,
    kind: 'unknown',
  },
  { name: 'a huge event name', event: huge, payload: {}, kind: 'unknown' },
  { name: 'a phoenix event', event: 'phx_reply', payload: { status: 'ok' }, kind: 'unknown' },
  {
    name: 'an event that is not a string',
    event: 7 as unknown as string,
    payload: {},
    kind: 'unknown',
  },
];

void describe('PortalSession malformed and unknown pushes', () => {
  void it('are counted and change nothing, with at most a log line', async (t) => {
    for (const c of BAD) {
      await t.test(c.name, () => {
        const { session } = busySession();
        const before = snapshot(session);
        const counts = dropped(session);

        session.handleMessage(c.event, c.payload, T0 + 1);

        assert.deepEqual(snapshot(session), before);
        const effects = drain(session);
        assert.deepEqual(
          effects.filter((effect) => effect.type !== 'log'),
          [],
        );
        assert.ok(effects.length <= 1, `${effects.length} log lines`);
        for (const effect of effects) assertSafeLog(effect);
        const after = dropped(session);
        const kind = c.kind ?? 'malformed';
        assert.deepEqual(after, { ...counts, [kind]: counts[kind] + 1 });
        assert.equal(session.stats().internalErrors, 0);
      });
    }
  });

  void it('before init too', () => {
    const { session } = newSession();

    for (const c of BAD) session.handleMessage(c.event, c.payload, T0);

    assert.equal(session.spec(), undefined);
    assert.deepEqual(session.resources(), []);
    const counts = dropped(session);
    assert.equal(counts.malformed + counts.unknown + counts.ignored, BAD.length);
    assert.equal(session.stats().internalErrors, 0);
  });

  void it('a flood of them is logged only now and then', () => {
    const { session } = busySession();

    for (let i = 0; i < 3_000; i += 1) session.handleMessage('init', null, T0 + i);

    const logs = drain(session);
    assert.ok(logs.length <= 10, `${logs.length} log lines`);
    assert.equal(session.stats().malformed, 3_000);
  });

  void it('leave Object.prototype alone', () => {
    const { session } = busySession();

    session.handleMessage(
      'init',
      JSON.parse('{"__proto__": {"polluted": true}, "constructor": {"prototype": {"x": 1}}}'),
      T0 + 1,
    );

    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(({} as Record<string, unknown>).x, undefined);
  });

  void it('route misses and handshake failures with junk do not throw', () => {
    const { session } = busySession();
    const before = snapshot(session);

    for (const junk of ['', huge, '10.50.0.7\u0000', '::ffff:10.50.0.7x', '1.2.3', 'fd00::/64']) {
      session.handleRouteMiss(junk, T0 + 1);
      session.handlePeerHandshakeFailed(junk, T0 + 1);
    }

    assert.deepEqual(snapshot(session), before);
    assert.equal(session.stats().internalErrors, 0);
    assert.equal(session.stats().unroutable.not_an_address, 6);
    assert.equal(session.stats().handshakeFailuresUnknownPeer, 6);
  });
});

void describe("PortalSession takes the protocol's portal-to-client samples", () => {
  const directory = new URL('../../../packages/protocol/test/portal-samples/', import.meta.url);
  const samples = readdirSync(directory)
    .filter((file) => file.startsWith('client-'))
    .map((file) => ({
      file,
      sample: JSON.parse(readFileSync(new URL(file, directory), 'utf8')) as {
        direction: string;
        frame: { event: string; payload: unknown };
      },
    }))
    .filter(({ sample }) => sample.direction === 'portal_to_client');

  void it('finds the samples', () => {
    assert.ok(samples.length >= 10, `${samples.length} samples`);
  });

  for (const { file, sample } of samples) {
    void it(file, () => {
      const { session } = busySession();

      session.handleMessage(sample.frame.event, sample.frame.payload, T0 + 1);
      drain(session);

      const stats = session.stats();
      assert.equal(stats.malformed, 0);
      assert.equal(stats.unknownEvents, 0);
      assert.equal(stats.internalErrors, 0);
      assert.equal(stats.messages[sample.frame.event as keyof typeof stats.messages] > 0, true);
    });
  }
});

void describe('PortalSession spec-changed', () => {
  void it('comes exactly when spec() changes', () => {
    const harness = newSession();
    const { session } = harness;
    harness.stub.add('wiki.corp.example', ['100.96.0.5']);
    const steps: { name: string; act: () => void; changes: boolean }[] = [
      { name: 'init', act: () => session.handleMessage('init', FULL, T0), changes: true },
      { name: 'the same init', act: () => session.handleMessage('init', FULL, T0), changes: false },
      {
        name: 'disconnect',
        act: () => session.handleMessage('disconnect', { reason: 'bye' }, T0),
        changes: false,
      },
      {
        name: 'relays_presence',
        act: () =>
          session.handleMessage('relays_presence', { disconnected_ids: [], connected: [] }, T0),
        changes: false,
      },
      {
        name: 'ice_candidates',
        act: () =>
          session.handleMessage('ice_candidates', { gateway_id: GATEWAY_A.id, candidates: [] }, T0),
        changes: false,
      },
      { name: 'a route miss', act: () => session.handleRouteMiss('10.50.0.7', T0), changes: false },
      {
        name: 'a refusal',
        act: () =>
          session.handleMessage('authorization_creation_failed', authorizationFailed(CIDR_ID), T0),
        changes: false,
      },
      {
        name: 'a route miss after the backoff',
        act: () => session.handleRouteMiss('10.50.0.7', T0 + 1_000),
        changes: false,
      },
      {
        name: 'the authorization',
        act: () =>
          session.handleMessage(
            'authorization_created',
            authorizationCreated(CIDR_ID, GATEWAY_A, { expires_at: T0 + 60_000 }),
            T0 + 1_001,
          ),
        changes: true,
      },
      {
        name: 'the same authorization again',
        act: () =>
          session.handleMessage(
            'authorization_created',
            authorizationCreated(CIDR_ID, GATEWAY_A, { expires_at: T0 + 60_000 }),
            T0 + 1_002,
          ),
        changes: false,
      },
      {
        name: 'a timeout before anything is due',
        act: () => session.handleTimeout(T0 + 59_999),
        changes: false,
      },
      {
        name: 'the same resource again',
        act: () => session.handleMessage('resource_created_or_updated', cidrResource(), T0 + 2),
        changes: false,
      },
      {
        name: 'a new resource',
        act: () =>
          session.handleMessage(
            'resource_created_or_updated',
            cidrResource({ id: CIDR2_ID, address: '10.70.0.0/16' }),
            T0 + 2,
          ),
        changes: true,
      },
      {
        name: 'the same interface',
        act: () => session.handleMessage('config_changed', { interface: INTERFACE }, T0 + 3),
        changes: false,
      },
      {
        name: 'a new search domain',
        act: () =>
          session.handleMessage(
            'config_changed',
            { interface: { ...INTERFACE, search_domain: 'other.example' } },
            T0 + 3,
          ),
        changes: true,
      },
      {
        name: 'an unknown peer failing',
        act: () => session.handlePeerHandshakeFailed(keyText(0x66), T0 + 4),
        changes: false,
      },
      { name: 'the expiry', act: () => session.handleTimeout(T0 + 60_000), changes: true },
      {
        name: 'a malformed push',
        act: () => session.handleMessage('init', [], T0),
        changes: false,
      },
    ];

    let previous: TunnelSpec | undefined;
    for (const step of steps) {
      step.act();

      const effects = drain(session);
      const signals = effects.filter((effect) => effect.type === 'spec-changed').length;
      const current = session.spec();
      const differs =
        current !== undefined &&
        (previous === undefined || diffTunnelSpecs(previous, current).length > 0);
      assert.equal(differs, step.changes, `${step.name}: the spec`);
      assert.equal(signals, step.changes ? 1 : 0, `${step.name}: spec-changed effects`);
      for (const effect of effects) assertSafeLog(effect);
      previous = structuredClone(current);
    }
  });

  void it('comes once for changes the shell has not polled yet', () => {
    const harness = initialized(FULL);

    harness.session.handleMessage(
      'resource_created_or_updated',
      cidrResource({ id: CIDR2_ID, address: '10.70.0.0/16' }),
      T0,
    );
    harness.session.handleMessage('resource_deleted', { id: CIDR_ID }, T0);
    const effects = drain(harness.session);

    assert.equal(effects.filter((effect) => effect.type === 'spec-changed').length, 1);
    assert.deepEqual(harness.session.spec()?.routes.includes('10.50.0.0/24'), false);
  });

  void it('text from the portal goes into log lines without what a terminal would act on', () => {
    const hostile = 'evil\u009b31m\u2028forged: line\u0007\u001b[2J\u2029';
    const harness = initialized(FULL);

    harness.session.handleMessage(
      'resource_created_or_updated',
      cidrResource({ id: CIDR2_ID, name: hostile, address: '10.70.0.0/16' }),
      T0,
    );
    harness.session.handleMessage('resource_deleted', { id: CIDR2_ID }, T0);
    harness.session.handleMessage('disconnect', { reason: hostile }, T0);
    harness.session.handleMessage(
      'init',
      init({ identity: { account_slug: 'acme', actor_name: 'Eve\u009b\u2028' } }),
      T0,
    );
    const logs = drain(harness.session).filter((effect) => effect.type === 'log');

    assert.ok(logs.length >= 3, `${logs.length} log lines`);
    for (const effect of logs) assertSafeLog(effect);
  });

  void it('the preshared key and the private key are never in a log line', () => {
    const harness = busySession();
    harness.session.handlePeerHandshakeFailed(keyText(GATEWAY_A.keyFill), T0 + 2);
    harness.session.handleMessage(
      'authorization_created',
      { ...authorizationCreated(CIDR_ID), gateway_ipv4: 'nope' },
      T0 + 3,
    );

    const lines = drain(harness.session).flatMap((effect) =>
      effect.type === 'log' ? [effect.message] : [],
    );

    for (const line of lines) {
      assert.ok(!line.includes(keyText(GATEWAY_A.pskFill)), line);
      assert.ok(!line.includes(keyText(0x01)), line);
    }
  });
});

function assertSafeLog(effect: PortalSessionEffect): void {
  if (effect.type !== 'log') return;
  assert.ok(effect.message.length <= 401, `a log line of ${effect.message.length} characters`);
  // eslint-disable-next-line no-control-regex
  const unsafe = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
  assert.ok(!unsafe.test(effect.message), JSON.stringify(effect.message));
}
