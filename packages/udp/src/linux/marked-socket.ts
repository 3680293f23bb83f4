/**
 * A kernel socket that carries Gatehouse's fwmark from its first packet, for
 * sockets Node creates around a file descriptor (`dgram` `bind({ fd })`,
 * `new net.Socket({ fd })`): marked packets skip Gatehouse's routing table
 * and so never loop into the tunnel. Needs CAP_NET_ADMIN.
 */
import * as libc from '@gatehouse/libc';
import { addressOf } from '@gatehouse/libc';

/** A non-blocking, close-on-exec, unbound socket with SO_MARK set; the caller owns the descriptor. */
export function openMarkedSocket(family: 4 | 6, type: 'udp' | 'tcp', mark: number): number {
  const fd = libc.socket(
    family === 4 ? libc.AF_INET : libc.AF_INET6,
    (type === 'udp' ? libc.SOCK_DGRAM : libc.SOCK_STREAM) | libc.SOCK_NONBLOCK | libc.SOCK_CLOEXEC,
    0,
  );
  if (fd < 0) throw new libc.SystemCallError('socket', libc.errno());
  const value = new Int32Array([mark]);
  if (libc.setsockopt(fd, libc.SOL_SOCKET, libc.SO_MARK, addressOf(value), 4) !== 0) {
    const code = libc.errno();
    libc.close(fd);
    throw new libc.SystemCallError('setsockopt SO_MARK', code);
  }
  return fd;
}
