/**
 * Sign-in limits and form lifetime: only failed attempts are charged, per account and user name
 * (an attacker guessing at one name does not lock out the others, and many people signing in
 * at once are not refused); the lookup is by email only for input with an "@"; a form token
 * older than 12 hours is refused with a page saying to reload the form.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { CSRF_TOKEN_MAX_AGE_MS, CsrfProtection } from '../src/http/csrf.ts';
import type { PortalHttpOptions } from '../src/http/handler.ts';
import { signInUserKey, TokenBucketLimiter } from '../src/http/rate-limit.ts';
import { hashPassword } from '../src/http/passwords.ts';
import { storageSignInBackend } from '../src/http/sign-in-backend.ts';
import type { PortalStorage } from '../src/db/storage.ts';
import {
  createFixture,
  ManualClock,
  openSignInPage,
  postSignIn,
  startHarness,
  type FormSession,
} from './http-support.ts';

const NONCE = 'abcdefghijklmnopqrstuvwxyz012345';
const STATE = 'st4te';
const T0 = Date.UTC(2026, 11, 3, 12, 0, 0);
const PASSWORD = 'the right password';

async function setup(t: TestContext, options: PortalHttpOptions = {}, users = ['alice', 'bob']) {
  const fixture = createFixture();
  for (const user of users) fixture.addUser(user, user, PASSWORD);
  const clock = new ManualClock(T0);
  const harness = await startHarness({ backend: fixture.backend, now: clock.now, options });
  t.after(async () => {
    await harness.close();
    fixture.close();
  });
  const open = (): Promise<FormSession> =>
    openSignInPage(harness.port, `/acme?as=gui-client&nonce=${NONCE}&state=${STATE}`);
  const signIn = (session: FormSession, username: string, password: string) =>
    postSignIn(
      harness.port,
      'acme',
      {
        csrf_token: session.csrfToken,
        as: 'gui-client',
        nonce: NONCE,
        state: STATE,
        username,
        password,
      },
      { Cookie: session.cookie },
    );
  return { fixture, clock, harness, open, signIn };
}

void test("guesses at one user's password do not lock the account's other users out", async (t) => {
  const { open, signIn, clock } = await setup(t, {
    addressRateLimit: { burst: 1000, refillMs: 1_000 },
  });
  const session = await open();
  // The attacker keeps guessing at alice (defaults: 10 at once, then one per 30 s).
  const statuses: number[] = [];
  for (let i = 0; i < 14; i += 1) {
    statuses.push((await signIn(session, 'alice', `guess-${i}`)).status);
  }
  assert.deepEqual(statuses.slice(0, 10), Array<number>(10).fill(401));
  assert.deepEqual(statuses.slice(10), [429, 429, 429, 429]);
  // The same name typed differently is the same bucket.
  assert.equal((await signIn(session, '  ALICE ', 'guess-x')).status, 429);
  // bob is not affected.
  assert.equal((await signIn(session, 'bob', PASSWORD)).status, 303);
  clock.advance(30_000);
  assert.equal((await signIn(session, 'alice', 'guess-y')).status, 401);
  assert.equal((await signIn(session, 'alice', PASSWORD)).status, 429);
});

void test('successful sign-ins are not charged: many in a row are all let in', async (t) => {
  const users = Array.from({ length: 25 }, (_, i) => `user${i}`);
  const { open, signIn, harness } = await setup(t, {}, users);
  const session = await open();
  // Defaults: 10 failures per account and user, 20 per address; 50 good sign-ins pass.
  for (let round = 0; round < 2; round += 1) {
    for (const user of users) {
      const reply = await signIn(session, user, PASSWORD);
      assert.equal(reply.status, 303, `${user} round ${round}: ${reply.status}`);
    }
  }
  assert.equal(harness.portal.counters().refused.rate_limited, 0);
  assert.equal(harness.portal.counters().signInsGui, 50);
  // Failures still count per address: after 20 wrong passwords (each for another name), 429.
  const statuses: number[] = [];
  for (let i = 0; i < 22; i += 1) {
    statuses.push((await signIn(session, users[i]!, 'wrong')).status);
  }
  assert.deepEqual(statuses.slice(0, 20), Array<number>(20).fill(401));
  assert.deepEqual(statuses.slice(20), [429, 429]);
});

void test('guesses sent at once cannot all pass the check while their hashes run', async (t) => {
  const { open, signIn } = await setup(t, {
    accountRateLimit: { burst: 3, refillMs: 60_000 },
    addressRateLimit: { burst: 1000, refillMs: 1_000 },
  });
  const session = await open();
  const replies = await Promise.all(
    Array.from({ length: 12 }, (_, i) => signIn(session, 'alice', `guess-${i}`)),
  );
  const statuses = replies.map((reply) => reply.status).sort();
  assert.deepEqual(statuses, [...Array<number>(3).fill(401), ...Array<number>(9).fill(429)]);
});

void test('limiter: refund gives back an attempt, capped at the burst; user keys normalise', () => {
  const limiter = new TokenBucketLimiter({ burst: 2, refillMs: 1_000 });
  limiter.take('k', 0);
  limiter.take('k', 0);
  assert.equal(limiter.check('k', 0).allowed, false);
  limiter.refund('k', 0);
  assert.equal(limiter.available('k', 0), 1);
  limiter.refund('k', 0);
  limiter.refund('k', 0);
  assert.equal(limiter.available('k', 0), 2);
  limiter.refund('never-seen', 0);
  assert.equal(limiter.size, 1);
  assert.equal(
    signInUserKey('Acme', ' Alice@Example.COM '),
    signInUserKey('acme', 'alice@example.com'),
  );
  assert.notEqual(signInUserKey('acme', 'alice'), signInUserKey('acme', 'bob'));
  assert.notEqual(signInUserKey('acme', 'alice'), signInUserKey('globex', 'alice'));
  assert.ok(signInUserKey('acme', 'x'.repeat(5_000)).length < 300);
});

void test('sign-in looks a user up by email only when the input has an "@", else by name', () => {
  const calls: string[] = [];
  const actor = {
    id: 'a1',
    kind: 'user',
    name: 'Dave',
    disabledAt: null,
  };
  const storage = {
    findActorByEmail: (_account: string, email: string) => {
      calls.push(`email:${email}`);
      return actor;
    },
    findActorByName: (_account: string, name: string) => {
      calls.push(`name:${name}`);
      return actor;
    },
    findPasswordIdentity: () => ({ passwordHash: 'scrypt$x' }),
  } as unknown as PortalStorage;
  const backend = storageSignInBackend(storage);
  assert.equal(backend.findPasswordIdentity('acc', 'Dave')?.actorId, 'a1');
  assert.deepEqual(calls, ['name:Dave']);
  calls.length = 0;
  assert.equal(backend.findPasswordIdentity('acc', 'dave@example.com')?.actorId, 'a1');
  assert.deepEqual(calls, ['email:dave@example.com']);
});

void test('sign-in by name and by email both work against real storage', async (t) => {
  const { open, signIn, fixture } = await setup(t, {}, ['erin']);
  // A user named like an email address, with another email.
  const actor = fixture.storage.createActor({
    accountId: fixture.account.id,
    kind: 'user',
    name: 'dave@example.com',
    email: 'dave@example.org',
    now: T0,
  });
  fixture.storage.setPasswordIdentity(actor.id, hashPassword(PASSWORD), T0);
  const session = await open();
  assert.equal((await signIn(session, 'dave@example.org', PASSWORD)).status, 303, 'by email');
  assert.equal((await signIn(session, 'erin', PASSWORD)).status, 303, 'by name');
  // Input with an "@" is an email, never a name, even when a name looks like one.
  assert.equal((await signIn(session, 'dave@example.com', PASSWORD)).status, 401);
});

void test('a form older than 12 hours is refused with a page saying to reload it', async (t) => {
  const { open, signIn, clock, fixture, harness } = await setup(t);
  const session = await open();
  clock.advance(CSRF_TOKEN_MAX_AGE_MS - 60_000);
  assert.equal((await signIn(session, 'alice', PASSWORD)).status, 303, 'just under 12 h');
  const old = await open();
  clock.advance(CSRF_TOKEN_MAX_AGE_MS + 1);
  const snapshot = fixture.snapshot();
  const reply = await signIn(old, 'alice', PASSWORD);
  assert.equal(reply.status, 403);
  assert.match(reply.body, /This form has expired/);
  assert.match(reply.body, /Reload the sign-in page/);
  assert.equal(fixture.snapshot(), snapshot, 'no token issued');
  assert.equal(harness.portal.counters().refused.csrf, 1);
  // A fresh form works again.
  assert.equal((await signIn(await open(), 'alice', PASSWORD)).status, 303);
});

void test('form tokens: the issue time is inside the MAC, so it cannot be moved', () => {
  const csrf = new CsrfProtection(Buffer.alloc(32, 7));
  const cookie = 'c'.repeat(43);
  const token = csrf.formToken(cookie, 'acme', T0);
  assert.match(token, /^\d+\.[A-Za-z0-9_-]{43}$/);
  assert.equal(csrf.verify(cookie, token, 'acme', T0), 'ok');
  assert.equal(csrf.verify(cookie, token, 'acme', T0 + CSRF_TOKEN_MAX_AGE_MS), 'ok');
  assert.equal(csrf.verify(cookie, token, 'acme', T0 + CSRF_TOKEN_MAX_AGE_MS + 1), 'expired');
  assert.equal(csrf.verify(cookie, token, 'acme', T0 - 10 * 60_000), 'expired', 'from the future');
  const mac = token.split('.')[1]!;
  const refreshed = `${T0 + CSRF_TOKEN_MAX_AGE_MS}.${mac}`;
  assert.equal(csrf.verify(cookie, refreshed, 'acme', T0 + CSRF_TOKEN_MAX_AGE_MS + 1), 'invalid');
  assert.equal(csrf.verify(cookie, mac, 'acme', T0), 'invalid', 'the old, undated form');
  assert.equal(csrf.verify(cookie, token, 'globex', T0), 'invalid');
  assert.equal(csrf.verify(undefined, token, 'acme', T0), 'invalid');
  assert.equal(csrf.verify(cookie, `99999999999999999.${mac}`, 'acme', T0), 'invalid');
});
