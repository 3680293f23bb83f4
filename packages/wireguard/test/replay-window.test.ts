import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { REPLAY_WINDOW_SIZE, REPLAY_WINDOW_WORDS, ReplayWindow } from '../src/replay-window.ts';

/** Counters are 64-bit unsigned on the wire: a test feeding anything else tests nothing real. */
function acceptAll(window: ReplayWindow, counters: number[]): boolean[] {
  return counters.map((counter) => {
    assert.ok(Number.isSafeInteger(counter) && counter >= 0, `not a wire counter: ${counter}`);
    return window.accept(counter >>> 0, Math.floor(counter / 2 ** 32));
  });
}

void describe('ReplayWindow', () => {
  void it('covers at least 2048 packets', () => {
    assert.ok(REPLAY_WINDOW_SIZE >= 2048);
  });

  void it('accepts counters in order, starting at zero', () => {
    const window = new ReplayWindow();

    const accepted = acceptAll(window, [0, 1, 2, 3, 100, 101]);

    assert.deepEqual(accepted, [true, true, true, true, true, true]);
  });

  void it('rejects a duplicate, whether newest or older', () => {
    const window = new ReplayWindow();
    acceptAll(window, [0, 1, 2, 5]);

    const accepted = acceptAll(window, [5, 2, 0]);

    assert.deepEqual(accepted, [false, false, false]);
  });

  void it('accepts reordering inside the window, once each, up to its oldest edge', () => {
    const window = new ReplayWindow();
    const newest = REPLAY_WINDOW_SIZE + 3000;
    acceptAll(window, [newest]);

    const accepted = acceptAll(window, [
      newest - 1,
      newest - 1000,
      newest - 2000,
      newest - 1000,
      newest - REPLAY_WINDOW_SIZE,
      newest - REPLAY_WINDOW_SIZE - 1,
    ]);

    assert.deepEqual(accepted, [true, true, true, false, true, false]);
  });

  void it('rejects counters older than the window', () => {
    const window = new ReplayWindow();
    acceptAll(window, [10_000]);

    const accepted = acceptAll(window, [10_000 - REPLAY_WINDOW_SIZE - 1, 0]);

    assert.deepEqual(accepted, [false, false]);
  });

  void it('slides across jumps larger than the window, forgetting stale bits', () => {
    const window = new ReplayWindow();
    acceptAll(window, [0, 1, 2]);
    const far = 2 + 3 * REPLAY_WINDOW_SIZE + 17;

    const accepted = acceptAll(window, [far, far - 1, far - REPLAY_WINDOW_SIZE, far]);

    assert.deepEqual(accepted, [true, true, true, false]);
  });

  void it('keeps every bit through a long run of single steps across many ring turns', () => {
    const window = new ReplayWindow();
    const counters = Array.from({ length: 20_000 }, (_, i) => i);

    const firstPass = acceptAll(window, counters);
    const replays = acceptAll(window, counters.slice(-REPLAY_WINDOW_SIZE));

    assert.ok(firstPass.every(Boolean));
    assert.ok(replays.every((accepted) => !accepted));
  });

  void it('handles counters above 2^32 across the word boundary', () => {
    const window = new ReplayWindow();

    const accepted = acceptAll(window, [
      2 ** 32 - 2,
      2 ** 32 - 1,
      2 ** 32,
      2 ** 32 + 1,
      2 ** 32 - 1,
    ]);

    assert.deepEqual(accepted, [true, true, true, true, false]);
  });

  void it('forgets everything on reset', () => {
    const window = new ReplayWindow();
    acceptAll(window, [0, 1, 2]);

    window.reset();

    assert.deepEqual(acceptAll(window, [0, 1, 2]), [true, true, true]);
  });

  void it('lives in a slice of a larger shared buffer without touching its neighbours', () => {
    const offset = 10;
    const margin = 10;
    const words = new Uint32Array(
      new SharedArrayBuffer(4 * (offset + REPLAY_WINDOW_WORDS + margin)),
    ).fill(0xdeadbeef);
    const window = new ReplayWindow(words, offset);
    window.reset();
    // The last counter of every 32-counter block, twice round the ring, then a jump
    // that clears every ring word: each word of the window is written.
    const blocks = (2 * REPLAY_WINDOW_SIZE) / 32;
    const counters = Array.from({ length: blocks }, (_, block) => block * 32 + 31);

    const accepted = acceptAll(window, [...counters, 10 * REPLAY_WINDOW_SIZE]);

    assert.ok(accepted.every(Boolean));
    assert.deepEqual([...words.subarray(0, offset)], new Array(offset).fill(0xdeadbeef));
    assert.deepEqual(
      [...words.subarray(offset + REPLAY_WINDOW_WORDS)],
      new Array(margin).fill(0xdeadbeef),
    );
  });
});
