/**
 * `npm run bench:gateway [-- --quick]`: iperf3 TCP (one stream, client to
 * server) through a gateway against the same through a plain tunnel, in one
 * run, the two measured in turn so that slow drifts of the machine fall on both:
 *
 *   via gateway  the headless client (`gatehouse-tunnel up --portal`, a service
 *                account's token) → its tunnel → `gatehouse-gateway` → kernel
 *                forwarding and masquerade → the resource host's iperf3 server,
 *                on test/lib/topology.ts's network with a portal that authorizes
 *                the flow (test/fixtures/gateway-bench-org.yaml)
 *   direct       Gatehouse ⇄ Gatehouse (test/lib/tunnel-peers.ts), iperf3 server
 *                on the far end of the tunnel
 *
 * Both tunnels have MTU 1280 (the portal client's and the gateway's). Each
 * figure is the median of the runs; CPU seconds per GB of each path's tunnel
 * processes are reported too. The last line is a contract other checks parse:
 *   gateway: via_gateway=<Gbit/s> direct=<Gbit/s> ratio=<r>
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { runCommand, systemTestSkipReason, TestNetwork } from '../lib/netns.ts';
import type { NamespaceProcess } from '../lib/netns.ts';
import { describePing, ping } from '../lib/ping.ts';
import { cpuSeconds } from '../lib/process-usage.ts';
import {
  CLIENT_UP,
  GATEWAY_JOINED,
  startTopology,
  TOPOLOGY,
  TOPOLOGY_TOOLS,
  untilOutput,
} from '../lib/topology.ts';
import type { Topology } from '../lib/topology.ts';
import { createTunnelPair, PAIR_ADDRESSES } from '../lib/tunnel-peers.ts';
import type { TunnelPair } from '../lib/tunnel-peers.ts';
import { gigabitsPerSecond, median, parseIperf3Json } from './throughput-measurements.ts';

const TOOLS = [...TOPOLOGY_TOOLS, 'iperf3', 'ping', 'ss'];
const ORG_FILE = fileURLToPath(new URL('../fixtures/gateway-bench-org.yaml', import.meta.url));
const SERVICE_ACCOUNT = 'iperf';
const IPERF3_PORT = 5201;
const MTU = 1280;
const READY_TIMEOUT_MS = 30_000;
const SERVER_READY_TIMEOUT_MS = 5_000;

interface Settings {
  runs: number;
  seconds: number;
}

const FULL: Settings = { runs: 3, seconds: 8 };
const QUICK: Settings = { runs: 1, seconds: 3 };

interface Path {
  label: string;
  namespace: string;
  server: string;
  /** The processes that carry the tunnel, for CPU seconds. */
  pids: number[];
  bitsPerSecond: number[];
  cpuSeconds: number;
  bytes: number;
}

function progress(message: string): void {
  process.stderr.write(`bench:gateway: ${message}\n`);
}

/** The node process itself: `ip netns exec`, nsenter and the launcher each exec the next. */
function pidOf(started: NamespaceProcess): number {
  const pid = started.child.pid;
  if (pid === undefined) throw new Error(`${started.description}: no pid`);
  const command = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  if (command !== 'node') throw new Error(`${started.description}: pid ${pid} is ${command}`);
  return pid;
}

async function startIperf3Server(
  network: TestNetwork,
  namespace: string,
  address: string,
): Promise<void> {
  const server = network.spawn(namespace, ['iperf3', '-s', '-B', address, '-p', `${IPERF3_PORT}`]);
  const deadline = performance.now() + SERVER_READY_TIMEOUT_MS;
  while (performance.now() < deadline) {
    if (!server.running) throw new Error(`iperf3 server exited: ${server.output()}`);
    const { stdout } = await network.exec(namespace, ['ss', '-Htln', `sport = :${IPERF3_PORT}`]);
    if (stdout.trim() !== '') return;
    await sleep(50);
  }
  throw new Error(`iperf3 server on ${address} not listening within ${SERVER_READY_TIMEOUT_MS} ms`);
}

async function warmUp(network: TestNetwork, namespace: string, address: string): Promise<void> {
  const result = await ping(network, namespace, address, {
    count: 3,
    intervalSeconds: 0.2,
    deadlineSeconds: 10,
  });
  if (result.received === 0) throw new Error(`no ping to ${address}: ${describePing(result)}`);
}

/** The topology with the gateway joined and the client's tunnel up; the processes' pids. */
async function buildViaGateway(network: TestNetwork): Promise<{ topo: Topology; pids: number[] }> {
  const topo = await startTopology({ network, orgFile: ORG_FILE, log: progress });
  const gateway = topo.startGateway();
  await untilOutput(gateway, GATEWAY_JOINED, READY_TIMEOUT_MS);
  progress('gateway: joined the portal');
  const created = await topo.portalCli(['token', 'create', '--service-account', SERVICE_ACCOUNT]);
  const token = created.stdout.trim();
  if (token === '' || /\s/.test(token)) {
    throw new Error(`gatehouse-portal token create printed no token: ${created.stderr.trim()}`);
  }
  const client = topo.startClient(token);
  await untilOutput(client.process, CLIENT_UP, READY_TIMEOUT_MS);
  progress(`client: gatehouse-tunnel ${client.args.join(' ')}: up`);
  await startIperf3Server(network, topo.namespaces.resource, TOPOLOGY.lan.web);
  await warmUp(network, topo.namespaces.client, TOPOLOGY.lan.web);
  return { topo, pids: [pidOf(gateway), pidOf(client.process)] };
}

async function buildDirect(network: TestNetwork): Promise<TunnelPair> {
  const pair = await createTunnelPair(network, ['gatehouse', 'gatehouse'], { mtu: MTU });
  await startIperf3Server(network, pair.rightNamespace, PAIR_ADDRESSES.right.tunnel);
  await warmUp(network, pair.leftNamespace, PAIR_ADDRESSES.right.tunnel);
  return pair;
}

async function measure(network: TestNetwork, path: Path, settings: Settings): Promise<void> {
  const cpuBefore = path.pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  const { stdout } = await network.exec(
    path.namespace,
    ['iperf3', '-c', path.server, '-p', `${IPERF3_PORT}`, '-t', `${settings.seconds}`, '-J'],
    { timeoutMs: (settings.seconds + 20) * 1000 },
  );
  const result = parseIperf3Json(stdout);
  path.cpuSeconds += path.pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0) - cpuBefore;
  path.bytes += result.bytes;
  path.bitsPerSecond.push(result.bitsPerSecond);
  progress(
    `${path.label}: ${gigabitsPerSecond(result.bitsPerSecond).toFixed(3)} Gbit/s` +
      ` (retransmits ${result.retransmits ?? '?'})`,
  );
}

function gatewayContractLine(viaGatewayBitsPerSecond: number, directBitsPerSecond: number) {
  const via = gigabitsPerSecond(viaGatewayBitsPerSecond);
  const direct = gigabitsPerSecond(directBitsPerSecond);
  return `gateway: via_gateway=${via.toFixed(3)} direct=${direct.toFixed(3)} ratio=${(via / direct).toFixed(2)}`;
}

async function main(): Promise<number> {
  const settings = process.argv.includes('--quick') ? QUICK : FULL;
  const notReady = systemTestSkipReason(TOOLS);
  if (notReady !== undefined) {
    console.error(`bench:gateway cannot run: ${notReady}`);
    return 1;
  }
  const iperfVersion = (await runCommand(['iperf3', '--version'])).stdout.split('\n')[0];
  progress(`${iperfVersion}; ${settings.runs} run(s) of ${settings.seconds} s per path`);
  const network = TestNetwork.create('benchgw');
  let topo: Topology | undefined;
  try {
    const built = await buildViaGateway(network);
    topo = built.topo;
    const pair = await buildDirect(network);
    progress('Gatehouse ⇄ Gatehouse: up');
    const paths: Path[] = [
      {
        label: 'client → gateway → resource host',
        namespace: topo.namespaces.client,
        server: TOPOLOGY.lan.web,
        pids: built.pids,
        bitsPerSecond: [],
        cpuSeconds: 0,
        bytes: 0,
      },
      {
        label: 'Gatehouse ⇄ Gatehouse direct',
        namespace: pair.leftNamespace,
        server: PAIR_ADDRESSES.right.tunnel,
        pids: [pair.left.pid, pair.right.pid],
        bitsPerSecond: [],
        cpuSeconds: 0,
        bytes: 0,
      },
    ];
    for (let run = 1; run <= settings.runs; run++) {
      progress(`run ${run}/${settings.runs}`);
      for (const path of paths) await measure(network, path, settings);
    }
    const [via, direct] = paths as [Path, Path];
    console.log(
      `iperf3 TCP, one stream from the client side, tunnel MTU ${MTU}; median of ` +
        `${settings.runs} run(s) of ${settings.seconds} s. CPU s/GB: user+system seconds of ` +
        'the tunnel processes (gateway and client; both peers) per 10^9 bytes received.',
    );
    for (const path of paths) {
      console.log(
        `  ${path.label.padEnd(34)} ${gigabitsPerSecond(median(path.bitsPerSecond)).toFixed(3)} Gbit/s` +
          `  (runs: ${path.bitsPerSecond.map((bps) => gigabitsPerSecond(bps).toFixed(3)).join(', ')};` +
          ` CPU ${(path.cpuSeconds / (path.bytes / 1e9)).toFixed(1)} s/GB)`,
      );
    }
    console.log(gatewayContractLine(median(via.bitsPerSecond), median(direct.bitsPerSecond)));
    return 0;
  } catch (error) {
    console.error(`bench:gateway failed: ${(error as Error)?.stack ?? String(error)}`);
    if (topo !== undefined) console.error(topo.diagnostics());
    return 1;
  } finally {
    await network.destroy();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`bench:gateway failed: ${(error as Error)?.stack ?? String(error)}`);
    process.exit(1);
  },
);
