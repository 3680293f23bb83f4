import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { judgeWorkerDeath } from '../src/worker-restarts.ts';

void describe('judgeWorkerDeath', () => {
  void it('restarts at most 3 times within a minute, then fails', () => {
    const table: [earlier: number[], now: number, restart: boolean, recent: number[]][] = [
      [[], 0, true, [0]],
      [[0], 1_000, true, [0, 1_000]],
      [[0, 1_000], 2_000, true, [0, 1_000, 2_000]],
      [[0, 1_000, 2_000], 3_000, false, [0, 1_000, 2_000, 3_000]],
      [[0, 1_000, 2_000], 59_999, false, [0, 1_000, 2_000, 59_999]],
      [[0, 1_000, 2_000], 60_000, true, [1_000, 2_000, 60_000]],
      [[0, 1_000, 2_000], 200_000, true, [200_000]],
      [[10_000, 50_000, 69_000], 69_999, false, [10_000, 50_000, 69_000, 69_999]],
      [[10_000, 50_000, 69_000], 70_000, true, [50_000, 69_000, 70_000]],
    ];
    for (const [earlier, now, restart, recent] of table) {
      const verdict = judgeWorkerDeath(earlier, now);
      assert.equal(verdict.restart, restart, `deaths ${earlier.join(',')} then ${now}`);
      assert.deepEqual(verdict.recentDeathsMs, recent);
    }
  });
});
