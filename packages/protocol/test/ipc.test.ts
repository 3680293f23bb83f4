import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DROP_REASONS,
  UNATTRIBUTED_DROP_REASONS,
  parseClientMessage,
  parseRequestResult,
  parseServiceMessage,
  PROTOCOL_VERSION,
  type ConnectedTunnelStatus,
} from '../src/index.ts';

const status: ConnectedTunnelStatus = {
  state: 'connected',
  workerRestarts: 0,
  interfaceName: 'gh0',
  listenPort: 51820,
  cryptoProvider: 'openssl-native',
  peers: [
    {
      publicKey: 'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=',
      endpoint: '[2001:db8::1]:51820',
      allowedIps: ['10.0.0.0/8'],
      rxBytes: 1,
      txBytes: 2,
      rxPackets: 3,
      txPackets: 4,
      drops: Object.fromEntries(
        DROP_REASONS.map((r) => [r, 0]),
      ) as ConnectedTunnelStatus['peers'][0]['drops'],
      lastHandshakeAt: null,
      persistentKeepalive: 25,
    },
  ],
  noRoute: 2,
  unattributedDrops: Object.fromEntries(
    UNATTRIBUTED_DROP_REASONS.map((r) => [r, r === 'handshake-ring-full' ? 1 : 0]),
  ) as ConnectedTunnelStatus['unattributedDrops'],
  dns: {
    servers: ['10.0.0.53'],
    searchDomains: [],
    reapplied: 1,
    checkFailures: 2,
    applied: false,
    reason: 'not yet supported',
  },
  dnsResources: {
    patterns: ['*.corp.example'],
    stubRunning: true,
    stubAddresses: ['100.100.111.1'],
    upstreams: ['10.0.0.53'],
  },
  controlSocket: {
    refusedConnections: 1,
    idleClosed: 2,
    slowClosed: 3,
    badRequests: 4,
    refusedRequests: 0,
    handlerErrors: 5,
    internalErrors: 6,
  },
  logLinesLost: 7,
};

void test('client messages: accepted and refused', async (t) => {
  const cases: {
    name: string;
    input: unknown;
    expected: { ok: true } | { ok: false; code: string; id: number | string | null };
  }[] = [
    {
      name: 'status request',
      input: { type: 'request', data: { id: 1, kind: 'status', params: {} } },
      expected: { ok: true },
    },
    {
      name: 'down with a string id',
      input: { type: 'request', data: { id: 'a', kind: 'down', params: {} } },
      expected: { ok: true },
    },
    {
      name: 'set-dns-resources with patterns',
      input: {
        type: 'request',
        data: {
          id: 2,
          kind: 'set-dns-resources',
          params: { resources: [{ address: '*.corp.example' }, { address: 'app.example.com' }] },
        },
      },
      expected: { ok: true },
    },
    {
      name: 'set-dns-resources with an empty list',
      input: {
        type: 'request',
        data: { id: 3, kind: 'set-dns-resources', params: { resources: [] } },
      },
      expected: { ok: true },
    },
    {
      name: 'set-dns-resources without resources',
      input: { type: 'request', data: { id: 4, kind: 'set-dns-resources', params: {} } },
      expected: { ok: false, code: 'bad-request', id: 4 },
    },
    {
      name: 'set-dns-resources with an empty address',
      input: {
        type: 'request',
        data: { id: 5, kind: 'set-dns-resources', params: { resources: [{ address: '' }] } },
      },
      expected: { ok: false, code: 'bad-request', id: 5 },
    },
    {
      name: 'set-dns-resources with an unknown resource field',
      input: {
        type: 'request',
        data: {
          id: 6,
          kind: 'set-dns-resources',
          params: { resources: [{ address: 'a.example', ttl: 5 }] },
        },
      },
      expected: { ok: false, code: 'bad-request', id: 6 },
    },
    {
      name: 'set-dns-resources with too many resources',
      input: {
        type: 'request',
        data: {
          id: 9,
          kind: 'set-dns-resources',
          params: {
            resources: Array.from({ length: 257 }, (_, i) => ({ address: `h${i}.example` })),
          },
        },
      },
      expected: { ok: false, code: 'bad-request', id: 9 },
    },
    {
      name: 'unknown kind keeps the id',
      input: { type: 'request', data: { id: 7, kind: 'reboot', params: {} } },
      expected: { ok: false, code: 'unknown-request', id: 7 },
    },
    {
      name: 'prototype key as kind',
      input: { type: 'request', data: { id: 8, kind: 'constructor', params: {} } },
      expected: { ok: false, code: 'unknown-request', id: 8 },
    },
    {
      name: 'extra parameter',
      input: { type: 'request', data: { id: 2, kind: 'status', params: { verbose: true } } },
      expected: { ok: false, code: 'bad-request', id: 2 },
    },
    {
      name: 'extra envelope field',
      input: { type: 'request', data: { id: 3, kind: 'status', params: {} }, x: 1 },
      expected: { ok: false, code: 'bad-request', id: 3 },
    },
    {
      name: 'missing params',
      input: { type: 'request', data: { id: 4, kind: 'status' } },
      expected: { ok: false, code: 'bad-request', id: 4 },
    },
    {
      name: 'negative id',
      input: { type: 'request', data: { id: -1, kind: 'status', params: {} } },
      expected: { ok: false, code: 'bad-request', id: null },
    },
    {
      name: 'fractional id',
      input: { type: 'request', data: { id: 1.5, kind: 'status', params: {} } },
      expected: { ok: false, code: 'bad-request', id: null },
    },
    {
      name: 'unknown type',
      input: { type: 'hello', data: {} },
      expected: { ok: false, code: 'bad-request', id: null },
    },
    {
      name: 'not an object',
      input: 'status',
      expected: { ok: false, code: 'bad-request', id: null },
    },
    { name: 'array', input: [1, 2], expected: { ok: false, code: 'bad-request', id: null } },
    { name: 'null', input: null, expected: { ok: false, code: 'bad-request', id: null } },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      const result = parseClientMessage(c.input);
      if (c.expected.ok) {
        assert.equal(result.ok, true, result.ok ? '' : result.message);
      } else {
        assert.equal(result.ok, false);
        assert.ok(!result.ok);
        assert.equal(result.code, c.expected.code);
        assert.equal(result.id, c.expected.id);
        assert.ok(result.message.length > 0 && result.message.length < 500);
      }
    });
  }
});

void test('service messages: hello, both response shapes and events parse; others are refused', () => {
  const good = [
    { type: 'hello', data: { protocolVersion: PROTOCOL_VERSION, serviceVersion: '0.1.0' } },
    { type: 'response', data: { id: 1, ok: true, result: { anything: 1 } } },
    {
      type: 'response',
      data: { id: null, ok: false, error: { code: 'bad-request', message: 'no' } },
    },
    { type: 'event', data: { event: 'status-changed', status } },
  ];
  for (const message of good)
    assert.equal(parseServiceMessage(message).ok, true, JSON.stringify(message));

  const bad = [
    { type: 'response', data: { id: 1, ok: false, error: { code: 'teapot', message: 'x' } } },
    { type: 'response', data: { id: null, ok: true, result: {} } },
    { type: 'hello', data: { protocolVersion: 0, serviceVersion: '0.1.0' } },
    { type: 'event', data: { event: 'unknown' } },
    { type: 'request', data: { id: 1, kind: 'status', params: {} } },
  ];
  for (const message of bad)
    assert.equal(parseServiceMessage(message).ok, false, JSON.stringify(message));
});

void test('request results are validated per kind', () => {
  assert.equal(parseRequestResult('status', status).ok, true);
  assert.equal(parseRequestResult('down', { stopping: true, serviceExits: false }).ok, true);
  const counters = { controlSocket: status.controlSocket, logLinesLost: 0 };
  const failure = { reason: 'engine-failed', message: 'data worker 0 died 4 times' };
  for (const other of [
    { state: 'disconnected', failure: null, ...counters },
    { state: 'disconnected', failure, ...counters },
    { state: 'connecting', interfaceName: 'gh0', ...counters },
    { state: 'disconnecting', interfaceName: 'gh0', failure, ...counters },
  ])
    assert.equal(parseRequestResult('status', other).ok, true, JSON.stringify(other));
  assert.equal(
    parseRequestResult('status', {
      state: 'disconnected',
      failure: { reason: 'made-up', message: '' },
      ...counters,
    }).ok,
    false,
    'an unknown failure reason',
  );
  assert.equal(
    parseRequestResult('status', { ...status, state: 'running' }).ok,
    false,
    "protocol 4's state",
  );
  assert.equal(parseRequestResult('set-dns-resources', status.dnsResources).ok, true);
  assert.equal(parseRequestResult('set-dns-resources', { stubRunning: true }).ok, false);
  const { dnsResources: _missing, ...withoutDnsResources } = status;
  const old = parseRequestResult('status', withoutDnsResources);
  assert.equal(old.ok, false, 'a status without DNS resources is from protocol 2');
  assert.match(old.ok ? '' : old.message, /dnsResources/);
  const wrong = parseRequestResult('status', { ...status, listenPort: 70000 });
  assert.equal(wrong.ok, false);
  assert.match(wrong.ok ? '' : wrong.message, /listenPort/);
  assert.equal(
    parseRequestResult('status', { ...status, peers: [{ ...status.peers[0], drops: {} }] }).ok,
    false,
  );
});

void test('drop counters carry every reason, and only known ones', () => {
  const zeros = Object.fromEntries(DROP_REASONS.map((r) => [r, 0]));
  const peer = status.peers[0];
  const withDrops = (drops: unknown) =>
    parseRequestResult('status', { ...status, peers: [{ ...peer, drops }] }).ok;
  assert.equal(withDrops({ ...zeros, 'tun-full': 3 }), true);
  const { 'udp-send-failed': _missing, ...withoutOne } = zeros;
  assert.equal(withDrops(withoutOne), false);
  assert.equal(withDrops({ ...zeros, 'made-up': 1 }), false);
});
