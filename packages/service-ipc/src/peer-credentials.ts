/**
 * Who is on the other end of a control-socket connection, as the kernel
 * recorded it at connect time (SO_PEERCRED), and who may talk to the service.
 */

import type { Socket } from 'node:net';
import { socketLibc } from './socket-libc.ts';

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
  const result = socketLibc().peerCredentials(fd);
  if ('errno' in result) return { error: `SO_PEERCRED failed with errno ${result.errno}` };
  return result;
}
