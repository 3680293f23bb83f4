import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  addressInView,
  addressOf,
  close,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EAGAIN,
  errno,
  eventfd,
  keepingReachable,
  read,
  SystemCallError,
  write,
} from '@gatehouse/libc';

const EBADF = 9;

void test('a failed call leaves its errno, and SystemCallError names the call with libc’s text', () => {
  assert.equal(close(-1), -1);
  const code = errno();
  assert.equal(code, EBADF);
  const error = new SystemCallError('close', code, ' (a hint)');
  assert.equal(error.message, 'close: Bad file descriptor (errno 9) (a hint)');
  assert.equal(error.code, EBADF);
});

void test('addresses reach the kernel: an eventfd counter written from one view is read into another', () => {
  const fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  assert.ok(fd >= 0, `eventfd failed with errno ${errno()}`);
  try {
    const shared = new BigUint64Array(new SharedArrayBuffer(32));
    const word = shared.subarray(1, 2);
    word[0] = 41n;
    assert.equal(write(fd, addressOf(word), 8), 8);
    assert.equal(write(fd, addressOf(word), 8), 8);
    const into = new BigUint64Array(3).subarray(2);
    assert.equal(read(fd, addressOf(into), 8), 8);
    assert.equal(into[0], 82n);
    assert.equal(read(fd, addressOf(into), 8), -1, 'the counter was reset by the read');
    assert.equal(errno(), EAGAIN);
  } finally {
    close(fd);
  }
});

void test('addressOf adds the view’s offset to its buffer’s address; addressInView checks the range', () => {
  const buffer = new ArrayBuffer(64);
  const whole = new Uint8Array(buffer);
  const part = new Uint8Array(buffer, 16, 32);
  assert.equal(addressOf(part), addressOf(whole) + 16);
  assert.equal(addressInView(part, 4, 28), addressOf(whole) + 20);
  assert.equal(addressOf(new Uint8Array(0)), 0, 'an empty buffer has no memory to point at');
  for (const [offset, length] of [
    [0, 33],
    [32, 1],
    [-1, 1],
    [1.5, 1],
  ] as const) {
    assert.throws(() => addressInView(part, offset, length), RangeError, `${offset}+${length}`);
  }
});

void test('keepingReachable returns what the call returns and passes on what it throws', () => {
  const view = new Uint8Array(8);
  assert.equal(
    keepingReachable([view], () => addressInView(view, 0, 8)),
    addressOf(view),
  );
  assert.throws(
    () =>
      keepingReachable([view], () => {
        throw new Error('native call failed');
      }),
    /native call failed/,
  );
});
