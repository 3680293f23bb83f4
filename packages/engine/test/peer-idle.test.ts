import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { PEER_IDLE_AFTER_MS, PeerIdleWatch } from '../src/peer-idle.ts';

void describe('PeerIdleWatch', () => {
  void it('reports a peer once per idle spell, again after it was active', () => {
    const watch = new PeerIdleWatch();
    const at = (lastActivityMs: number) => [{ peer: 'a', lastActivityMs }];
    assert.deepEqual(watch.check(at(0), PEER_IDLE_AFTER_MS - 1), []);
    assert.deepEqual(watch.check(at(0), PEER_IDLE_AFTER_MS), [
      { peer: 'a', idleMs: PEER_IDLE_AFTER_MS },
    ]);
    assert.deepEqual(watch.check(at(0), PEER_IDLE_AFTER_MS + 5000), [], 'still the same spell');
    assert.deepEqual(watch.check(at(PEER_IDLE_AFTER_MS + 6000), PEER_IDLE_AFTER_MS + 6000), []);
    const later = 2 * PEER_IDLE_AFTER_MS + 6000;
    assert.deepEqual(watch.check(at(PEER_IDLE_AFTER_MS + 6000), later), [
      { peer: 'a', idleMs: PEER_IDLE_AFTER_MS },
    ]);
  });

  void it('judges each peer by its own stamp and forgets removed peers', () => {
    const watch = new PeerIdleWatch();
    const now = PEER_IDLE_AFTER_MS + 100;
    assert.deepEqual(
      watch.check(
        [
          { peer: 'quiet', lastActivityMs: 0 },
          { peer: 'busy', lastActivityMs: now - 10 },
        ],
        now,
      ),
      [{ peer: 'quiet', idleMs: now }],
    );
    assert.deepEqual(watch.check([], now), []);
    assert.deepEqual(watch.check([{ peer: 'quiet', lastActivityMs: 0 }], now), [
      { peer: 'quiet', idleMs: now },
    ]);
  });
});
