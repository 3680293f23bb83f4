/**
 * The libc calls and constants the Linux UDP socket needs (x86-64 and arm64
 * share these numbers). Pointer parameters are `uintptr_t` so hot-path calls
 * pass plain numbers (see native-memory.ts).
 */
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

export const socket = libc.func('int socket(int domain, int type, int protocol)');
export const bind = libc.func('int bind(int fd, uintptr_t addr, uint32_t addrlen)');
export const getsockname = libc.func('int getsockname(int fd, uintptr_t addr, uintptr_t addrlen)');
export const setsockopt = libc.func(
  'int setsockopt(int fd, int level, int name, uintptr_t value, uint32_t length)',
);
export const getsockopt = libc.func(
  'int getsockopt(int fd, int level, int name, uintptr_t value, uintptr_t length)',
);
export const recvmmsg = libc.func(
  'int recvmmsg(int fd, uintptr_t msgvec, uint32_t vlen, int flags, uintptr_t timeout)',
);
export const sendmmsg = libc.func(
  'int sendmmsg(int fd, uintptr_t msgvec, uint32_t vlen, int flags)',
);
export const poll = libc.func('int poll(uintptr_t fds, uint64_t nfds, int timeout)');
export const eventfd = libc.func('int eventfd(uint32_t initval, int flags)');
export const read = libc.func('intptr_t read(int fd, uintptr_t buffer, uintptr_t count)');
export const write = libc.func('intptr_t write(int fd, uintptr_t buffer, uintptr_t count)');
export const close = libc.func('int close(int fd)');
export const strerror = libc.func('const char *strerror(int errnum)');

export function errno(): number {
  return koffi.errno();
}

export class SystemCallError extends Error {
  readonly code: number;
  constructor(call: string, code: number) {
    super(`${call}: ${strerror(code) as string} (errno ${code})`);
    this.code = code;
  }
}

export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;

export const SOL_SOCKET = 1;
export const SO_REUSEPORT = 15;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const SO_MARK = 36;

export const IPPROTO_IP = 0;
export const IP_TOS = 1;
export const IP_RECVTOS = 13;
export const IPPROTO_IPV6 = 41;
export const IPV6_V6ONLY = 26;
export const IPV6_RECVTCLASS = 66;
export const IPV6_TCLASS = 67;
export const SOL_UDP = 17;
export const UDP_SEGMENT = 103;
export const UDP_GRO = 104;

export const MSG_DONTWAIT = 0x40;
export const POLLIN = 0x1;
export const POLLOUT = 0x4;

export const EINTR = 4;
export const EIO = 5;
export const EAGAIN = 11;
export const EINVAL = 22;
