/**
 * One service per socket path. A path is claimed by an advisory lock next to
 * it (so two services starting at once cannot both win), and a socket file
 * already there is replaced only when nothing answers on it.
 */

import { closeSync, lstatSync, mkdirSync, openSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { socketLibc } from './socket-libc.ts';

export class SocketInUseError extends Error {
  override readonly name = 'SocketInUseError';
}

export interface SocketClaim {
  /** Whether a stale socket file (nothing answering) was removed. */
  readonly replacedStaleSocket: boolean;
  release(): void;
}

export async function claimSocketPath(
  socketPath: string,
  probeTimeoutMs = 1000,
): Promise<SocketClaim> {
  mkdirSync(dirname(socketPath), { recursive: true, mode: 0o755 });
  const lockFd = openSync(`${socketPath}.lock`, 'a', 0o600);
  const release = () => closeSync(lockFd);
  try {
    if (!socketLibc().tryLockExclusive(lockFd)) throw inUse(socketPath);
    const replacedStaleSocket = await removeStaleSocket(socketPath, probeTimeoutMs);
    return { replacedStaleSocket, release };
  } catch (error) {
    release();
    throw error;
  }
}

async function removeStaleSocket(socketPath: string, probeTimeoutMs: number): Promise<boolean> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(socketPath).isSocket();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
  if (!isSocket)
    throw new Error(`${socketPath} exists and is not a socket; refusing to replace it`);
  const answer = await probe(socketPath, probeTimeoutMs);
  if (answer === 'answers') throw inUse(socketPath);
  if (answer === 'gone') return false;
  unlinkSync(socketPath);
  return true;
}

function probe(socketPath: string, timeoutMs: number): Promise<'answers' | 'refused' | 'gone'> {
  return new Promise((resolve, reject) => {
    const socket = connect({ path: socketPath });
    const finish = (outcome: 'answers' | 'refused' | 'gone' | Error) => {
      clearTimeout(timer);
      socket.destroy();
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    };
    // A listener too busy to accept within the timeout is still alive.
    const timer = setTimeout(() => finish('answers'), timeoutMs);
    socket.once('connect', () => finish('answers'));
    socket.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ECONNREFUSED') finish('refused');
      else if (error.code === 'ENOENT') finish('gone');
      else finish(new Error(`cannot check whether ${socketPath} is in use: ${error.message}`));
    });
  });
}

function inUse(socketPath: string): SocketInUseError {
  return new SocketInUseError(`another gatehouse-tunnel is running on ${socketPath}`);
}
