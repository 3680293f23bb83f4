/**
 * The sliding window of received transport counters (RFC 6479 style): a
 * ring of 32-bit bitmap words, so the window slides by clearing whole words
 * instead of shifting bits.
 *
 * The state is a run of `REPLAY_WINDOW_WORDS` 32-bit words inside any
 * (Shared)ArrayBuffer, so it can live in a keypair slot that worker threads
 * share. It has a single writer at a time; see worker-contract.ts.
 *
 * Counters are 64-bit, passed as unsigned 32-bit halves.
 */

const RING_WORDS = 128;

/** Packets this far behind the newest accepted counter are still accepted once. */
export const REPLAY_WINDOW_SIZE = (RING_WORDS - 1) * 32;
/** 32-bit words of state: the newest counter (two words) then the ring. */
export const REPLAY_WINDOW_WORDS = 2 + RING_WORDS;

export class ReplayWindow {
  readonly #words: Uint32Array;
  readonly #base: number;

  /** A window over `words[offset .. offset + REPLAY_WINDOW_WORDS)`. */
  constructor(words: Uint32Array = new Uint32Array(REPLAY_WINDOW_WORDS), offset = 0) {
    if (offset < 0 || offset + REPLAY_WINDOW_WORDS > words.length) {
      throw new RangeError('replay window does not fit in the given words');
    }
    this.#words = words;
    this.#base = offset;
  }

  /** Forgets every counter: the state of a fresh keypair. */
  reset(): void {
    this.#words.fill(0, this.#base, this.#base + REPLAY_WINDOW_WORDS);
  }

  /**
   * Records the counter and returns true if it was not seen before and is
   * not older than the window; returns false (recording nothing) otherwise.
   * Call only for authenticated packets, or an attacker could slide the window.
   */
  accept(counterLow: number, counterHigh: number): boolean {
    const words = this.#words;
    const newestLow = words[this.#base + NEWEST_LOW]!;
    const newestHigh = words[this.#base + NEWEST_HIGH]!;
    if (counterHigh > newestHigh || (counterHigh === newestHigh && counterLow > newestLow)) {
      const blocksAhead =
        (counterHigh - newestHigh) * 2 ** 27 + ((counterLow >>> 5) - (newestLow >>> 5));
      const clear = Math.min(blocksAhead, RING_WORDS);
      const newestBlock = newestLow >>> 5;
      for (let i = 1; i <= clear; i++) {
        words[this.#base + RING + ((newestBlock + i) & RING_MASK)] = 0;
      }
      words[this.#base + NEWEST_LOW] = counterLow;
      words[this.#base + NEWEST_HIGH] = counterHigh;
    } else {
      const behind = (newestHigh - counterHigh) * 2 ** 32 + (newestLow - counterLow);
      if (behind > REPLAY_WINDOW_SIZE) return false;
    }
    const word = this.#base + RING + ((counterLow >>> 5) & RING_MASK);
    const bit = 1 << (counterLow & 31);
    const before = words[word]!;
    if ((before & bit) !== 0) return false;
    words[word] = before | bit;
    return true;
  }
}

const RING_MASK = RING_WORDS - 1;
const NEWEST_LOW = 0;
const NEWEST_HIGH = 1;
const RING = 2;
