/**
 * Network namespaces for system tests: uniquely named namespaces, veth pairs,
 * commands and long-running processes inside them, and cleanup that also
 * runs on failure, on SIGINT/SIGTERM and, for leftovers of killed runs, at
 * start-up.
 *
 * Namespace names are `gh-<purpose>-<pid>-<n>`: the pid lets a later run tell
 * a dead run's leftovers from a concurrent run's live namespaces.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';

export const NAMESPACE_PREFIX = 'gh-';
const STALE_NAMESPACE = /^gh-[a-z0-9]+-(\d+)-\d+$/;
const DEFAULT_COMMAND_TIMEOUT_MS = 10_000;
const OUTPUT_TAIL_BYTES = 64 * 1024;

/** Why a root-only test cannot run, or undefined when running as root. */
export function requireRoot(): string | undefined {
  if (process.getuid?.() === 0) return undefined;
  return 'needs root: network namespaces, veth pairs and wireguard-go require CAP_NET_ADMIN';
}

/** The tools from `tools` that are not executable anywhere on PATH. */
export function missingTools(tools: readonly string[]): string[] {
  const directories = (process.env['PATH'] ?? '').split(delimiter).filter(Boolean);
  return tools.filter(
    (tool) =>
      !directories.some((directory) => {
        try {
          accessSync(join(directory, tool), constants.X_OK);
          return true;
        } catch {
          return false;
        }
      }),
  );
}

/** The first reason a system test cannot run here: not root, or tools missing. */
export function systemTestSkipReason(tools: readonly string[]): string | undefined {
  const notRoot = requireRoot();
  if (notRoot !== undefined) return notRoot;
  const missing = missingTools(tools);
  if (missing.length > 0) return `missing tools: ${missing.join(', ')}`;
  return undefined;
}

export interface CommandResult {
  stdout: string;
  stderr: string;
}

export class CommandError extends Error {
  readonly stdout: string;
  readonly stderr: string;
  constructor(argv: readonly string[], detail: string, stdout: string, stderr: string) {
    super(`\`${argv.join(' ')}\` ${detail}${stderr.trim() ? `: ${stderr.trim()}` : ''}`);
    this.stdout = stdout;
    this.stderr = stderr;
  }
}

export interface CommandOptions {
  /** Written to the command's stdin, which is then closed (keys go here, never into argv). */
  input?: string;
  timeoutMs?: number;
}

/** Runs a command to completion; rejects on a non-zero exit, a signal or the timeout. */
export function runCommand(
  argv: readonly string[],
  options: CommandOptions = {},
): Promise<CommandResult> {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error('runCommand: empty argv');
  const timeoutMs = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(new CommandError(argv, `could not start (${error.message})`, stdout, stderr));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve({ stdout, stderr });
      else if (signal === 'SIGKILL')
        reject(new CommandError(argv, `timed out after ${timeoutMs} ms`, stdout, stderr));
      else reject(new CommandError(argv, `exited with ${code ?? signal}`, stdout, stderr));
    });
    // A command that exits without reading its stdin makes this write fail with EPIPE.
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');
  });
}

function runSyncQuietly(argv: readonly string[]): string {
  const [file, ...args] = argv;
  if (file === undefined) return '';
  const result = spawnSync(file, args, { encoding: 'utf8', timeout: 5_000 });
  return result.status === 0 ? result.stdout : '';
}

/** True when `pid` runs; a zombie (killed, not yet reaped) counts as dead. */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // /proc/<pid>/stat: "pid (comm) state …"; comm may contain spaces and parentheses.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function killNamespaceProcessesSync(namespace: string): void {
  for (const line of runSyncQuietly(['ip', 'netns', 'pids', namespace]).split('\n')) {
    const pid = Number(line.trim());
    if (Number.isInteger(pid) && pid > 0) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

function deleteNamespaceSync(namespace: string): void {
  killNamespaceProcessesSync(namespace);
  runSyncQuietly(['ip', 'netns', 'delete', namespace]);
}

export function listNamespaces(): string[] {
  return runSyncQuietly(['ip', 'netns', 'list'])
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter(Boolean);
}

/**
 * Deletes `gh-…` namespaces whose owning process is dead (a crashed or
 * SIGKILLed run), killing whatever still runs inside them first.
 * Returns the names it removed.
 */
export function sweepStaleNamespaces(): string[] {
  const removed: string[] = [];
  for (const namespace of listNamespaces()) {
    const owner = STALE_NAMESPACE.exec(namespace)?.[1];
    if (owner === undefined || isProcessAlive(Number(owner))) continue;
    deleteNamespaceSync(namespace);
    removed.push(namespace);
  }
  return removed;
}

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  env?: Record<string, string>;
}

/** A long-running process inside a namespace; its output's tail is kept for diagnostics. */
export class NamespaceProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<ProcessExit>;
  readonly description: string;
  #exit: ProcessExit | undefined;
  #outputTail = '';

  constructor(namespace: string, argv: readonly string[], options: SpawnOptions = {}) {
    this.description = `${argv.join(' ')} (in ${namespace})`;
    this.child = spawn('ip', ['netns', 'exec', namespace, ...argv], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...options.env },
    });
    const keepTail = (chunk: Buffer): void => {
      this.#outputTail = (this.#outputTail + chunk.toString('utf8')).slice(-OUTPUT_TAIL_BYTES);
    };
    this.child.stdout?.on('data', keepTail);
    this.child.stderr?.on('data', keepTail);
    this.child.stdin?.on('error', () => {});
    this.exited = new Promise((resolve) => {
      this.child.on('error', (error) => {
        keepTail(Buffer.from(`spawn failed: ${error.message}\n`));
        this.#exit ??= { code: null, signal: null };
        resolve(this.#exit);
      });
      this.child.on('exit', (code, signal) => {
        this.#exit ??= { code, signal };
        resolve(this.#exit);
      });
    });
  }

  get running(): boolean {
    return this.#exit === undefined && this.child.pid !== undefined;
  }

  /** The last 64 KiB of stdout and stderr, interleaved as they arrived. */
  output(): string {
    return this.#outputTail;
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 2_000): Promise<ProcessExit> {
    if (this.running) {
      this.child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const graceOver = new Promise<'grace-over'>((resolve) => {
        timer = setTimeout(() => resolve('grace-over'), graceMs);
      });
      const outcome = await Promise.race([this.exited, graceOver]);
      clearTimeout(timer);
      if (outcome === 'grace-over') this.child.kill('SIGKILL');
    }
    return this.exited;
  }

  killNow(): void {
    if (this.running) this.child.kill('SIGKILL');
  }
}

export interface VethEnd {
  namespace: string;
  /** Interface name inside its namespace. */
  name: string;
  /** Address with prefix length, e.g. `10.98.0.1/24`. */
  address: string;
}

const liveNetworks = new Set<TestNetwork>();
let signalHandlersInstalled = false;
let staleSweepDone = false;
let namespaceCounter = 0;

function installSignalHandlers(): void {
  if (signalHandlersInstalled) return;
  signalHandlersInstalled = true;
  for (const [signal, exitCode] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.on(signal, () => {
      for (const network of liveNetworks) network.destroySync();
      console.error(`${signal}: removed test namespaces, exiting`);
      process.exit(exitCode);
    });
  }
  process.on('exit', () => {
    for (const network of liveNetworks) network.destroySync();
  });
}

/**
 * The namespaces, processes and other resources one test created. `destroy()`
 * (or `await using`, where supported) removes all of them; a SIGINT, SIGTERM
 * or process exit removes whatever is still alive.
 */
export class TestNetwork {
  readonly purpose: string;
  readonly namespaces: string[] = [];
  readonly processes: NamespaceProcess[] = [];
  #cleanups: (() => void)[] = [];
  #destroyed = false;

  private constructor(purpose: string) {
    this.purpose = purpose;
  }

  /** `purpose`: lower-case letters and digits; it shows up in namespace names. */
  static create(purpose: string): TestNetwork {
    if (!/^[a-z0-9]{1,20}$/.test(purpose)) {
      throw new Error(`TestNetwork purpose must be 1-20 lower-case letters or digits: ${purpose}`);
    }
    if (!staleSweepDone) {
      staleSweepDone = true;
      const removed = sweepStaleNamespaces();
      if (removed.length > 0) console.error(`removed stale namespaces: ${removed.join(' ')}`);
    }
    installSignalHandlers();
    const network = new TestNetwork(purpose);
    liveNetworks.add(network);
    return network;
  }

  /** Creates a namespace with loopback up; returns its name. */
  async addNamespace(): Promise<string> {
    this.#assertLive();
    const name = `${NAMESPACE_PREFIX}${this.purpose}-${process.pid}-${namespaceCounter++}`;
    await runCommand(['ip', 'netns', 'add', name]);
    this.namespaces.push(name);
    await this.exec(name, ['ip', 'link', 'set', 'lo', 'up']);
    return name;
  }

  /** Two new namespaces joined by `veth0` with the given addresses (CIDR); returns their names. */
  async addLinkedPair(addressA: string, addressB: string): Promise<[string, string]> {
    const a = await this.addNamespace();
    const b = await this.addNamespace();
    await this.addVethPair(
      { namespace: a, name: 'veth0', address: addressA },
      { namespace: b, name: 'veth0', address: addressB },
    );
    return [a, b];
  }

  /** A veth pair between two of this network's namespaces, addressed and up. */
  async addVethPair(a: VethEnd, b: VethEnd): Promise<void> {
    this.#assertLive();
    await runCommand([
      'ip',
      '-n',
      a.namespace,
      'link',
      'add',
      a.name,
      'type',
      'veth',
      'peer',
      'name',
      b.name,
      'netns',
      b.namespace,
    ]);
    for (const end of [a, b]) {
      await runCommand(['ip', '-n', end.namespace, 'addr', 'add', end.address, 'dev', end.name]);
      await runCommand(['ip', '-n', end.namespace, 'link', 'set', end.name, 'up']);
    }
  }

  /** Runs a command inside `namespace` to completion. */
  exec(
    namespace: string,
    argv: readonly string[],
    options?: CommandOptions,
  ): Promise<CommandResult> {
    return runCommand(['ip', 'netns', 'exec', namespace, ...argv], options);
  }

  /** Starts a long-running process inside `namespace`; `destroy()` stops it. */
  spawn(namespace: string, argv: readonly string[], options?: SpawnOptions): NamespaceProcess {
    this.#assertLive();
    const started = new NamespaceProcess(namespace, argv, options);
    this.processes.push(started);
    return started;
  }

  /** A synchronous cleanup step run after the processes stop (e.g. removing a socket file). */
  onDestroy(cleanup: () => void): void {
    this.#cleanups.push(cleanup);
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    await Promise.all(this.processes.map((started) => started.stop()));
    this.destroySync();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.destroy();
  }

  /** Kills without grace; for signal handlers and process exit, where nothing can be awaited. */
  destroySync(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    liveNetworks.delete(this);
    for (const started of this.processes) started.killNow();
    for (const namespace of this.namespaces) deleteNamespaceSync(namespace);
    for (const cleanup of this.#cleanups) {
      try {
        cleanup();
      } catch (error) {
        console.error(`cleanup step failed: ${(error as Error).message}`);
      }
    }
  }

  #assertLive(): void {
    if (this.#destroyed) throw new Error('TestNetwork already destroyed');
  }
}

/** Runs `body` with a fresh TestNetwork and destroys it afterwards, whether `body` returns or throws. */
export async function withTestNetwork<T>(
  purpose: string,
  body: (network: TestNetwork) => Promise<T>,
): Promise<T> {
  const network = TestNetwork.create(purpose);
  try {
    return await body(network);
  } finally {
    await network.destroy();
  }
}
