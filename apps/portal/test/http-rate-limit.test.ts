import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sourceAddressKey, TokenBucketLimiter } from '../src/http/rate-limit.ts';

void test('a bucket allows its burst, then refuses with the time until the next attempt', () => {
  const limiter = new TokenBucketLimiter({ burst: 3, refillMs: 10_000 });
  const t0 = 1_000_000;
  for (let i = 0; i < 3; i += 1) assert.deepEqual(limiter.take('acme', t0), { allowed: true });
  assert.deepEqual(limiter.take('acme', t0), { allowed: false, retryAfterMs: 10_000 });
  assert.deepEqual(limiter.take('acme', t0 + 4_000), { allowed: false, retryAfterMs: 6_000 });
  assert.equal(limiter.refused, 2);
  assert.deepEqual(limiter.take('acme', t0 + 10_000), { allowed: true });
  assert.equal(limiter.take('acme', t0 + 10_000).allowed, false);
  // Another key is untouched.
  assert.equal(limiter.take('other', t0).allowed, true);
  // Refills up to the burst, no further.
  assert.equal(limiter.available('acme', t0 + 1_000_000), 3);
});

void test('check does not take; time going backwards refills nothing', () => {
  const limiter = new TokenBucketLimiter({ burst: 1, refillMs: 1_000 });
  assert.equal(limiter.check('k', 5_000).allowed, true);
  assert.equal(limiter.check('k', 5_000).allowed, true);
  assert.equal(limiter.take('k', 5_000).allowed, true);
  assert.equal(limiter.take('k', 1_000).allowed, false);
  assert.equal(limiter.refused, 1);
});

void test('keys are bounded: refilled buckets go first, then the least recently used', () => {
  const limiter = new TokenBucketLimiter({ burst: 2, refillMs: 1_000, maxKeys: 100 });
  limiter.take('hot', 0);
  limiter.take('hot', 0);
  for (let i = 0; i < 1_000; i += 1) limiter.take(`cold-${i}`, 0);
  assert.ok(limiter.size <= 100, `size ${limiter.size}`);
  // 'hot' was the oldest, so it went; a fresh bucket for it is a full one.
  assert.equal(limiter.available('hot', 0), 2);
});

void test('bad options are refused', () => {
  assert.throws(() => new TokenBucketLimiter({ burst: 0, refillMs: 1 }), RangeError);
  assert.throws(() => new TokenBucketLimiter({ burst: 1, refillMs: 0 }), RangeError);
});

void test('source address keys: IPv4 as is, IPv4-mapped as IPv4, IPv6 by /64', () => {
  assert.equal(sourceAddressKey('192.0.2.7'), '192.0.2.7');
  assert.equal(sourceAddressKey('::ffff:192.0.2.7'), '192.0.2.7');
  assert.equal(sourceAddressKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
  assert.equal(sourceAddressKey('2001:db8:1:2::99'), '2001:db8:1:2::/64');
  assert.notEqual(sourceAddressKey('2001:db8:1:3::1'), sourceAddressKey('2001:db8:1:2::1'));
  assert.equal(sourceAddressKey(undefined), 'unknown');
});
