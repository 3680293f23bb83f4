import koffi from 'koffi';

/**
 * The libc calls the TUN device needs, bound once per thread. Hot-path
 * calls (read, write, poll) take memory as raw addresses passed as numbers,
 * which koffi forwards for a few nanoseconds where a Buffer argument costs
 * tens; callers keep the memory behind those addresses referenced.
 */
export interface Libc {
  open(path: string, flags: number): number;
  close(fd: number): number;
  read(fd: number, address: number, length: number): number;
  write(fd: number, address: number, length: number): number;
  poll(pollfdsAddress: number, count: number, timeoutMs: number): number;
  ioctlPointer(fd: number, request: number, argument: Uint8Array): number;
  ioctlValue(fd: number, request: number, value: number): number;
  socket(domain: number, type: number, protocol: number): number;
  mknod(path: string, mode: number, device: number): number;
  errno(): number;
  strerror(errno: number): string;
}

let bound: Libc | undefined;

export function libc(): Libc {
  bound ??= bind();
  return bound;
}

/** The address of a (Shared)ArrayBuffer's memory, which never moves while the buffer lives. */
export function addressOf(buffer: ArrayBufferLike): number {
  return Number(koffi.address(buffer));
}

function bind(): Libc {
  const lib = koffi.load('libc.so.6');
  const open = lib.func('int open(const char *path, int flags, ...)');
  const ioctl = lib.func('int ioctl(int fd, unsigned long request, ...)');
  const strerror = lib.func('const char *strerror(int errnum)');
  return {
    open: (path, flags) => open(path, flags) as number,
    close: lib.func('int close(int fd)'),
    read: lib.func('long read(int fd, uintptr_t buf, size_t count)'),
    write: lib.func('long write(int fd, uintptr_t buf, size_t count)'),
    poll: lib.func('int poll(uintptr_t fds, unsigned long nfds, int timeout)'),
    ioctlPointer: (fd, request, argument) => ioctl(fd, request, 'void *', argument) as number,
    ioctlValue: (fd, request, value) => ioctl(fd, request, 'unsigned long', value) as number,
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    mknod: lib.func('int mknod(const char *path, uint32_t mode, uint64_t dev)'),
    errno: () => koffi.errno(),
    strerror: (errno) => strerror(errno) as string,
  };
}
