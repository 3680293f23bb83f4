import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { openSqliteStorage } from '../src/db/sqlite-storage.ts';
import {
  generateToken,
  hashToken,
  issueToken,
  OPERATOR_TOKEN_PREFIX,
  parseToken,
  verifyToken,
} from '../src/tokens.ts';

const NOW = 1_800_000_000_000;
const NONCE = 'n0nce_of-the-client-123';

function setup(t: { after: (fn: () => void) => void }) {
  const storage = openSqliteStorage(':memory:');
  t.after(() => storage.close());
  const account = storage.createAccount({ slug: 'acme', name: 'Acme', now: NOW });
  const user = storage.createActor({
    accountId: account.id,
    kind: 'user',
    name: 'alice',
    now: NOW,
  });
  const site = storage.createSite(account.id, 'office', NOW);
  return { storage, account, user, site };
}

void test('format: <prefix>.<id>.<secret>, 16 and 32 random bytes, the hash of the whole text', () => {
  const token = generateToken();
  const parsed = parseToken(token.text);
  assert.ok(parsed);
  assert.equal(parsed.prefix, OPERATOR_TOKEN_PREFIX);
  assert.equal(parsed.id, token.id);
  assert.equal(Buffer.from(parsed.id, 'base64url').length, 16);
  assert.equal(Buffer.from(parsed.secret, 'base64url').length, 32);
  assert.equal(token.fragment, `.${token.id}.${parsed.secret}`);
  assert.equal(token.text, `gh${token.fragment}`);
  assert.equal(token.hash, createHash('sha256').update(token.text).digest('hex'));
  assert.equal(hashToken(token.text), token.hash);
  assert.notEqual(generateToken().id, token.id);
  assert.throws(() => generateToken('has.dot'), RangeError);
});

void test('parseToken refuses what is not a token', () => {
  const good = generateToken().text;
  const [prefix, id, secret] = good.split('.') as [string, string, string];
  const bad = [
    '',
    'gh',
    `${prefix}.${id}`,
    `${good}.extra`,
    `.${id}.${secret}`,
    `${prefix}.${id}.${secret.slice(1)}`,
    `${prefix}.${id.slice(1)}.${secret}`,
    `${prefix}.${id}.${secret.slice(1)}=`,
    `pré.${id}.${secret}`,
    `${'x'.repeat(300)}.${id}.${secret}`,
    `' OR 1=1 --.${id}.${secret}`,
  ];
  for (const text of bad) assert.equal(parseToken(text), undefined, JSON.stringify(text));
});

void test('issue and verify: a browser token is nonce + fragment, stored as its hash only', (t) => {
  const { storage, account, user } = setup(t);
  const issued = issueToken(storage, {
    accountId: account.id,
    kind: 'browser_client',
    actorId: user.id,
    nonce: NONCE,
    now: NOW,
    expiresAt: NOW + 1000,
  });
  assert.equal(issued.text, NONCE + issued.fragment);
  assert.equal(issued.token.hash, hashToken(issued.text));
  assert.ok(!JSON.stringify(storage.listTokens()).includes(issued.text.split('.')[2]!));

  const verdict = verifyToken(storage, issued.text, NOW + 10, { markUsed: true });
  assert.equal(verdict.ok, true);
  assert.equal(verdict.ok && verdict.token.id, issued.token.id);
  assert.equal(storage.findToken(issued.token.id)?.lastUsedAt, NOW + 10);
  // Without the nonce (the deep link alone) it is not the token.
  assert.deepEqual(verifyToken(storage, `gh${issued.fragment}`, NOW), {
    ok: false,
    reason: 'unknown',
  });
  assert.throws(() =>
    issueToken(storage, {
      accountId: account.id,
      kind: 'browser_client',
      actorId: user.id,
      nonce: 'short',
      now: NOW,
      expiresAt: null,
    }),
  );
  assert.throws(() =>
    issueToken(storage, {
      accountId: account.id,
      kind: 'headless_client',
      actorId: user.id,
      nonce: NONCE,
      now: NOW,
      expiresAt: null,
    }),
  );
});

void test('verify: the reasons — malformed, unknown, expired, revoked (and a disabled actor)', (t) => {
  const { storage, account, user, site } = setup(t);
  const issue = (expiresAt: number | null) =>
    issueToken(storage, {
      accountId: account.id,
      kind: 'headless_client',
      actorId: user.id,
      now: NOW,
      expiresAt,
    });
  const live = issue(NOW + 100);
  const cases: [string, string, number, string][] = [
    ['garbage', 'not a token', NOW, 'malformed'],
    ['unknown id', generateToken().text, NOW, 'unknown'],
    [
      'right id, wrong secret',
      `gh.${live.token.id}.${generateToken().text.split('.')[2]}`,
      NOW,
      'unknown',
    ],
    ['at expiry', live.text, NOW + 100, 'expired'],
    ['after expiry', live.text, NOW + 101, 'expired'],
  ];
  for (const [label, text, now, reason] of cases) {
    assert.deepEqual(verifyToken(storage, text, now), { ok: false, reason }, label);
  }
  assert.equal(verifyToken(storage, live.text, NOW + 99).ok, true);
  assert.equal(storage.findToken(live.token.id)?.lastUsedAt, null, 'not marked without markUsed');

  const forever = issue(null);
  assert.equal(verifyToken(storage, forever.text, Number.MAX_SAFE_INTEGER).ok, true);
  storage.revokeToken(forever.token.id, NOW);
  assert.deepEqual(verifyToken(storage, forever.text, NOW), { ok: false, reason: 'revoked' });

  const other = issue(null);
  storage.updateActor(user.id, { disabled: true, now: NOW });
  assert.deepEqual(verifyToken(storage, other.text, NOW), { ok: false, reason: 'revoked' });

  const gateway = issueToken(storage, {
    accountId: account.id,
    kind: 'gateway',
    siteId: site.id,
    now: NOW,
    expiresAt: null,
  });
  const verdict = verifyToken(storage, gateway.text, NOW);
  assert.equal(verdict.ok && verdict.token.siteId, site.id);
});
