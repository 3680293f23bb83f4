import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { isLaterTimestamp, tai64n } from '../src/tai64n.ts';

void describe('tai64n', () => {
  void it('encodes 2^62 + 10 + unix seconds, big-endian, then nanoseconds', () => {
    const timestamp = tai64n(1_700_000_000_000);

    const view = new DataView(timestamp.buffer);
    assert.equal(timestamp.length, 12);
    assert.equal(view.getBigUint64(0), 2n ** 62n + 10n + 1_700_000_000n);
    assert.equal(view.getUint32(8), 0);
  });

  void it('keeps sub-second time only at ~16 ms granularity', () => {
    const timestamp = tai64n(1_700_000_000_500);

    const nanoseconds = new DataView(timestamp.buffer).getUint32(8);
    assert.equal(nanoseconds & 0xffffff, 0);
    assert.ok(Math.abs(nanoseconds - 500_000_000) < 2 ** 24);
  });

  void it('orders later times after earlier ones and rejects equal ones', () => {
    const earlier = tai64n(1_700_000_000_000);
    const later = tai64n(1_700_000_000_100);

    assert.equal(isLaterTimestamp(later, earlier), true);
    assert.equal(isLaterTimestamp(earlier, later), false);
    assert.equal(isLaterTimestamp(earlier, tai64n(1_700_000_000_000)), false);
  });

  void it('orders across a seconds boundary and across the 2^32 seconds word', () => {
    assert.equal(isLaterTimestamp(tai64n(2_000), tai64n(1_999)), true);
    const beyondWord = tai64n((2 ** 32 + 5) * 1000);
    assert.equal(isLaterTimestamp(beyondWord, tai64n((2 ** 32 - 20) * 1000)), true);
  });
});
