/**
 * `node test/bench/summarise-cpuprofile.ts [--top N] [--pid P,...] FILE_OR_DIR…`:
 * self time per function of V8 .cpuprofile files (as `node --cpu-prof`
 * writes them, one per thread: CPU.<date>.<time>.<pid>.<thread>.<seq>),
 * the top N (25) per file, plus self time per source file. Times come from
 * the profile's timeDeltas, so they are wall-clock time the thread spent on
 * a CPU in that function ((idle) and (program) are listed as V8 reports them).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function files(paths: readonly string[]): string[] {
  return paths.flatMap((path) =>
    statSync(path).isDirectory()
      ? readdirSync(path)
          .filter((name) => name.endsWith('.cpuprofile'))
          .sort()
          .map((name) => join(path, name))
      : [path],
  );
}

function shortUrl(url: string): string {
  if (url === '') return '';
  const match = /\/(packages|apps|test)\/(.+)$/.exec(url);
  if (match !== null) return `${match[1]}/${match[2]}`;
  return url.replace(/^file:\/\//, '').replace(/^.*node_modules\//, '');
}

function summarise(file: string, top: number): void {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUs = new Map<number, number>();
  // timeDeltas[i] is the gap before sample i: attribute it to the sample it ends.
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    total += us;
    if (frame.functionName === '(idle)') idle += us;
    const url = shortUrl(frame.url);
    const key = `${frame.functionName || '(anonymous)'} ${url}${url ? `:${frame.lineNumber + 1}` : ''}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
    byFile.set(url || '(native/VM)', (byFile.get(url || '(native/VM)') ?? 0) + us);
  }
  const busy = total - idle;
  const name = basename(file);
  console.log(
    `\n== ${name}: ${(total / 1e6).toFixed(2)} s profiled, ${(busy / 1e6).toFixed(2)} s not idle, ${profile.samples.length} samples`,
  );
  const line = (key: string, us: number) =>
    `  ${(us / 1e3).toFixed(0).padStart(7)} ms ${((100 * us) / busy).toFixed(1).padStart(5)}%  ${key}`;
  for (const [key, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    if (key.startsWith('(idle)')) continue;
    console.log(line(key, us));
  }
  console.log('  -- by source file:');
  for (const [key, us] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
    console.log(line(key, us));
  }
}

const args = process.argv.slice(2);
let top = 25;
const topAt = args.indexOf('--top');
if (topAt >= 0) {
  top = Number(args[topAt + 1]);
  args.splice(topAt, 2);
}
let pids: string[] | undefined;
const pidAt = args.indexOf('--pid');
if (pidAt >= 0) {
  pids = args[pidAt + 1]!.split(',');
  args.splice(pidAt, 2);
}
for (const file of files(args)) {
  const pid = basename(file).split('.')[3];
  if (pids !== undefined && !pids.includes(pid!)) continue;
  summarise(file, top);
}
