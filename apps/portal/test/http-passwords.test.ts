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
  // A dummy check takes about as long as a real one (generous bounds: CI machines are noisy).
  const time = (stored: string | undefined): number => {
    const samples: number[] = [];
    for (let i = 0; i < 3; i += 1) {
      const start = process.hrtime.bigint();
      verifyPassword('wrong', stored);
      samples.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    return samples.sort((a, b) => a - b)[1]!;
  };
  const real = time(stored);
  const dummy = time(undefined);
  assert.ok(dummy > real / 3 && dummy < real * 3, `dummy ${dummy} ms vs real ${real} ms`);
});

void test('a hash with weaker parameters still verifies and asks for an upgrade', async () => {
  const { scryptSync, randomBytes } = await import('node:crypto');
  const salt = randomBytes(16);
  const hash = scryptSync('old', salt, 32, { N: 1024, r: 8, p: 1 });
  const stored = `scrypt$1024$8$1$${salt.toString('base64url')}$${hash.toString('base64url')}`;
  assert.equal(verifyPassword('old', stored), true);
  assert.equal(passwordHashNeedsUpgrade(stored), true);
});
