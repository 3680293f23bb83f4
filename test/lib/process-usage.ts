/**
 * What a live process has used so far, read from /proc: its peak resident
 * set size and its CPU time (all threads, user and system).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Peak resident set size (VmHWM), in bytes. */
export function peakResidentBytes(pid: number): number {
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (match?.[1] === undefined) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

let clockTicksPerSecond: number | undefined;

function ticksPerSecond(): number {
  if (clockTicksPerSecond === undefined) {
    const answer = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim();
    clockTicksPerSecond = Number(answer);
    if (!Number.isInteger(clockTicksPerSecond) || clockTicksPerSecond <= 0) {
      throw new Error(`getconf CLK_TCK answered "${answer}"`);
    }
  }
  return clockTicksPerSecond;
}

/** utime + stime from `/proc/<pid>/stat` text, in clock ticks. */
export function cpuTicksFromStat(stat: string): number {
  // Fields after "pid (comm) ": comm may hold spaces and parentheses; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) {
    throw new Error(`unexpected /proc/<pid>/stat: ${stat.slice(0, 200)}`);
  }
  return utime + stime;
}

/** CPU seconds (user + system, all threads) used so far. */
export function cpuSeconds(pid: number): number {
  return cpuTicksFromStat(readFileSync(`/proc/${pid}/stat`, 'utf8')) / ticksPerSecond();
}
