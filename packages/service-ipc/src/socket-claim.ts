/**
 * One service per socket path, in a directory only the service can change.
 *
 * The directory is opened once (never through a symbolic link) and checked
 * on that descriptor: owned by the service's user, writable by nobody else,
 * so nobody else can replace the socket or the lock in it. Everything after
 * that — the lock, the stale-socket check, the bind, the removal — goes
 * through `/proc/self/fd/N/`, the directory that was checked, whatever
 * happens to the path meanwhile. A path is claimed by an advisory lock next
 * to the socket (so two services starting at once cannot both win), and a
 * socket file already there is replaced only when nothing answers on it.
 */

import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  unlinkSync,
} from 'node:fs';
import { connect } from 'node:net';
import { basename, dirname } from 'node:path';
import { errno, EWOULDBLOCK, flock, LOCK_EX, LOCK_NB, SystemCallError } from '@gatehouse/libc';

export class SocketInUseError extends Error {
  override readonly name = 'SocketInUseError';
}

export interface SocketClaim {
  /** The socket's path through the checked directory's descriptor: bind, stat and unlink here. */
  readonly pathInDirectory: string;
  /** Whether a stale socket file (nothing answering) was removed. */
  readonly replacedStaleSocket: boolean;
  release(): void;
}

/** Group and others may not write to the directory: they could swap the socket for their own. */
const FOREIGN_WRITE_BITS = 0o022;

export async function claimSocketPath(
  socketPath: string,
  probeTimeoutMs = 1000,
): Promise<SocketClaim> {
  const directory = dirname(socketPath);
  mkdirSync(directory, { recursive: true, mode: 0o755 });
  const directoryFd = openDirectory(directory);
  const inDirectory = (name: string) => `/proc/self/fd/${directoryFd}/${name}`;
  const fds = [directoryFd];
  const release = () => {
    for (const fd of fds.splice(0)) closeSync(fd);
  };
  try {
    checkDirectory(directory, directoryFd);
    const lockFd = openLock(inDirectory(`${basename(socketPath)}.lock`), `${socketPath}.lock`);
    fds.push(lockFd);
    if (!tryLockExclusive(lockFd)) throw inUse(socketPath);
    const pathInDirectory = inDirectory(basename(socketPath));
    const replacedStaleSocket = await removeStaleSocket(
      socketPath,
      pathInDirectory,
      probeTimeoutMs,
    );
    return { pathInDirectory, replacedStaleSocket, release };
  } catch (error) {
    release();
    throw error;
  }
}

function openDirectory(directory: string): number {
  try {
    return openSync(directory, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'ENOTDIR') {
      throw new Error(
        `${directory} is not a directory (a symbolic link?): refusing to serve in it`,
      );
    }
    throw error;
  }
}

function checkDirectory(directory: string, fd: number): void {
  const stats = fstatSync(fd);
  const serviceUid = process.geteuid?.() ?? 0;
  if (stats.uid !== serviceUid) {
    throw new Error(
      `${directory} is owned by uid ${stats.uid}, not by the service (uid ${serviceUid}): ` +
        'refusing to serve the control socket there (its owner could replace the socket)',
    );
  }
  if ((stats.mode & FOREIGN_WRITE_BITS) !== 0) {
    const mode = (stats.mode & 0o7777).toString(8).padStart(4, '0');
    throw new Error(
      `${directory} is writable by its group or others (mode ${mode}): refusing to serve the ` +
        `control socket there (they could replace the socket); chmod go-w ${directory}`,
    );
  }
}

function openLock(path: string, shownPath: string): number {
  let fd: number;
  try {
    fd = openSync(
      path,
      constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND | constants.O_NOFOLLOW,
      0o600,
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP')
      throw new Error(`${shownPath} is a symbolic link: refusing to use it as the lock`);
    throw error;
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new Error(`${shownPath} is not a regular file: refusing to use it as the lock`);
  }
  return fd;
}

async function removeStaleSocket(
  socketPath: string,
  pathInDirectory: string,
  probeTimeoutMs: number,
): Promise<boolean> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(pathInDirectory).isSocket();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
  if (!isSocket)
    throw new Error(`${socketPath} exists and is not a socket; refusing to replace it`);
  const answer = await probe(pathInDirectory, socketPath, probeTimeoutMs);
  if (answer === 'answers') throw inUse(socketPath);
  if (answer === 'gone') return false;
  unlinkSync(pathInDirectory);
  return true;
}

/** `flock(fd, LOCK_EX | LOCK_NB)`: true when taken, false when another process holds it. */
function tryLockExclusive(fd: number): boolean {
  if (flock(fd, LOCK_EX | LOCK_NB) === 0) return true;
  const code = errno();
  if (code === EWOULDBLOCK) return false;
  throw new SystemCallError('flock', code);
}

function probe(
  path: string,
  socketPath: string,
  timeoutMs: number,
): Promise<'answers' | 'refused' | 'gone'> {
  return new Promise((resolve, reject) => {
    const socket = connect({ path });
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
