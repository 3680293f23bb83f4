/**
 * The device id the portal knows this machine by: made once (a random UUID) and kept in the
 * state directory as `device-id`, so that a restarted service, a new token or a new
 * WireGuard key is still the same device. Not a secret (mode 0644), but only root may change
 * it: a symbolic link, or a file or directory others may write, is refused and the error says
 * how to fix it.
 */

import { randomUUID } from 'node:crypto';
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';

export const DEVICE_ID_FILE = 'device-id';
export const DEFAULT_STATE_DIRECTORY = '/var/lib/gatehouse';

/** What the portal's join accepts as a device id. */
const DEVICE_ID = /^[\x21-\x7e]{1,128}$/;
const MAX_DEVICE_ID_BYTES = 128;

/** The device id cannot be kept or read; `message` says why and what to do. */
export class DeviceIdError extends Error {
  override readonly name = 'DeviceIdError';
}

/** systemd's STATE_DIRECTORY (its first entry) when set, else /var/lib/gatehouse. */
export function stateDirectoryFrom(env: Record<string, string | undefined>): string {
  const first = env['STATE_DIRECTORY']?.split(':')[0]?.trim();
  return first !== undefined && first !== '' ? first : DEFAULT_STATE_DIRECTORY;
}

/** The id kept in `stateDir`, made and kept there when there is none. */
export function loadOrCreateDeviceId(
  stateDir: string,
  uid: number = process.geteuid?.() ?? 0,
): { deviceId: string; created: boolean; path: string } {
  ensureDirectory(stateDir, uid);
  const path = join(stateDir, DEVICE_ID_FILE);
  const existing = readDeviceId(path, uid);
  if (existing !== undefined) return { deviceId: existing, created: false, path };
  const deviceId = randomUUID();
  // Written aside and renamed into place: a reader never sees half an id, and a link planted
  // at the path meanwhile is replaced, never followed.
  const temporary = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(temporary, `${deviceId}\n`, { mode: 0o644, flag: 'wx' });
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw new DeviceIdError(`cannot keep the device id in ${path}: ${(error as Error).message}`);
  }
  return { deviceId, created: true, path };
}

function ensureDirectory(stateDir: string, uid: number): void {
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o755 });
  } catch (error) {
    throw new DeviceIdError(
      `cannot create the state directory ${stateDir}: ${(error as Error).message}`,
    );
  }
  const stats = lstatSync(stateDir);
  if (stats.isSymbolicLink() || !stats.isDirectory()) {
    throw new DeviceIdError(
      `the state directory ${stateDir} is not a directory (a symbolic link?): give its own path`,
    );
  }
  if (stats.uid !== uid || (stats.mode & 0o022) !== 0) {
    throw new DeviceIdError(
      `the state directory ${stateDir} may be changed by others (owner uid ${stats.uid}, mode ` +
        `${modeText(stats.mode)}): chown ${uid} ${stateDir} && chmod go-w ${stateDir}`,
    );
  }
}

/** Undefined when there is no file yet. */
function readDeviceId(path: string, uid: number): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') {
      throw new DeviceIdError(
        `${path} is a symbolic link: remove it (rm ${path}; a new device id is made)`,
      );
    }
    throw new DeviceIdError(`cannot read ${path}: ${(error as Error).message}`);
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) throw new DeviceIdError(`${path} is not a regular file: remove it`);
    if (stats.uid !== uid || (stats.mode & 0o022) !== 0) {
      throw new DeviceIdError(
        `${path} may be changed by others (owner uid ${stats.uid}, mode ${modeText(stats.mode)}): ` +
          `chown ${uid} ${path} && chmod 644 ${path}`,
      );
    }
    const buffer = Buffer.alloc(MAX_DEVICE_ID_BYTES + 2);
    const length = readSync(fd, buffer, 0, buffer.length, 0);
    const text = buffer.toString('latin1', 0, length).trim();
    if (!DEVICE_ID.test(text)) {
      throw new DeviceIdError(
        `${path} does not hold a device id (1 to 128 printable characters): remove it to make ` +
          'a new one (the portal then sees a new device)',
      );
    }
    return text;
  } finally {
    closeSync(fd);
  }
}

function modeText(mode: number): string {
  return (mode & 0o777).toString(8).padStart(4, '0');
}
