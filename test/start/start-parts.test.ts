/** The pure parts of `npm start`: certificate names, the deep link's checks, apply's summary. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { summarise } from '../lib/topology.ts';
import { parseSignInCallback, signInNonce } from '../lib/topology-sign-in.ts';
import { subjectAltName } from './certificates.ts';

void test('subjectAltName: IP: for addresses, DNS: for names, anything else refused', () => {
  assert.equal(
    subjectAltName(['10.231.0.1', 'portal.demo.internal', 'fd00::1']),
    'IP:10.231.0.1,DNS:portal.demo.internal,IP:fd00::1',
  );
  for (const bad of [[], ['a b'], ['x,DNS:evil.example'], ['-leading.example']]) {
    assert.throws(() => subjectAltName(bad), `${JSON.stringify(bad)} refused`);
  }
});

const STATE = 'state-0123456789abcdef';
const LINK =
  'gatehouse://handle_client_sign_in_callback?account_slug=demo&actor_name=dana&fragment=FRAG_x-1&state=' +
  STATE;

void test('parseSignInCallback: the account, the actor and the fragment of a good link', () => {
  assert.deepEqual(parseSignInCallback(LINK, STATE), {
    accountSlug: 'demo',
    actorName: 'dana',
    fragment: 'FRAG_x-1',
  });
});

void test('parseSignInCallback: refuses what the desktop app must refuse, never quoting the fragment', () => {
  const cases: [string, string, RegExp][] = [
    ['not a url', STATE, /not a URL/],
    [LINK.replace('gatehouse:', 'https:'), STATE, /not gatehouse:/],
    [LINK.replace('handle_client_sign_in_callback', 'elsewhere'), STATE, /not gatehouse:/],
    [LINK, 'another-state', /another state/],
    [LINK.replace('&fragment=FRAG_x-1', ''), STATE, /no fragment/],
    [LINK.replace('account_slug=demo&', ''), STATE, /no account_slug/],
  ];
  for (const [location, state, message] of cases) {
    assert.throws(
      () => parseSignInCallback(location, state),
      (error: Error) => message.test(error.message) && !error.message.includes('FRAG_x-1'),
      location,
    );
  }
});

void test('signInNonce: 32 base64url characters, the portal accepts 16 to 128 of them', () => {
  const nonces = new Set(Array.from({ length: 50 }, signInNonce));
  assert.equal(nonces.size, 50);
  for (const nonce of nonces) assert.match(nonce, /^[A-Za-z0-9_-]{32}$/);
});

void test('summarise: counts apply lines by kind', () => {
  assert.equal(
    summarise([
      'created account demo',
      'created user demo/dana (with a password)',
      'created policy demo/engineering → lab-web',
      'created policy demo/engineering → app',
      'updated resource demo/app',
      'created service account bench/iperf',
      'no changes',
    ]),
    '1 account, 1 user, 2 policies, 1 resource, 1 service account',
  );
});
