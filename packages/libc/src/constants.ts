/**
 * Linux ABI numbers under their libc names, checked against glibc's and the
 * kernel's headers (x86-64 and arm64 share them).
 */

// <bits/socket.h>, <bits/socket_type.h>
export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const MSG_DONTWAIT = 0x40;

// <asm-generic/socket.h>
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_REUSEPORT = 15;
export const SO_PEERCRED = 17;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const SO_MARK = 36;
/** sizeof(struct ucred): pid, uid, gid. */
export const UCRED_SIZE = 12;

// <netinet/in.h>, <linux/udp.h>
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

// <sys/eventfd.h>, <asm-generic/fcntl.h>, <sys/file.h>, <sys/stat.h>
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;
export const O_RDWR = 0o2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const S_IFCHR = 0o20000;

// <asm-generic/poll.h>
export const POLLIN = 0x1;
export const POLLOUT = 0x4;
/** sizeof(struct pollfd): fd, events, revents. */
export const POLLFD_SIZE = 8;

// <asm-generic/errno-base.h>, <asm-generic/errno.h>
export const EPERM = 1;
export const EINTR = 4;
export const EIO = 5;
export const EAGAIN = 11;
export const EWOULDBLOCK = EAGAIN;
export const EBUSY = 16;
export const EINVAL = 22;
export const EMSGSIZE = 90;
