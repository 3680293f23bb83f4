/** Child processes for root tests: bounded waits for output, and cleanup by process group. */
import type { ChildProcess } from 'node:child_process';
import { spawn, spawnSync } from 'node:child_process';

export function rootSkipReason(tools: readonly string[]): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root: network and mount namespaces';
  const missing = tools.filter(
    (tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0,
  );
  return missing.length > 0 ? `missing tools: ${missing.join(', ')}` : undefined;
}

export function run(
  argv: readonly string[],
  input?: string,
): { status: number | null; stdout: string; stderr: string } {
  const [command = '', ...args] = argv;
  const result = spawnSync(command, args, { encoding: 'utf8', timeout: 15_000, input });
  return { status: result.status, stdout: result.stdout ?? '', stderr: result.stderr ?? '' };
}

export function runOrThrow(argv: readonly string[], input?: string): string {
  const result = run(argv, input);
  if (result.status !== 0)
    throw new Error(`\`${argv.join(' ')}\` exited ${result.status}: ${result.stderr.trim()}`);
  return result.stdout;
}

export interface LongRunning {
  child: ChildProcess;
  output(): string;
  waitForLine(line: string, timeoutMs?: number): Promise<void>;
  /** SIGKILLs the whole process group and waits for the leader to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `argv` in its own process group so that everything it starts can be ended with it. */
export function startLongRunning(argv: readonly string[], env?: NodeJS.ProcessEnv): LongRunning {
  const [command = '', ...args] = argv;
  const child = spawn(command, args, {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    child,
    output: () => output,
    waitForLine: async (line, timeoutMs = 10_000) => {
      const deadline = Date.now() + timeoutMs;
      while (!output.split('\n').includes(line)) {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(
            `\`${argv.join(' ')}\` exited before printing ${JSON.stringify(line)}:\n${output}`,
          );
        }
        if (Date.now() > deadline)
          throw new Error(`no ${JSON.stringify(line)} within ${timeoutMs} ms:\n${output}`);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    },
    kill: async (signal = 'SIGKILL') => {
      if (child.pid === undefined) return;
      // The group outlives a leader that exited early (e.g. a setup script whose daemons still run).
      try {
        process.kill(-child.pid, signal);
      } catch {
        // the group is already gone
      }
      if (child.exitCode === null && child.signalCode === null) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([exited, new Promise((resolve) => (timer = setTimeout(resolve, 5000)))]);
        clearTimeout(timer);
      }
      // A daemon that escaped the group would otherwise hold these pipes, and the test process, open.
      child.stdout?.destroy();
      child.stderr?.destroy();
    },
  };
}
