import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CONNECTION_FAILURE_REASONS,
  ERROR_CODES,
  MAX_PORTAL_TOKEN_CHARS,
  parseClientMessage,
  parseRequestResult,
  type PortalStatus,
  type RequestParams,
} from '../src/index.ts';

const TOKEN = 'gh.Zm9vYmFyYmF6cXV4.c2VjcmV0LXRva2VuLXRleHQtdGhhdC1tdXN0LW5vdC1sZWFr';

const START: RequestParams<'start-portal-tunnel'> = {
  portalUrl: 'https://portal.example',
  token: TOKEN,
  interfaceName: 'gatehouse0',
  dnsControl: 'auto',
  internetResource: true,
  lanBypass: true,
};

function request(params: unknown): unknown {
  return { type: 'request', data: { id: 1, kind: 'start-portal-tunnel', params } };
}

void test('start-portal-tunnel: accepted with and without its optional fields', () => {
  for (const params of [
    START,
    { ...START, caFile: '/etc/gatehouse/ca.pem', deviceName: 'build-box' },
    { ...START, internetResource: false, lanBypass: false },
  ]) {
    const result = parseClientMessage(request(params));
    assert.equal(result.ok, true, result.ok ? '' : result.message);
  }
});

void test('start-portal-tunnel: refused as a bad request, the token never in the message', () => {
  const { token: _token, ...withoutToken } = START;
  const cases: { name: string; params: unknown }[] = [
    { name: 'no token', params: withoutToken },
    { name: 'an empty token', params: { ...START, token: '' } },
    { name: 'a token with a space', params: { ...START, token: `${TOKEN} x` } },
    { name: 'a token with a newline', params: { ...START, token: `${TOKEN}\n` } },
    { name: 'a token too long', params: { ...START, token: TOKEN.repeat(100) } },
    { name: 'a token that is a number', params: { ...START, token: 42 } },
    { name: 'the token as the interface name', params: { ...START, interfaceName: TOKEN } },
    { name: 'the token as the DNS control', params: { ...START, dnsControl: TOKEN } },
    { name: 'the token as the device name', params: { ...START, deviceName: TOKEN.repeat(5) } },
    { name: 'the token as the CA file', params: { ...START, caFile: TOKEN.repeat(100) } },
    { name: 'the token as the URL', params: { ...START, portalUrl: TOKEN.repeat(40) } },
    { name: 'an unknown field', params: { ...START, password: TOKEN } },
    { name: 'a string boolean', params: { ...START, lanBypass: 'yes' } },
    { name: 'no internetResource', params: { ...START, internetResource: undefined } },
  ];
  assert.ok(TOKEN.repeat(100).length > MAX_PORTAL_TOKEN_CHARS);
  for (const c of cases) {
    const result = parseClientMessage(request(c.params));
    assert.equal(result.ok, false, c.name);
    assert.ok(!result.ok);
    assert.equal(result.code, 'bad-request', c.name);
    assert.equal(result.id, 1, c.name);
    for (const part of ['Zm9vYmFy', 'c2VjcmV0', TOKEN.slice(-12)])
      assert.ok(!result.message.includes(part), `${c.name}: ${result.message}`);
  }
});

const counters = {
  controlSocket: {
    refusedConnections: 0,
    idleClosed: 0,
    slowClosed: 0,
    badRequests: 0,
    refusedRequests: 0,
    handlerErrors: 0,
    internalErrors: 0,
  },
  logLinesLost: 0,
};

const PORTAL: PortalStatus = {
  url: 'https://portal.example',
  connection: 'connected',
  identity: { accountSlug: 'acme', actorName: 'Alice Example' },
  resources: [
    {
      id: 'r1',
      name: 'wiki',
      type: 'cidr',
      address: '10.0.0.0/24',
      siteName: 'hq',
      siteStatus: 'online',
      authorized: true,
    },
    {
      id: 'r2',
      name: 'Internet',
      type: 'internet',
      address: null,
      siteName: null,
      siteStatus: 'unknown',
      authorized: false,
    },
  ],
  counters: { 'session.malformed': 1, 'channel.reconnects': 2 },
};

void test("the status carries a portal tunnel's portal side in every state, and sign-in-required", () => {
  assert.ok(CONNECTION_FAILURE_REASONS.includes('sign-in-required'));
  assert.ok(ERROR_CODES.includes('sign-in-required'));
  const signedOut = {
    state: 'disconnected',
    failure: { reason: 'sign-in-required', message: 'sign-in required: …' },
    ...counters,
    portal: { ...PORTAL, connection: 'signed-out', lastError: 'the portal refused the token' },
  };
  for (const status of [
    { state: 'connecting', interfaceName: 'gatehouse0', ...counters, portal: PORTAL },
    {
      state: 'disconnecting',
      interfaceName: 'gatehouse0',
      failure: null,
      ...counters,
      portal: PORTAL,
    },
    signedOut,
    { state: 'disconnected', failure: null, ...counters },
  ]) {
    const result = parseRequestResult('status', status);
    assert.equal(result.ok, true, result.ok ? '' : result.message);
  }

  const wrong: { name: string; portal: unknown }[] = [
    { name: 'an unknown connection state', portal: { ...PORTAL, connection: 'joined' } },
    {
      name: 'an unknown site status',
      portal: { ...PORTAL, resources: [{ ...PORTAL.resources[0], siteStatus: 'up' }] },
    },
    { name: 'a negative counter', portal: { ...PORTAL, counters: { x: -1 } } },
    { name: 'an overlong error', portal: { ...PORTAL, lastError: 'x'.repeat(501) } },
  ];
  for (const c of wrong) {
    const result = parseRequestResult('status', {
      state: 'connecting',
      interfaceName: 'gatehouse0',
      ...counters,
      portal: c.portal,
    });
    assert.equal(result.ok, false, c.name);
  }
});
