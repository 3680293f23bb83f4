/**
 * `node test/bench/profile-throughput.ts [options]`: where the CPU goes while
 * iperf3 pushes one TCP stream through Gatehouse ⇄ Gatehouse (the standard
 * two-namespace topology of test/lib/tunnel-peers.ts, tunnel MTU 1420).
 *
 * Per run of `--seconds` it reports: throughput and retransmits; the
 * machine's CPU split from /proc/stat (user, system, softirq, idle, steal);
 * CPU seconds per thread of both tunnel processes (and per GB moved); the
 * iperf3 processes' CPU. Optional, during the middle of each run:
 *   --syscalls     perf tracepoints on the tunnels' read/write/recvmmsg/
 *                  sendmmsg/poll exits: calls per second and what each call
 *                  moved (TUN bytes per read/write, messages per mmsg call),
 *                  with the engine's packet counters: segments per call.
 *   --perf DIR     `perf record -a -g` system-wide (kernel share; JS frames
 *                  resolve through --perf-basic-prof maps, removed afterwards).
 *   --cpu-prof DIR NODE_OPTIONS=--cpu-prof for the tunnel processes (their
 *                  worker threads write their own .cpuprofile files); summarise
 *                  with test/bench/summarise-cpuprofile.ts.
 *   --queues 1     one TUN queue / data worker: the tunnels start with their
 *                  CPU affinity limited to CPU 0 (the engine sizes its queues
 *                  by availableParallelism()), which is widened to all CPUs
 *                  once they run, so only the queue count differs.
 * Other options: --runs N (3), --seconds S (10). Root only; everything it
 * creates (namespaces, processes, temp files) is removed on exit.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';

import { TestNetwork, runCommand, systemTestSkipReason } from '../lib/netns.ts';
import { ping } from '../lib/ping.ts';
import { PAIR_ADDRESSES, createTunnelPair } from '../lib/tunnel-peers.ts';
import type { TunnelPair, TunnelPeer } from '../lib/tunnel-peers.ts';

const GATEHOUSE_CLI = new URL('../../apps/tunnel-service/src/cli.ts', import.meta.url).pathname;
const IPERF3_PORT = 5201;

interface Options {
  runs: number;
  seconds: number;
  queues: number | undefined;
  cpuProf: string | undefined;
  perf: string | undefined;
  syscalls: boolean;
}

function parseOptions(argv: readonly string[]): Options {
  const value = (name: string): string | undefined => {
    const index = argv.indexOf(name);
    return index < 0 ? undefined : argv[index + 1];
  };
  const queues = value('--queues');
  if (queues !== undefined && queues !== '1' && queues !== 'default') {
    throw new Error('--queues: 1 or default (one per CPU, at most 4)');
  }
  return {
    runs: Number(value('--runs') ?? 3),
    seconds: Number(value('--seconds') ?? 10),
    queues: queues === '1' ? 1 : undefined,
    cpuProf: value('--cpu-prof'),
    perf: value('--perf'),
    syscalls: argv.includes('--syscalls'),
  };
}

const log = (message: string): void => void process.stderr.write(`${message}\n`);

function setAffinity(pid: number, cpuList: string): void {
  const result = spawnSync('taskset', ['-a', '-p', '-c', cpuList, `${pid}`], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`taskset ${pid}: ${result.stderr}`);
}

// ---------- /proc readings ----------

interface ThreadTicks {
  tid: number;
  name: string;
  ticks: number;
  user: number;
  system: number;
  /** schedstat: ns on a CPU, ns runnable but waiting for one, timeslices. */
  runNs: number;
  waitNs: number;
  slices: number;
  /** Voluntary and involuntary context switches. */
  voluntary: number;
  involuntary: number;
}

const TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim());

function threads(pid: number): ThreadTicks[] {
  const found: ThreadTicks[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const [runNs, waitNs, slices] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8')
        .trim()
        .split(' ')
        .map(Number);
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      const switches = (key: string) =>
        Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
      found.push({
        tid: Number(tid),
        name,
        ticks: Number(fields[11]) + Number(fields[12]),
        user: Number(fields[11]),
        system: Number(fields[12]),
        runNs: runNs!,
        waitNs: waitNs!,
        slices: slices!,
        voluntary: switches('voluntary_ctxt_switches'),
        involuntary: switches('nonvoluntary_ctxt_switches'),
      });
    } catch {
      // the thread ended
    }
  }
  return found;
}

/** CPU ticks of every process, by pid, with its command name. */
function processTicks(): Map<number, { name: string; ticks: number }> {
  const found = new Map<number, { name: string; ticks: number }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter(Boolean);
      const name =
        args.slice(0, 3).join(' ').slice(0, 60) ||
        stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      found.set(Number(entry), { name, ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // gone
    }
  }
  return found;
}

/** /proc/stat "cpu" line: user nice system idle iowait irq softirq steal. */
function machineTicks(): number[] {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  return line.trim().split(/\s+/).slice(1, 9).map(Number);
}

// ---------- engine counters ----------

function socketPathOf(pid: number): string {
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const at = argv.indexOf('--socket');
  if (at < 0) throw new Error(`pid ${pid} has no --socket`);
  return argv[at + 1]!;
}

interface PeerCounters {
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
  drops: number;
}

async function counters(peer: TunnelPeer): Promise<PeerCounters> {
  // The status command must not write profiles of its own.
  const env = { ...process.env };
  delete env['NODE_OPTIONS'];
  const { stdout } = await new Promise<{ stdout: string }>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [GATEHOUSE_CLI, 'status', '--json', '--socket', socketPathOf(peer.pid)],
      { env },
    );
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve({ stdout: out }) : reject(new Error(`status exited ${code}`)),
    );
  });
  const status = JSON.parse(stdout) as {
    peers: (PeerCounters & { drops: Record<string, number> })[];
  };
  const p = status.peers[0]!;
  return {
    rxPackets: p.rxPackets,
    txPackets: p.txPackets,
    rxBytes: p.rxBytes,
    txBytes: p.txBytes,
    drops: Object.values(p.drops).reduce((a, b) => a + b, 0),
  };
}

// ---------- syscall tracepoints ----------

const TRACED = ['read', 'write', 'recvmmsg', 'sendmmsg', 'poll', 'ppoll'] as const;

interface CallStats {
  calls: number;
  errors: number;
  sum: number;
  histogram: Map<number, number>;
}

function bucket(value: number): number {
  if (value <= 1) return value;
  return 2 ** Math.ceil(Math.log2(value));
}

function parseSyscallTrace(text: string): Map<string, Map<string, CallStats>> {
  // "node  1234/1240 [001] 12.345: syscalls:sys_exit_read: 0x5ac"
  const byThread = new Map<string, Map<string, CallStats>>();
  const pattern = /^\s*(.+?)\s+(\d+)\/(\d+)\s.*syscalls:sys_exit_(\w+):\s+(0x[0-9a-f]+)/;
  for (const line of text.split('\n')) {
    const match = pattern.exec(line);
    if (match === null) continue;
    const key = `${match[2]}/${match[3]} ${match[1]}`;
    const call = match[4]!;
    let ret = Number(BigInt.asIntN(64, BigInt(match[5]!)));
    let perThread = byThread.get(key);
    if (perThread === undefined) byThread.set(key, (perThread = new Map()));
    let stats = perThread.get(call);
    if (stats === undefined)
      perThread.set(call, (stats = { calls: 0, errors: 0, sum: 0, histogram: new Map() }));
    stats.calls++;
    if (ret < 0) {
      stats.errors++;
      continue;
    }
    // 8-byte reads and writes are eventfd wake-ups, not TUN packets.
    if ((call === 'read' || call === 'write') && ret === 8) ret = -1;
    if (ret < 0) continue;
    stats.sum += ret;
    const b = call === 'read' || call === 'write' ? Math.ceil(ret / 1452) : bucket(ret);
    stats.histogram.set(b, (stats.histogram.get(b) ?? 0) + 1);
  }
  return byThread;
}

function describeSyscalls(
  label: string,
  byThread: Map<string, Map<string, CallStats>>,
  seconds: number,
): string[] {
  const lines: string[] = [];
  for (const [thread, calls] of byThread) {
    const parts: string[] = [];
    for (const name of TRACED) {
      const s = calls.get(name);
      if (s === undefined) continue;
      const ok = s.calls - s.errors;
      let what = '';
      if (name === 'read' || name === 'write') {
        const packets = [...s.histogram.values()].reduce((a, b) => a + b, 0);
        what = packets === 0 ? '' : ` avg ${(s.sum / packets / 1452).toFixed(1)} MTU-segments`;
      } else if (name === 'recvmmsg' || name === 'sendmmsg') {
        what = ok === 0 ? '' : ` avg ${(s.sum / ok).toFixed(1)} msgs`;
      }
      const top = [...s.histogram.entries()]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 4)
        .map(([k, v]) => `${k}:${v}`)
        .join(' ');
      parts.push(
        `${name} ${(s.calls / seconds).toFixed(0)}/s (err ${s.errors})${what}${top ? ` [${top}]` : ''}`,
      );
    }
    lines.push(`  ${label} ${thread}: ${parts.join('; ')}`);
  }
  return lines;
}

function perfMaps(): string[] {
  return readdirSync('/tmp')
    .filter((name) => /^perf-\d+\.map$/.test(name))
    .map((name) => `/tmp/${name}`);
}

// ---------- perf record summaries ----------

function perfReport(file: string, args: readonly string[]): string[] {
  const result = spawnSync(
    'perf',
    ['report', '-i', file, '--no-children', '-g', 'none', '--stdio', ...args],
    { encoding: 'utf8', maxBuffer: 1 << 28 },
  );
  return result.stdout.split('\n').filter((line) => line.trim() !== '' && !line.startsWith('#'));
}

const CATEGORIES: [string, RegExp][] = [
  [
    'crypto (OpenSSL ChaCha20-Poly1305)',
    /\b(ChaCha20|chacha20|[Pp]oly1305|poly1305|EVP_|ossl_|OPENSSL_|evp_|CRYPTO_)/,
  ],
  ['kernel', /\[k\]/],
  [
    'koffi / N-API call glue',
    /koffi\.node|napi_|v8impl|CallApiCallback|FunctionCallbackWrapper|v8::Value::|v8::External|v8::Int32|v8::Uint32|v8::Number|v8::Object::|v8::ArrayBuffer|v8::TypedArray|v8::Isolate::|GetBackingStore/,
  ],
  ['memmove (TypedArray set/copyWithin, libc)', /memmove|memcpy/],
  ['V8 builtins / runtime / GC', /Builtins_|v8::internal::|\bv8::/],
  ['JS (JIT code)', /JIT|\[\.\] (LazyCompile|JS:|Function:|\*|~)|\.ts:\d+/],
];

function summarisePerf(file: string, tunnels: readonly { label: string; tid: number }[]): void {
  const out: string[] = [];
  const total = perfReport(file, ['--sort', 'comm,dso']);
  out.push('== all samples by command and object', ...total.slice(0, 20));
  out.push(
    '== kernel symbols, all processes',
    ...perfReport(file, ['--dsos', '[kernel.kallsyms]', '--sort', 'sym']).slice(0, 40),
  );
  for (const { label, tid } of tunnels) {
    const lines = perfReport(file, [
      '--tid',
      `${tid}`,
      '--percentage',
      'relative',
      '--sort',
      'dso,sym',
    ]);
    const shares = new Map<string, number>();
    for (const line of lines) {
      const percent = Number(/^\s*([\d.]+)%/.exec(line)?.[1] ?? NaN);
      if (!Number.isFinite(percent)) continue;
      const category =
        CATEGORIES.find(([, pattern]) => pattern.test(line))?.[0] ??
        'other native (node, libc, unresolved)';
      shares.set(category, (shares.get(category) ?? 0) + percent);
    }
    const split = [...shares]
      .sort((a, b) => b[1] - a[1])
      .map(([name, v]) => `${name} ${v.toFixed(1)}%`);
    log(`  perf ${label} worker ${tid}: ${split.join(', ')}`);
    out.push(`== ${label} worker thread ${tid}: ${split.join(', ')}`, ...lines.slice(0, 60));
  }
  writeFileSync(file.replace(/\.data$/, '.txt'), `${out.join('\n')}\n`);
}

// ---------- one run ----------

interface RunResult {
  bitsPerSecond: number;
  bytes: number;
  retransmits: number;
  senderCpu: number;
  receiverCpu: number;
}

async function runOnce(
  network: TestNetwork,
  pair: TunnelPair,
  options: Options,
  run: number,
): Promise<RunResult> {
  const peers = [
    { label: 'sender', peer: pair.left },
    { label: 'receiver', peer: pair.right },
  ];
  const processesBefore = processTicks();
  const machineBefore = machineTicks();
  const threadsBefore = peers.map(({ peer }) => threads(peer.pid));
  const countersBefore = await Promise.all(peers.map(({ peer }) => counters(peer)));
  const started = performance.now();
  const client = network.exec(
    pair.leftNamespace,
    [
      'iperf3',
      '-c',
      PAIR_ADDRESSES.right.tunnel,
      '-p',
      `${IPERF3_PORT}`,
      '-t',
      `${options.seconds}`,
      '-J',
    ],
    { timeoutMs: (options.seconds + 20) * 1000 },
  );
  const sampleSeconds = Math.max(1, Math.min(4, options.seconds - 4));
  await sleep(2000);
  const extras: Promise<unknown>[] = [];
  let traceFile: string | undefined;
  let sampleCounters: { before: PeerCounters[]; after?: PeerCounters[] } | undefined;
  if (options.syscalls) {
    traceFile = `/tmp/gh-prof-syscalls-${process.pid}-${run}.data`;
    const events = TRACED.flatMap((name) => ['-e', `syscalls:sys_exit_${name}`]);
    sampleCounters = { before: await Promise.all(peers.map(({ peer }) => counters(peer))) };
    extras.push(
      runCommand(
        [
          'perf',
          'record',
          '-q',
          ...events,
          '-p',
          peers.map(({ peer }) => peer.pid).join(','),
          '-o',
          traceFile,
          '--',
          'sleep',
          `${sampleSeconds}`,
        ],
        { timeoutMs: 60_000 },
      ).then(async () => {
        sampleCounters!.after = await Promise.all(peers.map(({ peer }) => counters(peer)));
      }),
    );
  }
  if (options.perf !== undefined) {
    extras.push(
      runCommand(
        [
          'perf',
          'record',
          '-q',
          '-a',
          '-g',
          '-F',
          '999',
          '-o',
          `${options.perf}/perf-run${run}.data`,
          '--',
          'sleep',
          `${sampleSeconds}`,
        ],
        { timeoutMs: 60_000 },
      ),
    );
  }
  await Promise.all(extras);
  const report = JSON.parse((await client).stdout) as {
    end: {
      sum_received: { bits_per_second: number; bytes: number };
      sum_sent: { retransmits: number };
      cpu_utilization_percent: { host_total: number; remote_total: number };
    };
  };
  const elapsed = (performance.now() - started) / 1000;
  const machineAfter = machineTicks();
  const processesAfter = processTicks();
  const threadsAfter = peers.map(({ peer }) => threads(peer.pid));
  const countersAfter = await Promise.all(peers.map(({ peer }) => counters(peer)));

  if (options.perf !== undefined) {
    // Now, while the tunnels' --perf-basic-prof maps still exist.
    const busiest = peers.map(
      ({ peer }) => threads(peer.pid).sort((a, b) => b.ticks - a.ticks)[0]!.tid,
    );
    summarisePerf(
      `${options.perf}/perf-run${run}.data`,
      peers.map(({ label }, i) => ({ label, tid: busiest[i]! })),
    );
  }
  const { bits_per_second: bps, bytes } = report.end.sum_received;
  const gb = bytes / 1e9;
  log(
    `run ${run}: ${(bps / 1e9).toFixed(3)} Gbit/s, ${(bytes / 1e9).toFixed(2)} GB, retransmits ${report.end.sum_sent.retransmits}, ` +
      `iperf3 CPU client ${report.end.cpu_utilization_percent.host_total.toFixed(0)}% server ${report.end.cpu_utilization_percent.remote_total.toFixed(0)}% (of one core)`,
  );
  const delta = machineAfter.map((v, i) => v - machineBefore[i]!);
  const total = delta.reduce((a, b) => a + b, 0);
  const names = ['user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal'];
  log(
    `  machine (${cpus().length} CPUs, ${elapsed.toFixed(1)} s): ` +
      names
        .map((name, i) => `${name} ${((100 * delta[i]!) / total).toFixed(1)}%`)
        .filter((_, i) => delta[i]! > 0)
        .join(', ') +
      ` — CPU s/GB: user ${(delta[0]! / TICKS / gb).toFixed(2)}, system ${(delta[2]! / TICKS / gb).toFixed(2)}, ` +
      `softirq ${(delta[6]! / TICKS / gb).toFixed(2)}, idle ${(delta[3]! / TICKS / gb).toFixed(2)}`,
  );
  const others = [...processesAfter]
    .filter(([pid]) => pid !== pair.left.pid && pid !== pair.right.pid)
    .map(([pid, p]) => ({
      pid,
      name: p.name,
      seconds: (p.ticks - (processesBefore.get(pid)?.ticks ?? 0)) / TICKS,
    }))
    .filter((p) => p.seconds >= 0.05)
    .sort((a, b) => b.seconds - a.seconds);
  log(
    `  other processes (user+system, excludes softirq run on their behalf): ` +
      others
        .slice(0, 6)
        .map((p) => `${p.pid} [${p.name}] ${p.seconds.toFixed(2)} s`)
        .join(', '),
  );
  const busyTicks = total - delta[3]! - delta[4]!;
  const tunnelTicks = [...processesAfter]
    .filter(([pid]) => pid === pair.left.pid || pid === pair.right.pid)
    .reduce((a, [pid, p]) => a + p.ticks - (processesBefore.get(pid)?.ticks ?? 0), 0);
  const listedTicks = others.reduce((a, p) => a + p.seconds * TICKS, 0);
  log(
    `  busy ${(busyTicks / TICKS).toFixed(2)} CPU s = tunnels ${(tunnelTicks / TICKS).toFixed(2)} + listed others ${(listedTicks / TICKS).toFixed(2)} ` +
      `+ softirq/irq ${((delta[5]! + delta[6]!) / TICKS).toFixed(2)} + processes that exited or kernel threads ` +
      `${((busyTicks - tunnelTicks - listedTicks - delta[5]! - delta[6]!) / TICKS).toFixed(2)}`,
  );
  const cpuPerSide: number[] = [];
  peers.forEach(({ label, peer }, index) => {
    const before = new Map(threadsBefore[index]!.map((t) => [t.tid, t]));
    const used = threadsAfter[index]!.map((t) => {
      const b = before.get(t.tid);
      return {
        ...t,
        seconds: (t.ticks - (b?.ticks ?? 0)) / TICKS,
        userS: (t.user - (b?.user ?? 0)) / TICKS,
        systemS: (t.system - (b?.system ?? 0)) / TICKS,
        runS: (t.runNs - (b?.runNs ?? 0)) / 1e9,
        waitS: (t.waitNs - (b?.waitNs ?? 0)) / 1e9,
        vol: t.voluntary - (b?.voluntary ?? 0),
        invol: t.involuntary - (b?.involuntary ?? 0),
      };
    })
      .filter((t) => t.seconds > 0)
      .sort((a, b) => b.seconds - a.seconds);
    const sum = used.reduce((a, t) => a + t.seconds, 0);
    cpuPerSide.push(sum);
    const c0 = countersBefore[index]!;
    const c1 = countersAfter[index]!;
    for (const t of used.filter((t) => t.seconds >= 0.2)) {
      log(
        `  ${label} busy thread ${t.tid}: user ${t.userS.toFixed(2)} s, system ${t.systemS.toFixed(2)} s, ` +
          `on-CPU ${t.runS.toFixed(2)} s, runnable-but-waiting ${t.waitS.toFixed(2)} s, ` +
          `idle ${(elapsed - t.runS - t.waitS).toFixed(2)} s of ${elapsed.toFixed(1)}; ` +
          `context switches ${(t.vol / elapsed).toFixed(0)}/s voluntary, ${(t.invol / elapsed).toFixed(0)}/s involuntary`,
      );
    }
    log(
      `  ${label} pid ${peer.pid}: ${sum.toFixed(2)} CPU s (${((100 * sum) / elapsed).toFixed(0)}% of a core, ${(sum / gb).toFixed(2)} s/GB); ` +
        `threads: ${used.map((t) => `${t.tid}(${t.name}) ${t.seconds.toFixed(2)}`).join(', ')}; ` +
        `tx ${c1.txPackets - c0.txPackets} pkts, rx ${c1.rxPackets - c0.rxPackets} pkts, drops +${c1.drops - c0.drops}`,
    );
  });
  if (traceFile !== undefined && existsSync(traceFile)) {
    const script = spawnSync(
      'perf',
      ['script', '-i', traceFile, '-F', 'comm,pid,tid,cpu,time,event,trace'],
      {
        encoding: 'utf8',
        maxBuffer: 1 << 30,
      },
    );
    rmSync(traceFile, { force: true });
    const byThread = parseSyscallTrace(script.stdout);
    const perPid = (pid: number) =>
      new Map([...byThread].filter(([key]) => key.startsWith(`${pid}/`)));
    peers.forEach(({ label, peer }, index) => {
      for (const line of describeSyscalls(label, perPid(peer.pid), sampleSeconds)) log(line);
      const before = sampleCounters!.before[index]!;
      const after = sampleCounters!.after![index]!;
      log(
        `  ${label} engine counters over the trace window: tx ${((after.txPackets - before.txPackets) / sampleSeconds).toFixed(0)} pkt/s, ` +
          `rx ${((after.rxPackets - before.rxPackets) / sampleSeconds).toFixed(0)} pkt/s`,
      );
    });
  }
  return {
    bitsPerSecond: bps,
    bytes,
    retransmits: report.end.sum_sent.retransmits,
    senderCpu: cpuPerSide[0]!,
    receiverCpu: cpuPerSide[1]!,
  };
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  const notReady = systemTestSkipReason(['ip', 'iperf3', 'ping', 'wg', 'taskset', 'perf']);
  if (notReady !== undefined) {
    console.error(`profile-throughput cannot run: ${notReady}`);
    return 1;
  }
  const nodeOptions: string[] = [];
  if (options.cpuProf !== undefined) {
    mkdirSync(options.cpuProf, { recursive: true });
    nodeOptions.push('--cpu-prof', `--cpu-prof-dir=${options.cpuProf}`);
  }
  if (options.perf !== undefined) {
    mkdirSync(options.perf, { recursive: true });
    nodeOptions.push('--perf-basic-prof-only-functions');
  }
  if (nodeOptions.length > 0) process.env['NODE_OPTIONS'] = nodeOptions.join(' ');
  const allCpus = `0-${cpus().length - 1}`;
  if (options.queues === 1) setAffinity(process.pid, '0');

  const mapsBefore = new Set(perfMaps());
  const network = TestNetwork.create('prof');
  const tunnelPids: number[] = [];
  try {
    const pair = await createTunnelPair(network, ['gatehouse', 'gatehouse']);
    tunnelPids.push(pair.left.pid, pair.right.pid);
    delete process.env['NODE_OPTIONS'];
    if (options.queues === 1) {
      setAffinity(process.pid, allCpus);
      for (const pid of tunnelPids) setAffinity(pid, allCpus);
    }
    for (const peer of [pair.left, pair.right]) {
      const workers = /(\d+) data worker/.exec(peer.output())?.[1] ?? '?';
      log(`${peer.options.namespace}: pid ${peer.pid}, ${workers} data worker(s)`);
    }
    network.spawn(pair.rightNamespace, [
      'iperf3',
      '-s',
      '-B',
      PAIR_ADDRESSES.right.tunnel,
      '-p',
      `${IPERF3_PORT}`,
    ]);
    await sleep(500);
    const warm = await ping(network, pair.leftNamespace, PAIR_ADDRESSES.right.tunnel, {
      count: 3,
      intervalSeconds: 0.1,
      deadlineSeconds: 10,
    });
    if (warm.received === 0) throw new Error('no ping through the tunnel');
    const results: RunResult[] = [];
    for (let run = 1; run <= options.runs; run++) {
      results.push(await runOnce(network, pair, options, run));
    }
    const sorted = results.map((r) => r.bitsPerSecond / 1e9).sort((a, b) => a - b);
    const totalGb = results.reduce((a, r) => a + r.bytes, 0) / 1e9;
    log(
      `summary (${options.queues ?? 'default'} queue(s)): Gbit/s ${sorted.map((v) => v.toFixed(3)).join(', ')}; ` +
        `median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(3)}; ` +
        `tunnel CPU s/GB sender ${(results.reduce((a, r) => a + r.senderCpu, 0) / totalGb).toFixed(2)}, ` +
        `receiver ${(results.reduce((a, r) => a + r.receiverCpu, 0) / totalGb).toFixed(2)}`,
    );
    return 0;
  } finally {
    await network.destroy();
    // --perf-basic-prof maps of the tunnels and of the status commands run while starting them.
    for (const map of perfMaps()) if (!mapsBefore.has(map)) rmSync(map, { force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`profile-throughput failed: ${(error as Error)?.stack ?? String(error)}`);
    process.exit(1);
  },
);
