/** The real probes behind decideDnsControlMode. */
import { lstat, readFile, readlink } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

import type { ResolvConfState, SystemDnsProbes } from './dns-control-mode.ts';
import type { ResolvedBusOptions } from './resolved-dbus.ts';
import { busNameHasOwner } from './resolved-dbus.ts';
import { RESOLV_CONF_PATH } from './resolv-conf.ts';

export interface ProbeOptions {
  resolvConfPath?: string;
  bus?: ResolvedBusOptions;
  mountInfoPath?: string;
}

export async function probeSystemDns(options: ProbeOptions = {}): Promise<SystemDnsProbes> {
  const [resolvConf, resolvedOnBus, networkManagerOnBus] = await Promise.all([
    probeResolvConf(
      options.resolvConfPath ?? RESOLV_CONF_PATH,
      options.mountInfoPath ?? '/proc/self/mountinfo',
    ),
    busNameHasOwner('org.freedesktop.resolve1', options.bus),
    busNameHasOwner('org.freedesktop.NetworkManager', options.bus),
  ]);
  return { resolvConf, resolvedOnBus, networkManagerOnBus };
}

export async function probeResolvConf(
  path: string,
  mountInfoPath: string,
): Promise<ResolvConfState> {
  let isSymlink: boolean;
  try {
    isSymlink = (await lstat(path)).isSymbolicLink();
  } catch {
    return { kind: 'missing' };
  }
  const content = await readFile(path, 'utf8').catch(() => undefined);
  if (isSymlink)
    return { kind: 'symlink', target: resolve(dirname(path), await readlink(path)), content };
  if (content === undefined) return { kind: 'missing' };
  const mountInfo = await readFile(mountInfoPath, 'utf8').catch(() => '');
  return { kind: 'file', content, isMountPoint: mountPoints(mountInfo).includes(path) };
}

/** Field 5 of each /proc/self/mountinfo line, with its octal escapes undone. */
export function mountPoints(mountInfo: string): string[] {
  return mountInfo
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((field): field is string => field !== undefined)
    .map((field) =>
      field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8))),
    );
}
