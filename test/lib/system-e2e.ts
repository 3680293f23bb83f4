/**
 * The end-to-end system tests' rig: the topology of `npm start`
 * (topology.ts) with the system tests' organisation, and what those tests
 * need beyond it:
 *
 *   - an "internet" host behind the gateway's third leg, wan0, with IPv4 and
 *     IPv6 (198.51.100.10, 2001:db8:100::10: web; 198.51.100.53: DNS), and
 *     the gateway's default routes pointing at it;
 *   - lab-late, one more web server on the resource LAN (10.232.0.30);
 *   - a "stranger" namespace on the internet bridge (10.231.0.66), for a
 *     WireGuard peer the portal never heard of;
 *   - the portal and the gateway restarted in place, the gateway's SIGUSR1
 *     status line, client tokens made by the portal's CLI for a service
 *     account (no browser), and the headless client (`gatehouse-tunnel up
 *     --portal`) with its status.
 *
 * Everything lives in the topology's TestNetwork, so `stop()` (or the
 * network's signal and exit handlers) removes it all.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { HttpProbeResult } from '../fixtures/http-probe.ts';
import { runCommand } from './netns.ts';
import type { NamespaceProcess, ProcessExit } from './netns.ts';
import {
  GATEHOUSE_TUNNEL,
  GATEWAY_JOINED,
  startTopology,
  TOPOLOGY,
  untilOutput,
} from './topology.ts';
import type { Topology } from './topology.ts';

export const SYSTEM_ORG = {
  file: fileURLToPath(new URL('../fixtures/system-org.yaml', import.meta.url)),
  withoutLabWeb: fileURLToPath(
    new URL('../fixtures/system-org-without-lab-web.yaml', import.meta.url),
  ),
  internet: fileURLToPath(new URL('../fixtures/system-org-internet.yaml', import.meta.url)),
  account: 'sys',
  serviceAccount: 'robot',
  /** The account's proxy range for IPv4 (system-org.yaml). */
  proxyIpv4Prefix: '10.233.',
} as const;

export const SYSTEM_NET = {
  late: '10.232.0.30',
  stranger: '10.231.0.66',
  internet: {
    gateway4: '198.51.100.1',
    gateway6: '2001:db8:100::1',
    web4: '198.51.100.10',
    web6: '2001:db8:100::10',
    dns: '198.51.100.53',
    name: 'www.example.test',
  },
} as const;

/** The tools the rig needs besides the topology's. */
export const SYSTEM_TOOLS = ['wg', 'wireguard-go', 'ping'];

const GATEHOUSE_PORTAL = fileURLToPath(
  new URL('../../apps/portal/bin/gatehouse-portal', import.meta.url),
);
const WEB_SERVER = fileURLToPath(new URL('../fixtures/resource-web-server.ts', import.meta.url));
const DNS_SERVER = fileURLToPath(new URL('../fixtures/upstream-dns-server.ts', import.meta.url));
const HTTP_PROBE = fileURLToPath(new URL('../fixtures/http-probe.ts', import.meta.url));
const READY_TIMEOUT_MS = 10_000;
const GATEWAY_READY_TIMEOUT_MS = 20_000;
/** The gateway tears down its table, TUN and sysctls on SIGTERM: give it time. */
const GATEWAY_STOP_GRACE_MS = 10_000;
const STATUS_LINE_TIMEOUT_MS = 5_000;
/** What `gatehouse-tunnel serve` says once its control socket listens. */
const DAEMON_READY = 'no tunnel up';
const DAEMON_UP_TIMEOUT_MS = 70_000;
const DEFAULT_PROBE_TIMEOUT_MS = 3_000;
const POLL_MS = 250;

/** The part of `gatehouse-tunnel status --json` these tests read. */
export interface ClientStatus {
  state: string;
  failure?: { reason: string; message: string } | null;
  portal?: {
    connection: string;
    identity?: { accountSlug: string; actorName: string };
    resources: { name: string; type: string; authorized: boolean; siteStatus: string }[];
    lastError?: string;
    counters: Record<string, number>;
  };
}

export interface HeadlessClient {
  /** `gatehouse-tunnel up` in the foreground, or the daemon (`serve`) running the tunnel. */
  readonly process: NamespaceProcess;
  readonly socket: string;
  /** `gatehouse-tunnel status --json`; undefined while nothing answers on the socket. */
  status(): Promise<ClientStatus | undefined>;
  /** Until the tunnel is up and joined to the portal; throws with the client's output otherwise. */
  untilConnected(timeoutMs: number): Promise<ClientStatus>;
  /** Until the process exits (bounded): its exit. */
  untilExit(timeoutMs: number): Promise<ProcessExit>;
}

export interface DaemonClient extends HeadlessClient {
  /** What `up` printed once the daemon took the tunnel. */
  readonly upOutput: string;
}

export interface ClientToken {
  /** A secret: never print it. */
  token: string;
  id: string;
}

export interface SystemRig {
  readonly topology: Topology;
  readonly internetHost: { namespace: string; web: NamespaceProcess; dns: NamespaceProcess };
  readonly late: NamespaceProcess;
  readonly stranger: string;
  /** The portal process now running (a restart replaces it). */
  portal(): NamespaceProcess;
  /** The gateway process now running; undefined before startGateway(). */
  gateway(): NamespaceProcess | undefined;
  startGateway(): Promise<NamespaceProcess>;
  restartPortal(): Promise<void>;
  restartGateway(): Promise<void>;
  /** The gateway's WireGuard public key (from the private key in its state directory). */
  gatewayPublicKey(): Promise<string>;
  /** SIGUSR1 to the gateway and the status line it logs. */
  gatewayStatusLine(): Promise<string>;
  /** A token for the service account, made by `gatehouse-portal token create`. */
  createClientToken(): Promise<ClientToken>;
  /** `gatehouse-tunnel up --portal …` (topology.startClient: in the foreground, no daemon runs). */
  startClient(token: ClientToken): HeadlessClient;
  /**
   * `gatehouse-tunnel serve` in the client's namespace and /etc, and `up --portal` handed to it
   * (returns once the daemon answered).
   */
  startDaemonClient(token: ClientToken): Promise<DaemonClient>;
  /** GET `url` from the client (its namespace and /etc). */
  probe(url: string, timeoutMs?: number): Promise<HttpProbeResult>;
  /** The client's first IPv4 address for `name` (getent ahostsv4), '' when none. */
  resolve(name: string): Promise<string>;
  /** The web servers' request lines seen so far (resource LAN, lab-late, internet host). */
  webLog(): string;
  diagnostics(): string;
  stop(): Promise<void>;
}

export async function startSystemRig(log: (line: string) => void = () => {}): Promise<SystemRig> {
  const topology = await startTopology({ purpose: 'syse2e', orgFile: SYSTEM_ORG.file, log });
  try {
    return await extend(topology);
  } catch (error) {
    const tails = topology.diagnostics();
    await topology.stop();
    if (error instanceof Error && tails !== '') error.message += `\n${tails}`;
    throw error;
  }
}

/** A probe result in one line, for messages. */
export function describeProbe(result: HttpProbeResult): string {
  return result.ok
    ? `${result.status} "${result.firstLine}" in ${Math.round(result.milliseconds)} ms`
    : `${result.error} after ${Math.round(result.milliseconds)} ms`;
}

/** `{a=1 b=2}` groups of the gateway's status line → the named group's numbers. */
export function statusCounts(line: string, group: string): Record<string, number> {
  const match = new RegExp(`(?:^|[ ,:])${group} \\{([^}]*)\\}`).exec(line);
  const counts: Record<string, number> = {};
  for (const pair of (match?.[1] ?? '').split(' ')) {
    const [name, value] = pair.split('=');
    if (name !== undefined && name !== '' && value !== undefined) counts[name] = Number(value);
  }
  return counts;
}

/** Polls `attempt` until it returns a value (not undefined) or `timeoutMs` passes. */
export async function until<T>(
  what: string,
  timeoutMs: number,
  attempt: () => Promise<T | undefined>,
  lastSeen: () => string = () => '',
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await attempt();
    if (value !== undefined) return value;
    if (performance.now() > deadline) {
      const seen = lastSeen();
      throw new Error(`${what}: not within ${timeoutMs} ms${seen === '' ? '' : ` (${seen})`}`);
    }
    await sleep(POLL_MS);
  }
}

async function extend(topology: Topology): Promise<SystemRig> {
  const { network, namespaces, certificates } = topology;
  const { internet } = SYSTEM_NET;

  const ip = (namespace: string, args: string): Promise<unknown> =>
    runCommand(['ip', '-n', namespace, ...args.split(' ')]);

  // The internet beyond the gateway: a third leg with both families, and default routes to it.
  const internetNamespace = await network.addNamespace();
  await network.addVethPair(
    { namespace: namespaces.gateway, name: 'wan0', address: `${internet.gateway4}/24` },
    { namespace: internetNamespace, name: 'eth0', address: `${internet.web4}/24` },
  );
  await ip(namespaces.gateway, `addr add ${internet.gateway6}/64 dev wan0 nodad`);
  await ip(internetNamespace, `addr add ${internet.web6}/64 dev eth0 nodad`);
  await ip(internetNamespace, `addr add ${internet.dns}/32 dev eth0`);
  await ip(namespaces.gateway, `route add default via ${internet.web4}`);
  await ip(namespaces.gateway, `-6 route add default via ${internet.web6}`);
  const internetWeb = network.spawn(internetNamespace, [
    process.execPath,
    WEB_SERVER,
    `${internet.web4}:80=internet-web4`,
    `[${internet.web6}]:80=internet-web6`,
  ]);
  const internetDns = network.spawn(internetNamespace, [
    process.execPath,
    DNS_SERVER,
    internet.dns,
    internet.name,
    internet.web4,
  ]);

  // lab-late: one more address and web server on the resource LAN.
  await ip(namespaces.resource, `addr add ${SYSTEM_NET.late}/32 dev eth0`);
  const late = network.spawn(namespaces.resource, [
    process.execPath,
    WEB_SERVER,
    `${SYSTEM_NET.late}:80=lab-late`,
  ]);

  // The stranger: one more port on the internet bridge.
  const stranger = await network.addNamespace();
  await ip(namespaces.internet, `link add stranger type veth peer name eth0 netns ${stranger}`);
  await ip(namespaces.internet, 'link set stranger master br0 up');
  await ip(stranger, `addr add ${SYSTEM_NET.stranger}/24 dev eth0`);
  await ip(stranger, 'link set eth0 up');

  await Promise.all([
    untilOutput(internetWeb, 'ready', READY_TIMEOUT_MS),
    untilOutput(internetDns, 'ready', READY_TIMEOUT_MS),
    untilOutput(late, 'ready', READY_TIMEOUT_MS),
  ]);
  // Both families answer from the gateway before any test relies on them.
  for (const [family, address] of [
    ['-4', internet.web4],
    ['-6', internet.web6],
  ] as const) {
    await network.exec(namespaces.gateway, ['ping', family, '-c', '1', '-w', '5', address], {
      timeoutMs: 10_000,
    });
  }

  let portalProcess = topology.portal.process;
  let gatewayProcess: NamespaceProcess | undefined;
  const clientMounts = topology.clientMounts;

  const startGateway = async (): Promise<NamespaceProcess> => {
    const started = topology.startGateway();
    gatewayProcess = started;
    await untilOutput(started, GATEWAY_JOINED, GATEWAY_READY_TIMEOUT_MS);
    return started;
  };

  const statusLine = async (): Promise<string> => {
    const gateway = gatewayProcess;
    if (gateway?.running !== true || gateway.child.pid === undefined) {
      throw new Error('the gateway is not running');
    }
    const before = gateway.output().length;
    process.kill(gateway.child.pid, 'SIGUSR1');
    return until(
      'the gateway status line after SIGUSR1',
      STATUS_LINE_TIMEOUT_MS,
      async () => {
        const fresh = gateway.output().slice(Math.max(0, before - 1));
        return /status: portal [^\n]*/.exec(fresh)?.[0];
      },
      () => gateway.output().slice(-400),
    );
  };

  const statusAt = async (socket: string): Promise<ClientStatus | undefined> => {
    try {
      const { stdout } = await clientMounts.run(
        [GATEHOUSE_TUNNEL, 'status', '--json', '--socket', socket],
        { timeoutMs: 10_000 },
      );
      return JSON.parse(stdout) as ClientStatus;
    } catch {
      return undefined;
    }
  };

  /** The client API over `started` (the foreground client, or the daemon) answering on `socket`. */
  const headlessClient = (started: NamespaceProcess, socket: string): HeadlessClient => {
    const status = () => statusAt(socket);
    let lastStatus: ClientStatus | undefined;
    return {
      process: started,
      socket,
      status,
      untilConnected: (timeoutMs) =>
        until(
          'the client connected to the portal with its tunnel up',
          timeoutMs,
          async () => {
            if (!started.running) {
              throw new Error(`gatehouse-tunnel exited:\n${tail(started)}`);
            }
            lastStatus = await status();
            return lastStatus?.state === 'connected' &&
              lastStatus.portal?.connection === 'connected'
              ? lastStatus
              : undefined;
          },
          () =>
            `last status ${JSON.stringify(lastStatus?.state)} / portal ` +
            `${JSON.stringify(lastStatus?.portal?.connection)}; output:\n${tail(started)}`,
        ),
      untilExit: async (timeoutMs) => {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), timeoutMs);
        });
        const outcome = await Promise.race([started.exited, timeout]);
        clearTimeout(timer);
        if (outcome === 'timeout') {
          throw new Error(`gatehouse-tunnel still runs after ${timeoutMs} ms:\n${tail(started)}`);
        }
        return outcome;
      },
    };
  };

  const startClient = (token: ClientToken): HeadlessClient => {
    const { process: started, socket } = topology.startClient(token.token);
    return headlessClient(started, socket);
  };

  const startDaemonClient = async (token: ClientToken): Promise<DaemonClient> => {
    const socket = join(topology.work, 'client', 'daemon.sock');
    const serve = clientMounts.spawn([GATEHOUSE_TUNNEL, 'serve', '--socket', socket]);
    await untilOutput(serve, DAEMON_READY, READY_TIMEOUT_MS);
    const tokenFile = join(topology.work, 'client', 'daemon-token');
    writeFileSync(tokenFile, `${token.token}\n`, { mode: 0o600 });
    const up = await clientMounts.run(
      [
        GATEHOUSE_TUNNEL,
        'up',
        '--portal',
        topology.portal.origin,
        '--token-file',
        tokenFile,
        '--ca-file',
        certificates.caFile,
        '--socket',
        socket,
      ],
      { timeoutMs: DAEMON_UP_TIMEOUT_MS },
    );
    return { ...headlessClient(serve, socket), upOutput: up.stdout };
  };

  const probe = async (
    url: string,
    timeoutMs = DEFAULT_PROBE_TIMEOUT_MS,
  ): Promise<HttpProbeResult> => {
    const { stdout } = await clientMounts.run(
      [process.execPath, HTTP_PROBE, url, String(timeoutMs)],
      {
        timeoutMs: timeoutMs + 10_000,
      },
    );
    return JSON.parse(stdout) as HttpProbeResult;
  };

  return {
    topology,
    internetHost: { namespace: internetNamespace, web: internetWeb, dns: internetDns },
    late,
    stranger,
    portal: () => portalProcess,
    gateway: () => gatewayProcess,
    startGateway,
    restartPortal: async () => {
      await portalProcess.stop();
      portalProcess = network.spawn(namespaces.portal, [
        GATEHOUSE_PORTAL,
        '--db',
        topology.portal.database,
        'serve',
        '--listen',
        `${TOPOLOGY.internet.portal}:443`,
        '--tls-cert',
        certificates.certFile,
        '--tls-key',
        certificates.keyFile,
      ]);
      await untilOutput(portalProcess, 'listening on', READY_TIMEOUT_MS);
    },
    restartGateway: async () => {
      const exit = await gatewayProcess?.stop(GATEWAY_STOP_GRACE_MS);
      if (exit !== undefined && exit.code !== 0) {
        throw new Error(
          `gatehouse-gateway exited with ${exit.code ?? exit.signal} on SIGTERM, not 0:\n` +
            `${gatewayProcess === undefined ? '' : tail(gatewayProcess)}`,
        );
      }
      await startGateway();
    },
    gatewayPublicKey: async () => {
      const privateKey = readFileSync(
        join(topology.work, 'gateway', 'state', 'private-key'),
        'utf8',
      );
      return (await runCommand(['wg', 'pubkey'], { input: privateKey })).stdout.trim();
    },
    gatewayStatusLine: statusLine,
    createClientToken: async () => {
      const created = await topology.portalCli([
        'token',
        'create',
        '--service-account',
        SYSTEM_ORG.serviceAccount,
        '--account',
        SYSTEM_ORG.account,
      ]);
      const token = created.stdout.trim();
      const id = /created token (\S+)/.exec(created.stderr)?.[1];
      if (token === '' || /\s/.test(token) || id === undefined) {
        throw new Error(`gatehouse-portal token create printed no token: ${created.stderr.trim()}`);
      }
      return { token, id };
    },
    startClient,
    startDaemonClient,
    probe,
    resolve: async (name) => {
      try {
        const { stdout } = await clientMounts.run(['getent', 'ahostsv4', name], {
          timeoutMs: 10_000,
        });
        return stdout.trim().split(/\s+/)[0] ?? '';
      } catch {
        return '';
      }
    },
    webLog: () =>
      [topology.resource.web, late, internetWeb].map((server) => server.output()).join(''),
    diagnostics: () => topology.diagnostics(),
    stop: () => topology.stop(),
  };
}

function tail(started: NamespaceProcess, lines = 30): string {
  return started.output().trimEnd().split('\n').slice(-lines).join('\n');
}
