import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import * as libc from '@gatehouse/libc';
import {
  AF_INET,
  EBUSY,
  EINVAL,
  EPERM,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  S_IFCHR,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
} from '@gatehouse/libc';
import {
  IFF_MULTI_QUEUE,
  IFF_NO_PI,
  IFF_TUN,
  IFF_TUN_EXCL,
  IFF_VNET_HDR,
  IFNAMSIZ,
  IFREQ_SIZE,
  IFREQ_UNION_OFFSET,
  SIOCSIFMTU,
  SIOCSIFTXQLEN,
  TUN_DEVICE_MAJOR,
  TUN_DEVICE_MINOR,
  TUN_DEVICE_PATH,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO6,
  TUN_F_USO4,
  TUN_F_USO6,
  TUN_MAX_QUEUES,
  TUNSETIFF,
  TUNSETOFFLOAD,
  TUNSETVNETHDRSZ,
} from './linux-constants.ts';
import { VIRTIO_NET_HDR_LEN } from './packet/virtio-net-header.ts';

export interface TunOffloads {
  /** Every read and write carries a virtio-net header. */
  readonly virtioHeader: boolean;
  /** The kernel may hand us packets with a partial checksum (we complete it). */
  readonly checksum: boolean;
  readonly tso4: boolean;
  readonly tso6: boolean;
  readonly uso4: boolean;
  readonly uso6: boolean;
}

export const NO_OFFLOADS: TunOffloads = {
  virtioHeader: false,
  checksum: false,
  tso4: false,
  tso6: false,
  uso4: false,
  uso6: false,
};

export interface OpenTunOptions {
  readonly name: string;
  /** Queues (file descriptors) to open; 1 opens a plain single-queue device. */
  readonly queues: number;
  readonly mtu: number;
  readonly txQueueLength: number;
  /** Ask for the virtio-net header and as many of checksum, TSO and USO as the kernel accepts. */
  readonly offload: boolean;
}

export interface OpenedTun {
  readonly name: string;
  /** Non-blocking file descriptors, one per queue. */
  readonly fds: readonly number[];
  readonly offloads: TunOffloads;
}

// Tried in order; the first set the kernel accepts wins (USO needs Linux 6.2).
const OFFLOAD_CANDIDATES = [
  TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
  TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
  TUN_F_CSUM,
];

/**
 * Creates the TUN device and opens its queues. The first queue is opened
 * with IFF_TUN_EXCL: the kernel would otherwise silently attach our queues
 * to an existing device of the same name, mixing our traffic with another
 * process's. Everything opened is closed again when a step fails.
 */
export function openTunDevice(options: OpenTunOptions): OpenedTun {
  const { name, queues, mtu, txQueueLength, offload } = options;
  if (Buffer.byteLength(name) >= IFNAMSIZ || name.length === 0 || name.includes('/')) {
    throw new RangeError(`invalid interface name ${JSON.stringify(name)}`);
  }
  if (!Number.isInteger(queues) || queues < 1 || queues > TUN_MAX_QUEUES) {
    throw new RangeError(`queues must be 1..${TUN_MAX_QUEUES}, got ${queues}`);
  }
  ensureDeviceNode();
  const fds: number[] = [];
  try {
    let flags = IFF_TUN | IFF_NO_PI;
    if (queues > 1) flags |= IFF_MULTI_QUEUE;
    if (offload) flags |= IFF_VNET_HDR;
    for (let queue = 0; queue < queues; queue++) {
      const fd = libc.open(TUN_DEVICE_PATH, O_RDWR | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0) throw systemError(`open ${TUN_DEVICE_PATH}`, libc.errno());
      fds.push(fd);
      const request = ifreq(name);
      request.writeUInt16LE(queue === 0 ? flags | IFF_TUN_EXCL : flags, IFREQ_UNION_OFFSET);
      if (libc.ioctlPointer(fd, TUNSETIFF, request) < 0) {
        const errno = libc.errno();
        if (queue === 0 && errno === EBUSY) {
          throw new Error(
            `TUN: an interface named ${name} already exists; refusing to attach to it (another process may own it). Remove it or pick another name.`,
          );
        }
        throw systemError(`TUNSETIFF ${name} (queue ${queue})`, errno);
      }
    }
    const offloads = offload ? enableOffloads(fds[0]!) : NO_OFFLOADS;
    setInterfaceNumber(name, SIOCSIFMTU, mtu, 'MTU');
    setInterfaceNumber(name, SIOCSIFTXQLEN, txQueueLength, 'txqueuelen');
    return { name, fds, offloads };
  } catch (error) {
    for (const fd of fds) libc.close(fd);
    throw error;
  }
}

export function closeFds(fds: readonly number[]): void {
  for (const fd of fds) libc.close(fd);
}

function ensureDeviceNode(): void {
  if (existsSync(TUN_DEVICE_PATH)) return;
  mkdirSync(dirname(TUN_DEVICE_PATH), { recursive: true });
  const device = (TUN_DEVICE_MAJOR << 8) | TUN_DEVICE_MINOR;
  if (libc.mknod(TUN_DEVICE_PATH, S_IFCHR | 0o666, device) < 0) {
    throw systemError(`mknod ${TUN_DEVICE_PATH}`, libc.errno());
  }
}

function enableOffloads(fd: number): TunOffloads {
  const size = Buffer.alloc(4);
  size.writeInt32LE(VIRTIO_NET_HDR_LEN);
  if (libc.ioctlPointer(fd, TUNSETVNETHDRSZ, size) < 0) {
    throw systemError('TUNSETVNETHDRSZ', libc.errno());
  }
  for (const features of OFFLOAD_CANDIDATES) {
    if (libc.ioctlValue(fd, TUNSETOFFLOAD, features) === 0) {
      return {
        virtioHeader: true,
        checksum: (features & TUN_F_CSUM) !== 0,
        tso4: (features & TUN_F_TSO4) !== 0,
        tso6: (features & TUN_F_TSO6) !== 0,
        uso4: (features & TUN_F_USO4) !== 0,
        uso6: (features & TUN_F_USO6) !== 0,
      };
    }
    const errno = libc.errno();
    if (errno !== EINVAL) throw systemError('TUNSETOFFLOAD', errno);
  }
  // The header stays on (IFF_VNET_HDR is fixed at creation) but carries nothing.
  return { ...NO_OFFLOADS, virtioHeader: true };
}

/**
 * MTU and txqueuelen through ioctl on an AF_INET socket rather than `ip
 * link`: no child process, no dependency on iproute2, errno comes back
 * synchronously, and the socket lives in the same network namespace as the
 * device we just created.
 */
function setInterfaceNumber(name: string, request: number, value: number, what: string): void {
  const socket = libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (socket < 0) throw systemError('socket(AF_INET)', libc.errno());
  try {
    const argument = ifreq(name);
    argument.writeInt32LE(value, IFREQ_UNION_OFFSET);
    if (libc.ioctlPointer(socket, request, argument) < 0) {
      throw systemError(`set ${what} ${value} on ${name}`, libc.errno());
    }
  } finally {
    libc.close(socket);
  }
}

function ifreq(name: string): Buffer {
  const request = Buffer.alloc(IFREQ_SIZE);
  request.write(name, 0, IFNAMSIZ - 1, 'utf8');
  return request;
}

function systemError(what: string, errno: number): Error {
  const hint = errno === EPERM ? ' (needs root or CAP_NET_ADMIN)' : '';
  return new libc.SystemCallError(`TUN: ${what} failed`, errno, hint);
}
