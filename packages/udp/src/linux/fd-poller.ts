import * as libc from '@gatehouse/libc';
import { addressOf } from '@gatehouse/libc';

/**
 * An eventfd that makes a blocked `FdPoller.wait` return. The fd number may
 * be passed to another thread (`Waker.fromFd`) so a controller can always
 * end a worker that sleeps in poll().
 */
export class Waker {
  readonly fd: number;
  readonly #word = new BigUint64Array(1);
  readonly #owned: boolean;

  private constructor(fd: number, owned: boolean) {
    this.fd = fd;
    this.#owned = owned;
  }

  static create(): Waker {
    const fd = libc.eventfd(0, libc.EFD_NONBLOCK | libc.EFD_CLOEXEC);
    if (fd < 0) throw new libc.SystemCallError('eventfd', libc.errno());
    return new Waker(fd, true);
  }

  /** A handle on an eventfd created elsewhere in this process; closing it is the creator's job. */
  static fromFd(fd: number): Waker {
    return new Waker(fd, false);
  }

  wake(): void {
    this.#word[0] = 1n;
    libc.write(this.fd, addressOf(this.#word), 8);
  }

  /** Clears pending wake-ups. */
  drain(): void {
    libc.read(this.fd, addressOf(this.#word), 8);
  }

  close(): void {
    if (this.#owned) libc.close(this.fd);
  }
}

/**
 * Blocks in poll() until one of `fds` is readable or the waker fires.
 * Meant for worker threads; on the main thread only with timeout 0.
 */
export class FdPoller {
  readonly waker: Waker;
  readonly #pollfds: Int32Array;
  readonly #revents: Uint16Array;
  readonly #count: number;

  constructor(fds: readonly number[], waker: Waker) {
    this.waker = waker;
    this.#count = fds.length + 1;
    this.#pollfds = new Int32Array(this.#count * 2);
    this.#revents = new Uint16Array(this.#pollfds.buffer);
    [...fds, waker.fd].forEach((fd, index) => {
      this.#pollfds[index * 2] = fd;
      this.#pollfds[index * 2 + 1] = libc.POLLIN;
    });
  }

  /**
   * Returns a bit mask: bit i set when `fds[i]` is readable (or in error),
   * bit `fds.length` set when woken. 0 on timeout. `timeoutMs` -1 waits forever.
   */
  wait(timeoutMs: number): number {
    const ready = libc.poll(addressOf(this.#pollfds), this.#count, timeoutMs);
    if (ready <= 0) return 0;
    let mask = 0;
    for (let index = 0; index < this.#count; index++) {
      if (this.#revents[index * 4 + 3] !== 0) mask |= 1 << index;
    }
    if ((mask & (1 << (this.#count - 1))) !== 0) this.waker.drain();
    return mask;
  }
}
