/**
 * Who is on the other end of a control-socket connection, as the kernel
 * recorded it at connect time (SO_PEERCRED), and who may talk to the service.
 */

import type { Socket } from 'node:net';
import { addressOf, errno, getsockopt, SO_PEERCRED, SOL_SOCKET, UCRED_SIZE } from '@gatehouse/libc';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

export type Authorization = { allowed: true } | { allowed: false; reason: string };

export type AuthorizationPolicy = (peer: PeerCredentials) => Authorization;

/** Today's policy: only root may control the service (a gatehouse group comes later). */
export const rootOnly: AuthorizationPolicy = (peer) =>
  peer.uid === 0
    ? { allowed: true }
    : { allowed: false, reason: `uid ${peer.uid} may not control the tunnel service (root only)` };

export function readPeerCredentials(socket: Socket): PeerCredentials | { error: string } {
  // node-ipc hands over a net.Socket; its libuv handle exposes the descriptor.
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return { error: 'the connection has no file descriptor' };
  ucredLength[0] = UCRED_SIZE;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, addressOf(ucred), addressOf(ucredLength)) !== 0) {
    return { error: `SO_PEERCRED failed with errno ${errno()}` };
  }
  return { pid: ucred[0]!, uid: ucred[1]!, gid: ucred[2]! };
}

/** struct ucred { pid, uid, gid } and its length, as getsockopt fills them in. */
const ucred = new Uint32Array(UCRED_SIZE / 4);
const ucredLength = new Uint32Array(1);
