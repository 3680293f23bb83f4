/**
 * A private mount namespace inside a test's network namespace, with a copy
 * of /etc bind-mounted over /etc and an empty directory over /var/lib, so
 * that `gatehouse-tunnel up` can rewrite resolv.conf and keep its state
 * without touching the host's (bind-mounting resolv.conf alone would make
 * its rename fail with EBUSY). A holder process keeps the mount namespace
 * alive; commands enter it, and the network namespace, through nsenter.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { runCommand } from './netns.ts';
import type { CommandOptions, CommandResult, NamespaceProcess, TestNetwork } from './netns.ts';

// The launcher, as users run it: it also sets the service's memory options.
const GATEHOUSE_TUNNEL = fileURLToPath(
  new URL('../../apps/tunnel-service/bin/gatehouse-tunnel', import.meta.url),
);
const HOLDER_READY_TIMEOUT_MS = 10_000;
const UP_TIMEOUT_MS = 30_000;

export interface PrivateEtc {
  /** The copy's resolv.conf as the host sees it. */
  readonly resolvConf: string;
  /** Runs a command inside the network and the mount namespace. */
  run(argv: readonly string[], options?: CommandOptions): Promise<CommandResult>;
  /** Starts a long-running process inside both namespaces; the network's destroy() stops it. */
  spawn(argv: readonly string[]): NamespaceProcess;
  /** Replaces the copy's resolv.conf, never writing through (the copy may be a symlink to the host's). */
  replaceResolvConf(content: Buffer): void;
}

/** `directory` receives the copy of /etc; the caller removes it. */
export async function startPrivateEtc(
  network: TestNetwork,
  namespace: string,
  directory: string,
): Promise<PrivateEtc> {
  const holder = network.spawn(namespace, [
    'unshare',
    '--mount',
    '--propagation',
    'private',
    '--',
    'sh',
    '-c',
    `cp -a /etc "${directory}/etc" && mkdir "${directory}/var-lib" && ` +
      `mount --bind "${directory}/etc" /etc && mount --bind "${directory}/var-lib" /var/lib && ` +
      'echo ready && exec sleep 300',
  ]);
  const deadline = performance.now() + HOLDER_READY_TIMEOUT_MS;
  while (!holder.output().includes('ready')) {
    if (performance.now() > deadline || !holder.running)
      throw new Error(`the mount namespace holder did not start: ${holder.output()}`);
    await sleep(20);
  }
  const enter = ['nsenter', `--target=${holder.child.pid}`, '--mount', '--net', '--'];
  const resolvConf = join(directory, 'etc', 'resolv.conf');
  return {
    resolvConf,
    run: (argv, options) => runCommand([...enter, ...argv], options),
    spawn: (argv) => network.spawn(namespace, [...enter, ...argv]),
    replaceResolvConf: (content) => {
      rmSync(resolvConf, { force: true });
      writeFileSync(resolvConf, content);
    },
  };
}

/**
 * `gatehouse-tunnel up --config FILE` inside the private namespaces, once it
 * says the tunnel is up; `onOutputLine` sees each line it prints, from the first.
 */
export async function startGatehouseUp(
  privateEtc: PrivateEtc,
  configFile: string,
  socketPath: string,
  onOutputLine?: (line: string) => void,
): Promise<NamespaceProcess> {
  const up = privateEtc.spawn([
    GATEHOUSE_TUNNEL,
    'up',
    '--config',
    configFile,
    '--socket',
    socketPath,
  ]);
  if (onOutputLine !== undefined) {
    for (const output of [up.child.stdout, up.child.stderr]) {
      if (output !== null) createInterface({ input: output }).on('line', onOutputLine);
    }
  }
  const deadline = performance.now() + UP_TIMEOUT_MS;
  while (!up.output().includes(' is up')) {
    if (performance.now() > deadline || !up.running)
      throw new Error(`gatehouse-tunnel up did not come up:\n${up.output()}`);
    await sleep(50);
  }
  return up;
}

/** Runs a `gatehouse-tunnel` control command (status, down, dns-resources) against `socketPath`. */
export function gatehouseCli(
  privateEtc: PrivateEtc,
  socketPath: string,
  command: string,
  args: readonly string[] = [],
): Promise<CommandResult> {
  return privateEtc.run([GATEHOUSE_TUNNEL, command, '--socket', socketPath, ...args], {
    timeoutMs: 20_000,
  });
}
