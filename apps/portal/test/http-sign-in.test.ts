/**
 * The sign-in flow over a real server: the account page, the form, the deep link for the GUI
 * client, the token page for a headless client, sign-out; the headers every page carries.
 */
import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import { test, type TestContext } from 'node:test';
import {
  DEFAULT_CLIENT_TOKEN_LIFETIME_MS,
  deepLink,
  type PortalHttpDeps,
} from '../src/http/handler.ts';
import { verifyPassword } from '../src/http/passwords.ts';
import {
  createFixture,
  decodeEntities,
  ManualClock,
  openSignInPage,
  postSignIn,
  request,
  startHarness,
} from './http-support.ts';

const NONCE = 'n0nce-Of-The-Client_0123456789';
const STATE = 'state-9f8e7d6c';
const T0 = Date.UTC(2026, 11, 3, 12, 0, 0);

async function setup(t: TestContext, extra: Partial<PortalHttpDeps> = {}) {
  const fixture = createFixture();
  const user = fixture.addUser('alice@example.com', 'Alice Example', 'correct horse battery');
  const clock = new ManualClock(T0);
  const harness = await startHarness({ backend: fixture.backend, now: clock.now, ...extra });
  t.after(async () => {
    await harness.close();
    fixture.close();
  });
  return { fixture, user, clock, harness, port: harness.port };
}

function assertSecurityHeaders(headers: IncomingHttpHeaders): void {
  const csp = String(headers['content-security-policy']);
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.doesNotMatch(csp, /unsafe-inline|script-src/);
  assert.equal(headers['x-frame-options'], 'DENY');
  assert.equal(headers['referrer-policy'], 'no-referrer');
  assert.equal(headers['x-content-type-options'], 'nosniff');
}

void test('/ asks for the account and sends it to /<account> with the sign-in parameters', async (t) => {
  const { port } = await setup(t);
  const root = await request(port, { path: '/', headers: { Accept: 'text/html' } });
  assert.equal(root.status, 200);
  assert.match(root.headers['content-type'] ?? '', /^text\/html/);
  assert.match(root.body, /<form method="get" action="\/">/);
  assert.match(root.body, /name="account"/);
  assertSecurityHeaders(root.headers);

  const carried = await request(port, {
    path: `/?as=gui-client&nonce=${NONCE}&state=${STATE}`,
    headers: { Accept: 'text/html' },
  });
  assert.match(carried.body, new RegExp(`name="nonce" value="${NONCE}"`));

  const go = await request(port, {
    path: `/?account=acme&as=gui-client&nonce=${NONCE}&state=${STATE}`,
  });
  assert.equal(go.status, 303);
  assert.equal(go.headers.location, `/acme?as=gui-client&nonce=${NONCE}&state=${STATE}`);

  const bad = await request(port, { path: "/?account=a'b", headers: { Accept: 'text/html' } });
  assert.equal(bad.status, 400);
  assert.match(bad.body, /An account name is/);
});

void test('the GUI client flow: form, password, 303 to the deep link whose token verifies', async (t) => {
  const { fixture, user, port, harness } = await setup(t);
  const path = `/acme?as=gui-client&nonce=${NONCE}&state=${STATE}`;
  const session = await openSignInPage(port, path);
  assertSecurityHeaders(session.page.headers);
  assert.match(String(session.page.headers['cache-control']), /no-store/);
  const setCookie = session.page.headers['set-cookie']![0]!;
  assert.match(setCookie, /HttpOnly/);
  assert.match(setCookie, /SameSite=Strict/);
  assert.doesNotMatch(setCookie, /Secure/, 'plain HTTP: not Secure');
  assert.match(session.page.body, /Sign in to Acme Corp/);
  assert.match(session.page.body, /<form method="post" action="\/acme\/sign_in">/);

  const before = fixture.tokenCount();
  const reply = await postSignIn(
    port,
    'acme',
    {
      csrf_token: session.csrfToken,
      as: 'gui-client',
      nonce: NONCE,
      state: STATE,
      username: 'alice@example.com',
      password: 'correct horse battery',
    },
    { Cookie: session.cookie, Origin: `http://127.0.0.1:${port}` },
  );
  assert.equal(reply.status, 303, reply.body);
  assert.match(String(reply.headers['cache-control']), /no-store/);
  const location = new URL(reply.headers.location!);
  assert.equal(location.protocol, 'gatehouse:');
  assert.equal(location.host, 'handle_client_sign_in_callback');
  assert.deepEqual([...location.searchParams.keys()].sort(), [
    'account_slug',
    'actor_name',
    'fragment',
    'state',
  ]);
  assert.equal(location.searchParams.get('account_slug'), 'acme');
  assert.equal(location.searchParams.get('actor_name'), 'Alice Example');
  assert.equal(location.searchParams.get('state'), STATE);
  const fragment = location.searchParams.get('fragment')!;
  assert.match(fragment, /^\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/);
  assert.equal(fixture.tokenCount(), before + 1);

  const check = fixture.verify(NONCE + fragment, T0 + 1000);
  assert.ok(check.ok, JSON.stringify(check));
  assert.equal(check.token.kind, 'browser_client');
  assert.equal(check.token.accountId, fixture.account.id);
  assert.equal(check.token.actorId, user.actorId);
  // The fragment alone, or with another nonce, is not the token.
  assert.equal(fixture.verify(fragment, T0 + 1000).ok, false);
  assert.equal(fixture.verify(`x${NONCE.slice(1)}${fragment}`, T0 + 1000).ok, false);
  // It expires after the default lifetime.
  assert.equal(
    fixture.verify(NONCE + fragment, T0 + DEFAULT_CLIENT_TOKEN_LIFETIME_MS - 1).ok,
    true,
  );
  assert.deepEqual(fixture.verify(NONCE + fragment, T0 + DEFAULT_CLIENT_TOKEN_LIFETIME_MS + 1), {
    ok: false,
    reason: 'expired',
  });

  const counters = harness.portal.counters();
  assert.equal(counters.signInsGui, 1);
  assert.equal(counters.signInAttempts, 1);
});

void test('a wrong password, or an unknown user, says so without saying which, and issues nothing', async (t) => {
  const { fixture, port, harness } = await setup(t);
  const session = await openSignInPage(port, `/acme?as=gui-client&nonce=${NONCE}&state=${STATE}`);
  const base = { csrf_token: session.csrfToken, as: 'gui-client', nonce: NONCE, state: STATE };
  const snapshot = fixture.snapshot();
  const wrongPassword = await postSignIn(
    port,
    'acme',
    { ...base, username: 'alice@example.com', password: 'wrong' },
    { Cookie: session.cookie },
  );
  const unknownUser = await postSignIn(
    port,
    'acme',
    { ...base, username: 'mallory', password: 'correct horse battery' },
    { Cookie: session.cookie },
  );
  for (const reply of [wrongPassword, unknownUser]) {
    assert.equal(reply.status, 401);
    assert.match(reply.body, /The username or password is not correct\./);
    assert.match(reply.body, /<form method="post"/, 'the form again, to retry');
    assertSecurityHeaders(reply.headers);
  }
  assert.match(unknownUser.body, /value="mallory"/, 'the username is kept in the form');
  assert.doesNotMatch(wrongPassword.body, /wrong/, 'the password is never echoed');
  assert.equal(fixture.snapshot(), snapshot);
  assert.equal(harness.portal.counters().refused.wrong_credentials, 2);
  // The form on the error page still works.
  const retry = await postSignIn(
    port,
    'acme',
    {
      ...base,
      csrf_token: decodeEntities(/name="csrf_token" value="([^"]+)"/.exec(wrongPassword.body)![1]!),
      username: 'alice@example.com',
      password: 'correct horse battery',
    },
    { Cookie: session.cookie },
  );
  assert.equal(retry.status, 303);
});

void test('the headless flow shows the token once, uncached, and it verifies', async (t) => {
  const { fixture, port } = await setup(t);
  const session = await openSignInPage(port, '/acme?as=headless-client');
  assert.match(session.page.body, /headless client/);
  const reply = await postSignIn(
    port,
    'acme',
    {
      csrf_token: session.csrfToken,
      as: 'headless-client',
      username: 'alice@example.com',
      password: 'correct horse battery',
    },
    { Cookie: session.cookie },
  );
  assert.equal(reply.status, 200, reply.body);
  assert.match(String(reply.headers['cache-control']), /no-store/);
  assert.equal(reply.headers.pragma, 'no-cache');
  assertSecurityHeaders(reply.headers);
  const token = decodeEntities(
    /<textarea id="token"[^>]*>([^<]+)<\/textarea>/.exec(reply.body)![1]!,
  );
  const check = fixture.verify(token, T0);
  assert.ok(check.ok, JSON.stringify(check));
  assert.equal(check.token.kind, 'headless_client');
  assert.equal(reply.body.split(token).length - 1, 1, 'the token appears once on the page');
  // Nothing shows it again: the sign-in page is a fresh form.
  const again = await request(port, { path: '/acme?as=headless-client' });
  assert.ok(!again.body.includes(token));
});

void test('sign-out revokes the token it carries; then the token is refused', async (t) => {
  const revoked: string[] = [];
  const { fixture, harness: second } = await setup(t, { onTokenRevoked: (id) => revoked.push(id) });
  const signIn = async (): Promise<string> => {
    const session = await openSignInPage(
      second.port,
      `/acme?as=gui-client&nonce=${NONCE}&state=${STATE}`,
    );
    const reply = await postSignIn(
      second.port,
      'acme',
      {
        csrf_token: session.csrfToken,
        as: 'gui-client',
        nonce: NONCE,
        state: STATE,
        username: 'alice@example.com',
        password: 'correct horse battery',
      },
      { Cookie: session.cookie },
    );
    assert.equal(reply.status, 303);
    return NONCE + new URL(reply.headers.location!).searchParams.get('fragment')!;
  };

  const token = await signIn();
  const out = await request(second.port, {
    method: 'DELETE',
    path: '/acme/sign_out',
    headers: { Authorization: `Bearer ${token}` },
  });
  assert.equal(out.status, 204);
  assert.deepEqual(fixture.verify(token, T0), { ok: false, reason: 'revoked' });
  assert.equal(revoked.length, 1);
  const twice = await request(second.port, {
    method: 'DELETE',
    path: '/acme/sign_out',
    headers: { Authorization: `Bearer ${token}` },
  });
  assert.equal(twice.status, 401);
  assert.equal(twice.headers['content-type'], 'application/problem+json');
  assert.equal(JSON.parse(twice.body).code, 'invalid_token');

  // POST works too, and so does X-Authorization (what the WebSocket uses).
  const other = await signIn();
  const post = await request(second.port, {
    method: 'POST',
    path: '/acme/sign_out',
    headers: { 'X-Authorization': `Bearer ${other}` },
  });
  assert.equal(post.status, 204);
  assert.deepEqual(fixture.verify(other, T0), { ok: false, reason: 'revoked' });

  // Without a token, with garbage, or for another account: 401 invalid_token, nothing changes.
  const third = await signIn();
  fixture.addAccount('globex', 'Globex');
  const snapshot = fixture.snapshot();
  for (const headers of [
    {} as Record<string, string>,
    { Authorization: 'Bearer ' },
    { Authorization: `Basic ${Buffer.from('alice:x').toString('base64')}` },
    { Authorization: `Bearer ${third}x` },
    { Authorization: "Bearer ' OR 1=1 --" },
  ]) {
    const reply = await request(second.port, { method: 'DELETE', path: '/acme/sign_out', headers });
    assert.equal(reply.status, 401, JSON.stringify(headers));
    assert.equal(JSON.parse(reply.body).code, 'invalid_token');
  }
  const elsewhere = await request(second.port, {
    method: 'DELETE',
    path: '/globex/sign_out',
    headers: { Authorization: `Bearer ${third}` },
  });
  assert.equal(elsewhere.status, 401);
  assert.equal(fixture.snapshot(), snapshot);
  assert.equal(fixture.verify(third, T0).ok, true);
  assert.equal(second.portal.counters().signOuts, 2);
  assert.equal(second.portal.counters().refused.invalid_token, 7);
});

void test('deep link parameters are percent-encoded and decode to exactly what went in', () => {
  const fields = {
    accountSlug: 'acme',
    actorName: 'Zoë O\'Brien & Co = 100% "real" #1 + friends/?',
    fragment: '.abc_-DEF.ghi-_JKL',
    state: 'a&b=c+d#e%f?g/h:i;j',
  };
  const link = deepLink(fields);
  assert.ok(link.startsWith('gatehouse://handle_client_sign_in_callback?account_slug=acme&'));
  assert.doesNotMatch(link.slice(link.indexOf('?') + 1), /[ #"'+]/, 'no raw specials');
  const url = new URL(link);
  assert.equal(url.hash, '');
  assert.equal(url.searchParams.get('actor_name'), fields.actorName);
  assert.equal(url.searchParams.get('state'), fields.state);
  assert.equal(url.searchParams.get('fragment'), fields.fragment);
  // decodeURIComponent (no + for space) agrees too.
  const pairs = Object.fromEntries(
    url.search
      .slice(1)
      .split('&')
      .map((pair) => pair.split('=').map(decodeURIComponent) as [string, string]),
  );
  assert.equal(pairs['actor_name'], fields.actorName);
  assert.equal(pairs['state'], fields.state);
});

void test('a state full of URL specials survives the whole flow', async (t) => {
  const { fixture, port } = await setup(t);
  fixture.addUser('bob@example.com', 'Bob & "Sons" <b>', 'hunter2hunter2');
  const state = "x&y=z+w#q%25?/;:@!$'()*,~";
  const path = `/acme?as=gui-client&nonce=${NONCE}&state=${encodeURIComponent(state)}`;
  const session = await openSignInPage(port, path);
  assert.match(session.page.body, /Sign in to Acme Corp/);
  assert.ok(!session.page.body.includes('<b>'));
  const reply = await postSignIn(
    port,
    'acme',
    {
      csrf_token: session.csrfToken,
      as: 'gui-client',
      nonce: NONCE,
      state,
      username: 'bob@example.com',
      password: 'hunter2hunter2',
    },
    { Cookie: session.cookie },
  );
  assert.equal(reply.status, 303, reply.body);
  const location = new URL(reply.headers.location!);
  assert.equal(location.searchParams.get('state'), state);
  assert.equal(location.searchParams.get('actor_name'), 'Bob & "Sons" <b>');
  assert.equal(location.hash, '');
});

void test('the token lifetime is configurable', async (t) => {
  const fixture = createFixture();
  fixture.addUser('alice@example.com', 'Alice', 'pw-pw-pw-pw');
  const harness = await startHarness({
    backend: fixture.backend,
    now: () => T0,
    options: { clientTokenLifetimeMs: 60_000 },
  });
  t.after(async () => {
    await harness.close();
    fixture.close();
  });
  const session = await openSignInPage(harness.port, '/acme?as=headless-client');
  const reply = await postSignIn(
    harness.port,
    'acme',
    {
      csrf_token: session.csrfToken,
      as: 'headless-client',
      username: 'alice@example.com',
      password: 'pw-pw-pw-pw',
    },
    { Cookie: session.cookie },
  );
  const token = decodeEntities(
    /<textarea id="token"[^>]*>([^<]+)<\/textarea>/.exec(reply.body)![1]!,
  );
  assert.equal(fixture.verify(token, T0 + 59_999).ok, true);
  assert.deepEqual(fixture.verify(token, T0 + 60_001), { ok: false, reason: 'expired' });
});

void test('a password hash with weaker parameters is replaced by a current one at sign-in', async (t) => {
  const { fixture, port } = await setup(t);
  const { scryptSync, randomBytes } = await import('node:crypto');
  const salt = randomBytes(16);
  const weak = `scrypt$1024$8$1$${salt.toString('base64url')}$${scryptSync('old but fine', salt, 32, { N: 1024, r: 8, p: 1 }).toString('base64url')}`;
  const carol = fixture.addUser('carol@example.com', 'Carol', 'placeholder');
  fixture.storage.setPasswordIdentity(carol.actorId, weak, T0);
  const session = await openSignInPage(port, '/acme?as=headless-client');
  const reply = await postSignIn(
    port,
    'acme',
    {
      csrf_token: session.csrfToken,
      as: 'headless-client',
      username: 'carol@example.com',
      password: 'old but fine',
    },
    { Cookie: session.cookie },
  );
  assert.equal(reply.status, 200, reply.body);
  const stored = fixture.storage.findPasswordIdentity(carol.actorId)!.passwordHash;
  assert.notEqual(stored, weak);
  assert.match(stored, /^scrypt\$32768\$8\$1\$/);
  assert.equal(verifyPassword('old but fine', stored), true);
});

void test('service accounts and disabled users do not sign in with a password', async (t) => {
  const { fixture, port } = await setup(t);
  const dave = fixture.addUser('dave@example.com', 'Dave', 'dave password');
  fixture.storage.updateActor(dave.actorId, { disabled: true, now: T0 });
  const robot = fixture.storage.createActor({
    accountId: fixture.account.id,
    kind: 'service_account',
    name: 'robot',
    now: T0,
  });
  void robot; // a service account has no password identity (the storage refuses one)
  const snapshot = fixture.snapshot();
  for (const [username, password] of [
    ['dave@example.com', 'dave password'],
    ['robot', 'robot password'],
  ] as const) {
    const session = await openSignInPage(port, '/acme?as=headless-client');
    const reply = await postSignIn(
      port,
      'acme',
      { csrf_token: session.csrfToken, as: 'headless-client', username, password },
      { Cookie: session.cookie },
    );
    assert.equal(reply.status, 401, username);
    assert.match(reply.body, /The username or password is not correct\./);
  }
  assert.equal(fixture.snapshot(), snapshot);
  // By name works as well as by email for a user.
  const session = await openSignInPage(port, '/acme?as=headless-client');
  const byName = await postSignIn(
    port,
    'acme',
    {
      csrf_token: session.csrfToken,
      as: 'headless-client',
      username: 'Alice Example',
      password: 'correct horse battery',
    },
    { Cookie: session.cookie },
  );
  assert.equal(byName.status, 200);
});
