/**
 * A counter in shared memory that one thread sleeps on and any thread rings:
 * the in-memory stand-in for poll() on an fd plus an eventfd.
 */
export class Doorbell {
  readonly words: Int32Array;
  readonly index: number;

  constructor(words: Int32Array, index: number) {
    this.words = words;
    this.index = index;
  }

  /** The current ring count; pass it to `wait` to sleep only if nothing rang since. */
  current(): number {
    return Atomics.load(this.words, this.index);
  }

  ring(): void {
    Atomics.add(this.words, this.index, 1);
    Atomics.notify(this.words, this.index);
  }

  /** Sleeps until the count differs from `seen` or `timeoutMs` passes (-1: no limit). */
  wait(seen: number, timeoutMs: number): void {
    Atomics.wait(this.words, this.index, seen, timeoutMs < 0 ? Infinity : timeoutMs);
  }
}
