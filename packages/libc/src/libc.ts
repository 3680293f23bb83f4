/**
 * libc, loaded once per thread (a worker evaluates this module anew), each
 * call declared once. Pointer parameters are `uintptr_t`: hot-path calls
 * pass plain numbers from native-address.ts, which koffi forwards in a few
 * nanoseconds where a Buffer argument costs tens.
 */
import koffi from 'koffi';

const lib = koffi.load('libc.so.6');

type Call<Parameters extends unknown[]> = (...parameters: Parameters) => number;

function declare<Parameters extends unknown[]>(signature: string): Call<Parameters> {
  return lib.func(signature) as unknown as Call<Parameters>;
}

export const socket = declare<[domain: number, type: number, protocol: number]>(
  'int socket(int domain, int type, int protocol)',
);
export const bind = declare<[fd: number, address: number, addressLength: number]>(
  'int bind(int fd, uintptr_t addr, uint32_t addrlen)',
);
export const getsockname = declare<[fd: number, address: number, lengthAddress: number]>(
  'int getsockname(int fd, uintptr_t addr, uintptr_t addrlen)',
);
export const setsockopt = declare<
  [fd: number, level: number, name: number, value: number, length: number]
>('int setsockopt(int fd, int level, int name, uintptr_t value, uint32_t length)');
export const getsockopt = declare<
  [fd: number, level: number, name: number, value: number, lengthAddress: number]
>('int getsockopt(int fd, int level, int name, uintptr_t value, uintptr_t length)');
export const recvmmsg = declare<
  [fd: number, messages: number, count: number, flags: number, timeout: number]
>('int recvmmsg(int fd, uintptr_t msgvec, uint32_t vlen, int flags, uintptr_t timeout)');
export const sendmmsg = declare<[fd: number, messages: number, count: number, flags: number]>(
  'int sendmmsg(int fd, uintptr_t msgvec, uint32_t vlen, int flags)',
);
export const poll = declare<[pollfds: number, count: number, timeoutMs: number]>(
  'int poll(uintptr_t fds, uint64_t nfds, int timeout)',
);
export const eventfd = declare<[initialValue: number, flags: number]>(
  'int eventfd(uint32_t initval, int flags)',
);
export const read = declare<[fd: number, address: number, length: number]>(
  'intptr_t read(int fd, uintptr_t buffer, uintptr_t count)',
);
export const write = declare<[fd: number, address: number, length: number]>(
  'intptr_t write(int fd, uintptr_t buffer, uintptr_t count)',
);
export const close = declare<[fd: number]>('int close(int fd)');
export const flock = declare<[fd: number, operation: number]>('int flock(int fd, int operation)');
export const mknod = declare<[path: string, mode: number, device: number]>(
  'int mknod(const char *path, uint32_t mode, uint64_t dev)',
);

const variadicOpen = lib.func('int open(const char *path, int flags, ...)');
const variadicIoctl = lib.func('int ioctl(int fd, unsigned long request, ...)');

/** `open` without a mode: it never creates a file. */
export function open(path: string, flags: number): number {
  return variadicOpen(path, flags) as number;
}

/** `ioctl` whose argument is a pointer to `argument`. */
export function ioctlPointer(fd: number, request: number, argument: Uint8Array): number {
  return variadicIoctl(fd, request, 'void *', argument) as number;
}

/** `ioctl` whose argument is an integer. */
export function ioctlValue(fd: number, request: number, value: number): number {
  return variadicIoctl(fd, request, 'unsigned long', value) as number;
}

const strerror = lib.func('const char *strerror(int errnum)');

/** The calling thread's errno, as the last call through koffi left it. */
export function errno(): number {
  return koffi.errno();
}

/** A failed call and its errno, with libc's description: "socket: Permission denied (errno 1)". */
export class SystemCallError extends Error {
  readonly code: number;
  constructor(call: string, code: number, hint = '') {
    super(`${call}: ${strerror(code) as string} (errno ${code})${hint}`);
    this.code = code;
  }
}
