import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  HANDSHAKE_RATE_BURST,
  MAX_RATE_LIMITED_SOURCES,
  UNDER_LOAD_AFTER_TIME,
} from '../src/constants.ts';
import { HandshakeAdmission } from '../src/handshake-admission.ts';
import type { Admission } from '../src/handshake-admission.ts';

const A = Uint8Array.of(192, 0, 2, 1);
const B = Uint8Array.of(192, 0, 2, 2);
const V6 = Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1);
const V6_SAME_64 = Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9);
const V6_OTHER_64 = Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1);

void describe('HandshakeAdmission: under load', () => {
  const cases: { name: string; depths: [number, number][]; at: number; underLoad: boolean }[] = [
    { name: 'never loaded', depths: [], at: 0, underLoad: false },
    { name: 'a queue below the depth', depths: [[0, 7]], at: 1, underLoad: false },
    { name: 'a queue at the depth', depths: [[0, 8]], at: 1, underLoad: true },
    {
      name: 'held until UNDER_LOAD_AFTER_TIME after',
      depths: [[0, 8]],
      at: UNDER_LOAD_AFTER_TIME - 1,
      underLoad: true,
    },
    {
      name: 'released at UNDER_LOAD_AFTER_TIME',
      depths: [[0, 8]],
      at: UNDER_LOAD_AFTER_TIME,
      underLoad: false,
    },
    {
      name: 'a shallow queue later does not release it early',
      depths: [
        [0, 20],
        [500, 0],
      ],
      at: 900,
      underLoad: true,
    },
    {
      name: 'a deep queue later extends it',
      depths: [
        [0, 20],
        [800, 9],
      ],
      at: 1700,
      underLoad: true,
    },
  ];
  for (const { name, depths, at, underLoad } of cases) {
    void it(name, () => {
      const admission = new HandshakeAdmission({ underLoadQueueDepth: 8 });
      for (const [time, depth] of depths) admission.noteQueueDepth(depth, time);
      assert.equal(admission.isUnderLoad(at), underLoad);
    });
  }
});

void describe('HandshakeAdmission: a token bucket per source address', () => {
  const cases: {
    name: string;
    messages: [Uint8Array, number][];
    expected: Admission[];
  }[] = [
    {
      name: `a burst of ${HANDSHAKE_RATE_BURST}, then refused`,
      messages: Array.from({ length: HANDSHAKE_RATE_BURST + 2 }, () => [A, 0]),
      expected: [
        ...Array<Admission>(HANDSHAKE_RATE_BURST).fill('admit'),
        'rate-limited',
        'rate-limited',
      ],
    },
    {
      name: 'one more every 50 ms (20 per second) after the burst',
      messages: [
        ...Array.from({ length: HANDSHAKE_RATE_BURST }, (): [Uint8Array, number] => [A, 0]),
        [A, 49],
        [A, 50],
        [A, 60],
        [A, 100],
      ],
      expected: [
        ...Array<Admission>(HANDSHAKE_RATE_BURST).fill('admit'),
        'rate-limited',
        'admit',
        'rate-limited',
        'admit',
      ],
    },
    {
      name: 'sources have their own buckets',
      messages: [
        ...Array.from({ length: HANDSHAKE_RATE_BURST + 1 }, (): [Uint8Array, number] => [A, 0]),
        [B, 0],
      ],
      expected: [...Array<Admission>(HANDSHAKE_RATE_BURST).fill('admit'), 'rate-limited', 'admit'],
    },
    {
      name: 'an IPv6 /64 is one source',
      messages: [
        ...Array.from({ length: HANDSHAKE_RATE_BURST }, (): [Uint8Array, number] => [V6, 0]),
        [V6_SAME_64, 0],
        [V6_OTHER_64, 0],
      ],
      expected: [...Array<Admission>(HANDSHAKE_RATE_BURST).fill('admit'), 'rate-limited', 'admit'],
    },
    {
      name: 'a long pause refills no more than the burst',
      messages: [
        ...Array.from({ length: HANDSHAKE_RATE_BURST }, (): [Uint8Array, number] => [A, 0]),
        ...Array.from({ length: HANDSHAKE_RATE_BURST + 1 }, (): [Uint8Array, number] => [
          A,
          60_000,
        ]),
      ],
      expected: [...Array<Admission>(2 * HANDSHAKE_RATE_BURST).fill('admit'), 'rate-limited'],
    },
  ];
  for (const { name, messages, expected } of cases) {
    void it(name, () => {
      const admission = new HandshakeAdmission({ underLoadQueueDepth: 8 });
      assert.deepEqual(
        messages.map(([address, at]) => admission.admit(address, at)),
        expected,
      );
    });
  }

  void it('refuses an underLoadQueueDepth below 1', () => {
    assert.throws(() => new HandshakeAdmission({ underLoadQueueDepth: 0 }), RangeError);
  });
});

void describe('HandshakeAdmission: the bucket table is bounded', () => {
  const address = (n: number): Uint8Array =>
    Uint8Array.of(10, (n >> 16) & 255, (n >> 8) & 255, n & 255);

  void it('refuses new sources while full, and forgets idle ones', () => {
    const admission = new HandshakeAdmission({ underLoadQueueDepth: 8, maxSources: 3 });
    assert.deepEqual(
      [0, 1, 2, 3].map((n) => admission.admit(address(n), 0)),
      ['admit', 'admit', 'admit', 'table-full'],
    );
    assert.equal(admission.admit(address(0), 20), 'admit', 'a known source keeps its bucket');
    assert.equal(admission.admit(address(3), 999), 'table-full', 'nobody idle for a second yet');
    assert.equal(
      admission.admit(address(3), 1010),
      'admit',
      'sources 1 and 2 were idle for a second',
    );
    assert.equal(admission.sources, 2);
  });

  void it(`holds at most MAX_RATE_LIMITED_SOURCES (${MAX_RATE_LIMITED_SOURCES}) under a flood of new sources`, () => {
    const admission = new HandshakeAdmission({ underLoadQueueDepth: 8 });
    const results = new Map<Admission, number>();
    const flood = 3 * MAX_RATE_LIMITED_SOURCES;
    for (let n = 0; n < flood; n++) {
      const result = admission.admit(address(n), n / 100);
      results.set(result, (results.get(result) ?? 0) + 1);
      assert.ok(admission.sources <= MAX_RATE_LIMITED_SOURCES);
    }
    assert.ok((results.get('table-full') ?? 0) > 0, 'new sources were refused while full');
    assert.equal((results.get('admit') ?? 0) + (results.get('table-full') ?? 0), flood);
  });
});
