import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  hashPassword,
  hashPasswordAsync,
  parsePasswordHash,
  passwordHashNeedsUpgrade,
  SCRYPT_N,
  verifyPassword,
  verifyPasswordAsync,
} from '../src/http/passwords.ts';

void test('a hash is scrypt$N$r$p$salt$hash with the current parameters and a fresh salt', () => {
  const first = hashPassword('correct horse');
  const second = hashPassword('correct horse');
  const [scheme, n, r, p, salt, hash] = first.split('$');
  assert.equal(scheme, 'scrypt');
  assert.equal(Number(n), 2 ** 15);
  assert.equal(Number(r), 8);
  assert.equal(Number(p), 1);
  assert.equal(Buffer.from(salt!, 'base64url').length, 16);
  assert.equal(Buffer.from(hash!, 'base64url').length, 32);
  assert.notEqual(first, second, 'each hash has its own salt');
  assert.equal(parsePasswordHash(first)?.n, SCRYPT_N);
  assert.equal(passwordHashNeedsUpgrade(first), false);
});

void test('verify accepts the password and refuses any other', async () => {
  const stored = await hashPasswordAsync('pässwörd 🔑');
  assert.equal(verifyPassword('pässwörd 🔑', stored), true);
  assert.equal(await verifyPasswordAsync('pässwörd 🔑', stored), true);
  for (const wrong of ['pässwörd', 'pässwörd 🔑 ', '', 'PÄSSWÖRD 🔑', "' OR 1=1 --"]) {
    assert.equal(verifyPassword(wrong, stored), false, JSON.stringify(wrong));
    assert.equal(await verifyPasswordAsync(wrong, stored), false, JSON.stringify(wrong));
  }
});

void test('the same password in another Unicode normal form verifies (NFC before hashing)', () => {
  const composed = 'caf\u00e9';
  const decomposed = 'cafe\u0301';
  assert.notEqual(composed, decomposed);
  assert.equal(verifyPassword(decomposed, hashPassword(composed)), true);
});

void test('no stored hash, or a malformed one, verifies nothing — and still costs a scrypt', () => {
  const stored = hashPassword('secret');
  const malformed = [
    undefined,
    null,
    '',
    'secret',
    'scrypt$32768$8$1$',
    stored.replace('scrypt$', 'bcrypt$'),
    stored.replace('$32768$', '$32767$'), // N not a power of two
    stored.replace('$32768$', `$${2 ** 24}$`), // N beyond the bound
    stored.replace('$8$1$', '$99$1$'), // r beyond the bound
    `${stored}$extra`,
    stored.replace(/\$[^$]+$/, '$AAAA'), // hash too short
    stored.replace(/\$[^$]+$/, '$!!!!'),
  ];
  for (const bad of malformed) {
    assert.equal(verifyPassword('secret', bad), false, String(bad));
  }
  // A dummy check takes about as long as a real one: samples taken alternately (so load on
  // the machine hits both alike), medians compared with generous bounds.
  const real: number[] = [];
  const dummy: number[] = [];
  const timed = (stored: string | undefined): number => {
    const start = process.hrtime.bigint();
    verifyPassword('wrong', stored);
    return Number(process.hrtime.bigint() - start) / 1e6;
  };
  for (let i = 0; i < 5; i += 1) {
    real.push(timed(stored));
    dummy.push(timed(undefined));
  }
  const median = (samples: number[]): number => samples.sort((a, b) => a - b)[2]!;
  const [r, d] = [median(real), median(dummy)];
  assert.ok(d > r / 4 && d < r * 4, `dummy ${d} ms vs real ${r} ms`);
});

void test('a hash with weaker parameters still verifies and asks for an upgrade', async () => {
  const { scryptSync, randomBytes } = await import('node:crypto');
  const salt = randomBytes(16);
  const hash = scryptSync('old', salt, 32, { N: 1024, r: 8, p: 1 });
  const stored = `scrypt$1024$8$1$${salt.toString('base64url')}$${hash.toString('base64url')}`;
  assert.equal(verifyPassword('old', stored), true);
  assert.equal(passwordHashNeedsUpgrade(stored), true);
});
