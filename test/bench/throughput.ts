/**
 * `npm run bench:throughput [-- --quick]`: iperf3 TCP through three tunnel
 * setups built side by side in their own namespaces — wireguard-go ⇄
 * wireguard-go, Gatehouse ⇄ wireguard-go, Gatehouse ⇄ Gatehouse — all with
 * tunnel MTU 1420. Each run measures every setup in turn (single stream
 * upload and download, 4 streams upload, ping round trips), so slow drifts of
 * the machine spread over all setups; each figure is the median of the runs.
 * Also reported: socket buffer sizes, peak RSS (VmHWM) and CPU seconds per
 * GB moved of the tunnel processes. The last line is a contract other checks
 * parse: `throughput: gatehouse=<Gbit/s> wireguard-go=<Gbit/s> ratio=<r>`.
 */
import { TestNetwork, runCommand, systemTestSkipReason } from '../lib/netns.ts';
import { describePing, ping } from '../lib/ping.ts';
import { cpuSeconds, peakResidentBytes } from '../lib/process-usage.ts';
import { PAIR_ADDRESSES, TUNNEL_MTU, createTunnelPair } from '../lib/tunnel-peers.ts';
import type { PeerKind, SocketBuffers, TunnelPair, TunnelPeer } from '../lib/tunnel-peers.ts';
import {
  gigabitsPerSecond,
  median,
  parseIperf3Json,
  percentile,
  throughputContractLine,
} from './throughput-measurements.ts';

const TOOLS = ['ip', 'iperf3', 'ping', 'ss', 'wg', 'wireguard-go'];
const IPERF3_PORT = 5201;
const SERVER_READY_TIMEOUT_MS = 5_000;
const PING_INTERVAL_SECONDS = 0.01;

interface Settings {
  runs: number;
  seconds: number;
  pings: number;
}

const FULL: Settings = { runs: 3, seconds: 10, pings: 200 };
const QUICK: Settings = { runs: 1, seconds: 3, pings: 50 };

type TestName = 'upload' | 'download' | 'upload -P 4';
const TESTS: readonly { name: TestName; args: readonly string[] }[] = [
  { name: 'upload', args: [] },
  { name: 'download', args: ['-R'] },
  { name: 'upload -P 4', args: ['-P', '4'] },
];

interface Setup {
  label: string;
  kinds: readonly [PeerKind, PeerKind];
  pair?: TunnelPair;
  /** Why the setup could not be built or measured; its figures so far are then left out. */
  failure?: string;
  bitsPerSecond: Record<TestName, number[]>;
  roundTripsMs: number[];
  cpuSeconds: number;
  bytesMoved: number;
}

function newSetup(label: string, kinds: readonly [PeerKind, PeerKind]): Setup {
  return {
    label,
    kinds,
    bitsPerSecond: { upload: [], download: [], 'upload -P 4': [] },
    roundTripsMs: [],
    cpuSeconds: 0,
    bytesMoved: 0,
  };
}

function progress(message: string): void {
  process.stderr.write(`bench:throughput: ${message}\n`);
}

function peersOf(pair: TunnelPair): TunnelPeer[] {
  return [pair.left, pair.right];
}

function tunnelCpuSeconds(pair: TunnelPair): number {
  return peersOf(pair).reduce((sum, peer) => sum + cpuSeconds(peer.pid), 0);
}

async function startIperf3Server(network: TestNetwork, pair: TunnelPair): Promise<void> {
  const address = PAIR_ADDRESSES.right.tunnel;
  const server = network.spawn(pair.rightNamespace, [
    'iperf3',
    '-s',
    '-B',
    address,
    '-p',
    `${IPERF3_PORT}`,
  ]);
  const deadline = performance.now() + SERVER_READY_TIMEOUT_MS;
  while (performance.now() < deadline) {
    if (!server.running) throw new Error(`iperf3 server exited: ${server.output()}`);
    const { stdout } = await network.exec(pair.rightNamespace, [
      'ss',
      '-Htln',
      `sport = :${IPERF3_PORT}`,
    ]);
    if (stdout.trim() !== '') return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`iperf3 server not listening within ${SERVER_READY_TIMEOUT_MS} ms`);
}

async function buildSetup(network: TestNetwork, setup: Setup): Promise<TunnelPair> {
  const pair = await createTunnelPair(network, setup.kinds);
  await startIperf3Server(network, pair);
  const warmUp = await ping(network, pair.leftNamespace, PAIR_ADDRESSES.right.tunnel, {
    count: 3,
    intervalSeconds: 0.1,
    deadlineSeconds: 10,
  });
  if (warmUp.received === 0) {
    throw new Error(`${setup.label}: no ping through the new tunnel: ${describePing(warmUp)}`);
  }
  return pair;
}

async function iperf3(
  network: TestNetwork,
  pair: TunnelPair,
  settings: Settings,
  args: readonly string[],
) {
  const { stdout } = await network.exec(
    pair.leftNamespace,
    [
      'iperf3',
      '-c',
      PAIR_ADDRESSES.right.tunnel,
      '-p',
      `${IPERF3_PORT}`,
      '-t',
      `${settings.seconds}`,
      '-J',
      ...args,
    ],
    { timeoutMs: (settings.seconds + 20) * 1000 },
  );
  return parseIperf3Json(stdout);
}

async function measure(
  network: TestNetwork,
  setup: Setup,
  pair: TunnelPair,
  settings: Settings,
): Promise<void> {
  for (const test of TESTS) {
    const cpuBefore = tunnelCpuSeconds(pair);
    const result = await iperf3(network, pair, settings, test.args);
    setup.cpuSeconds += tunnelCpuSeconds(pair) - cpuBefore;
    setup.bytesMoved += result.bytes;
    setup.bitsPerSecond[test.name].push(result.bitsPerSecond);
    progress(
      `${setup.label}: ${test.name} ${gigabitsPerSecond(result.bitsPerSecond).toFixed(3)} Gbit/s` +
        ` (retransmits ${result.retransmits ?? '?'})`,
    );
  }
  const pings = await ping(network, pair.leftNamespace, PAIR_ADDRESSES.right.tunnel, {
    count: settings.pings,
    intervalSeconds: PING_INTERVAL_SECONDS,
    deadlineSeconds: Math.ceil(settings.pings * PING_INTERVAL_SECONDS) + 5,
  });
  if (pings.received < settings.pings) {
    progress(`${setup.label}: ping lost replies: ${describePing(pings)}`);
  }
  setup.roundTripsMs.push(...pings.roundTripsMs);
}

function formatBuffers(buffers: readonly SocketBuffers[]): string {
  const kib = (bytes: number) => `${Math.round(bytes / 1024)}`;
  const distinct = new Set(buffers.map((b) => `${kib(b.receiveBytes)}/${kib(b.sendBytes)}`));
  return distinct.size === 0 ? '?' : [...distinct].join(',');
}

function table(rows: string[][]): string {
  // A row shorter than the header (a failed setup) lets its last cell run on.
  const widths = (rows[0] ?? []).map((_, column) =>
    Math.max(
      ...rows.filter((row) => row.length > column + 1).map((row) => (row[column] ?? '').length),
    ),
  );
  return rows
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

async function report(setups: readonly Setup[], settings: Settings): Promise<void> {
  const rows: string[][] = [
    [
      'setup',
      'upload',
      'download',
      'upload -P 4',
      'ping p50/p99 µs',
      'CPU s/GB',
      'peak RSS MB',
      'UDP rb/tb KiB (left; right)',
    ],
  ];
  const rssLines: string[] = [];
  for (const setup of setups) {
    const pair = setup.pair;
    if (pair === undefined || setup.failure !== undefined) {
      rows.push([setup.label, `failed: ${setup.failure ?? 'not built'}`]);
      continue;
    }
    const gbps = (name: TestName) =>
      gigabitsPerSecond(median(setup.bitsPerSecond[name])).toFixed(3);
    const rtt = (p: number) => `${Math.round(percentile(setup.roundTripsMs, p) * 1000)}`;
    const peaks = peersOf(pair).map((peer) => ({ peer, bytes: peakResidentBytes(peer.pid) }));
    const peakRss = Math.max(...peaks.map((entry) => entry.bytes));
    rssLines.push(
      `${setup.label}: ${peaks.map(({ peer, bytes }) => `${peer.kind} pid ${peer.pid} VmHWM ${(bytes / 1e6).toFixed(1)} MB`).join(', ')}`,
    );
    const buffers = await Promise.all(peersOf(pair).map((peer) => peer.socketBuffers()));
    rows.push([
      setup.label,
      gbps('upload'),
      gbps('download'),
      gbps('upload -P 4'),
      `${rtt(50)}/${rtt(99)}`,
      (setup.cpuSeconds / (setup.bytesMoved / 1e9)).toFixed(1),
      (peakRss / 1e6).toFixed(1),
      buffers.map(formatBuffers).join('; '),
    ]);
  }
  console.log(
    `iperf3 TCP through the tunnel, Gbit/s, median of ${settings.runs} run(s) of ${settings.seconds} s; ` +
      `tunnel MTU ${TUNNEL_MTU}; left runs the iperf3 client ("upload" is left to right).`,
  );
  console.log(
    'CPU s/GB: user+system seconds of both tunnel processes per 10^9 bytes received by iperf3; ' +
      'peak RSS: the larger VmHWM of the two tunnel processes.',
  );
  console.log('');
  console.log(table(rows));
  console.log('');
  for (const line of rssLines) console.log(line);
}

async function main(): Promise<number> {
  const settings = process.argv.includes('--quick') ? QUICK : FULL;
  const notReady = systemTestSkipReason(TOOLS);
  if (notReady !== undefined) {
    console.error(`bench:throughput cannot run: ${notReady}`);
    return 1;
  }
  const iperfVersion = (await runCommand(['iperf3', '--version'])).stdout.split('\n')[0];
  progress(`${iperfVersion}; ${settings.runs} run(s) of ${settings.seconds} s per test`);

  const wireguardGoPair = newSetup('wireguard-go ⇄ wireguard-go', ['wireguard-go', 'wireguard-go']);
  const mixedPair = newSetup('Gatehouse ⇄ wireguard-go', ['gatehouse', 'wireguard-go']);
  const gatehousePair = newSetup('Gatehouse ⇄ Gatehouse', ['gatehouse', 'gatehouse']);
  const setups = [wireguardGoPair, mixedPair, gatehousePair];

  const network = TestNetwork.create('bench');
  try {
    for (const setup of setups) {
      try {
        setup.pair = await buildSetup(network, setup);
        progress(`${setup.label}: up`);
      } catch (error) {
        fail(setup, error);
      }
    }
    for (let run = 1; run <= settings.runs; run++) {
      progress(`run ${run}/${settings.runs}`);
      for (const setup of setups) {
        if (setup.pair === undefined || setup.failure !== undefined) continue;
        try {
          await measure(network, setup, setup.pair, settings);
        } catch (error) {
          fail(setup, error);
        }
      }
    }
    await report(setups, settings);
  } finally {
    await network.destroy();
  }
  const unmeasured = [gatehousePair, wireguardGoPair].filter(
    (setup) => setup.failure !== undefined,
  );
  if (unmeasured.length > 0) {
    console.error(
      `bench:throughput: no throughput line: ${unmeasured.map((setup) => setup.label).join(' and ')} failed`,
    );
    return 1;
  }
  console.log(
    throughputContractLine(
      median(gatehousePair.bitsPerSecond.upload),
      median(wireguardGoPair.bitsPerSecond.upload),
    ),
  );
  return 0;
}

function fail(setup: Setup, error: unknown): void {
  const message = (error as Error)?.message ?? String(error);
  setup.failure = message.split('\n')[0] ?? message;
  progress(`${setup.label} failed: ${message}`);
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`bench:throughput failed: ${(error as Error)?.stack ?? String(error)}`);
    process.exit(1);
  },
);
