/**
 * The two libc calls Node does not offer for the control socket: reading a
 * Unix-socket peer's credentials and taking an advisory file lock.
 */

import koffi from 'koffi';

export interface SocketLibc {
  /** `getsockopt(fd, SOL_SOCKET, SO_PEERCRED)`, or the errno it failed with. */
  peerCredentials(fd: number): { pid: number; uid: number; gid: number } | { errno: number };
  /** `flock(fd, LOCK_EX | LOCK_NB)`: true when taken, false when another process holds it. */
  tryLockExclusive(fd: number): boolean;
}

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

let bound: SocketLibc | undefined;

export function socketLibc(): SocketLibc {
  bound ??= bind();
  return bound;
}

function bind(): SocketLibc {
  const lib = koffi.load('libc.so.6');
  const ucred = koffi.struct('gatehouse_ucred', {
    pid: 'int32_t',
    uid: 'uint32_t',
    gid: 'uint32_t',
  });
  const ucredSize = koffi.sizeof(ucred);
  const getsockopt = lib.func(
    'int getsockopt(int fd, int level, int name, _Out_ gatehouse_ucred *value, _Inout_ uint32_t *length)',
  );
  const flock = lib.func('int flock(int fd, int operation)');
  return {
    peerCredentials(fd) {
      const value = { pid: 0, uid: 0, gid: 0 };
      const length = [ucredSize];
      if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, value, length) !== 0)
        return { errno: koffi.errno() };
      return value;
    },
    tryLockExclusive(fd) {
      if (flock(fd, LOCK_EX | LOCK_NB) === 0) return true;
      const errno = koffi.errno();
      if (errno === EWOULDBLOCK) return false;
      throw new Error(`flock failed with errno ${errno}`);
    },
  };
}
