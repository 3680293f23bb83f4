/**
 * The demo topology of `npm start`, reusable by end-to-end tests and
 * `npm run bench:gateway`: five network namespaces
 *
 *   client 10.231.0.100 ─┐
 *   portal 10.231.0.1  ──┼── internet (a bridge) ── 10.231.0.2 gateway 10.232.0.1 ── resource LAN
 *                        │                                                     10.232.0.10 web (:80, :8080)
 *                                                                              10.232.0.11 app.demo.internal
 *                                                                              10.232.0.20 admin page
 *                                                                              10.232.0.53 DNS
 *
 * The client reaches the portal and the gateway's outer address only; the
 * resource LAN is the gateway's other leg. A CA is made for the run, the
 * portal serves HTTPS/WSS on 10.231.0.1:443 with a certificate it signed, the
 * organisation file (default test/start/demo-org.yaml) is applied and a
 * gateway token made for its site. The gateway and the client each get a
 * private /etc (the gateway's resolv.conf names the LAN's DNS server; the
 * client's is rewritten by gatehouse-tunnel); `startGateway()` starts
 * `gatehouse-gateway` in its namespace.
 *
 * Addresses are fixed: they live inside this run's namespaces, so runs do not
 * collide. `stop()` (or the TestNetwork's own signal and exit handlers)
 * deletes the namespaces, their processes and the temporary directory, also
 * when building failed halfway.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { makeRunCertificates } from '../start/certificates.ts';
import type { RunCertificates } from '../start/certificates.ts';
import { runCommand, TestNetwork } from './netns.ts';
import type { CommandOptions, CommandResult, NamespaceProcess, SpawnOptions } from './netns.ts';

export const TOPOLOGY = {
  internet: { prefix: 24, portal: '10.231.0.1', gateway: '10.231.0.2', client: '10.231.0.100' },
  lan: {
    prefix: 24,
    gateway: '10.232.0.1',
    web: '10.232.0.10',
    app: '10.232.0.11',
    admin: '10.232.0.20',
    dns: '10.232.0.53',
  },
  /** What the web server on `lan.web` answers besides :80 (outside lab-web's filter). */
  outsideFilterPort: 8080,
  gatewayListenPort: 51820,
  appName: 'app.demo.internal',
  portalName: 'portal.demo.internal',
} as const;

/** What test/start/demo-org.yaml defines (a different orgFile brings its own). */
export const DEMO_ORG = {
  account: 'demo',
  site: 'lab',
  user: { name: 'dana', email: 'dana@demo.internal', password: 'dana-demo-password' },
} as const;

/** The tools a topology needs on PATH (nft: the gateway's). */
/** What gatehouse-gateway prints once the portal's init arrived. */
export const GATEWAY_JOINED = /joined the portal/;
/** What `gatehouse-tunnel up --portal` prints once the portal configured the tunnel. */
export const CLIENT_UP = / is up; control socket/;

export const TOPOLOGY_TOOLS = ['ip', 'unshare', 'nsenter', 'mount', 'openssl', 'getent', 'nft'];

export const DEMO_ORG_FILE = fileURLToPath(new URL('../start/demo-org.yaml', import.meta.url));
const GATEHOUSE_PORTAL = fileURLToPath(
  new URL('../../apps/portal/bin/gatehouse-portal', import.meta.url),
);
const GATEHOUSE_GATEWAY = fileURLToPath(
  new URL('../../apps/gateway/bin/gatehouse-gateway', import.meta.url),
);
export const GATEHOUSE_TUNNEL = fileURLToPath(
  new URL('../../apps/tunnel-service/bin/gatehouse-tunnel', import.meta.url),
);
const WEB_SERVER = fileURLToPath(new URL('../fixtures/resource-web-server.ts', import.meta.url));
const DNS_SERVER = fileURLToPath(new URL('../fixtures/upstream-dns-server.ts', import.meta.url));
const READY_TIMEOUT_MS = 10_000;
const PORTAL_COMMAND_TIMEOUT_MS = 20_000;
const GATEWAY_ID = 'lab-gateway-1';
const CLIENT_RESOLV_CONF =
  "# the client's own resolver before the tunnel: nothing answers there on this network\n" +
  'nameserver 10.231.0.53\n';

export interface TopologyOptions {
  /** An existing network to build in (a caller that installed its own signal handlers first). */
  network?: TestNetwork;
  /** Namespace names' purpose, when no network is given (default `topo`). */
  purpose?: string;
  /** The organisation applied to the portal (default test/start/demo-org.yaml). */
  orgFile?: string;
  /** The site whose gateway token is made (default `lab`). */
  site?: string;
  /** One line per step, with figures. */
  log?: (line: string) => void;
}

/** A private /etc (and /var/lib) for the processes of one namespace, alive until stop(). */
export interface PrivateMounts {
  /** The copy's resolv.conf, as seen from the host. */
  readonly resolvConf: string;
  /** The pid whose mount namespace holds the copy (for `nsenter --target PID --mount --net`). */
  readonly holderPid: number;
  run(argv: readonly string[], options?: CommandOptions): Promise<CommandResult>;
  spawn(argv: readonly string[], options?: SpawnOptions): NamespaceProcess;
  replaceResolvConf(content: string): void;
}

export interface Topology {
  readonly network: TestNetwork;
  /** The run's temporary directory (mode 0700); removed by stop(). */
  readonly work: string;
  readonly namespaces: {
    internet: string;
    portal: string;
    gateway: string;
    resource: string;
    client: string;
  };
  readonly certificates: RunCertificates;
  readonly portal: {
    /** https://10.231.0.1 (the sign-in pages; `wss:` on the same origin for the channels). */
    origin: string;
    database: string;
    process: NamespaceProcess;
  };
  /** The site's gateway token. A secret: never print it. */
  readonly gatewayToken: string;
  readonly gatewayTokenId: string;
  readonly gatewayMounts: PrivateMounts;
  readonly clientMounts: PrivateMounts;
  readonly resource: { web: NamespaceProcess; dns: NamespaceProcess };
  /** `gatehouse-portal --db <the run's database> ARGS` on the host. */
  portalCli(args: readonly string[]): Promise<CommandResult>;
  /** Starts gatehouse-gateway in the gateway namespace (GATEHOUSE_TOKEN, GATEHOUSE_ID, --portal, --endpoint, --ca-file). */
  startGateway(extraArgs?: readonly string[]): NamespaceProcess;
  /**
   * Writes `token` to a token file (root, 0600) and starts `gatehouse-tunnel up --portal` in
   * the foreground with the client's private /etc; `args` is the command line without the
   * token, for printing.
   */
  startClient(token: string, extraArgs?: readonly string[]): TopologyClient;
  /** The last lines of every process's output, for a failure report. */
  diagnostics(): string;
  stop(): Promise<void>;
  /** For signal handlers: kills without grace. */
  stopSync(): void;
}

export interface TopologyClient {
  readonly process: NamespaceProcess;
  readonly tokenFile: string;
  /** Its control socket (`gatehouse-tunnel status --socket …`). */
  readonly socket: string;
  /** gatehouse-tunnel's arguments (the token is in the file, not here). */
  readonly args: readonly string[];
}

export async function startTopology(options: TopologyOptions = {}): Promise<Topology> {
  const network = options.network ?? TestNetwork.create(options.purpose ?? 'topo');
  const log = options.log ?? (() => {});
  const work = mkdtempSync(join(tmpdir(), `gh-${network.purpose}-`));
  network.onDestroy(() => rmSync(work, { recursive: true, force: true }));
  try {
    return await build(network, work, options, log);
  } catch (error) {
    const tails = diagnostics(network);
    await network.destroy();
    if (error instanceof Error && tails !== '') error.message += `\n${tails}`;
    throw error;
  }
}

async function build(
  network: TestNetwork,
  work: string,
  options: TopologyOptions,
  log: (line: string) => void,
): Promise<Topology> {
  const { internet, lan } = TOPOLOGY;
  const namespaces = {
    internet: await network.addNamespace(),
    portal: await network.addNamespace(),
    gateway: await network.addNamespace(),
    resource: await network.addNamespace(),
    client: await network.addNamespace(),
  };
  await runCommand(['ip', '-n', namespaces.internet, 'link', 'add', 'br0', 'type', 'bridge']);
  await runCommand(['ip', '-n', namespaces.internet, 'link', 'set', 'br0', 'up']);
  for (const [host, address] of [
    ['portal', internet.portal],
    ['gateway', internet.gateway],
    ['client', internet.client],
  ] as const) {
    await bridgePort(namespaces.internet, host, namespaces[host], `${address}/${internet.prefix}`);
  }
  await network.addVethPair(
    { namespace: namespaces.gateway, name: 'lan0', address: `${lan.gateway}/${lan.prefix}` },
    { namespace: namespaces.resource, name: 'eth0', address: `${lan.web}/${lan.prefix}` },
  );
  for (const address of [lan.app, lan.admin, lan.dns]) {
    await network.exec(namespaces.resource, ['ip', 'addr', 'add', `${address}/32`, 'dev', 'eth0']);
  }
  log(
    `network: namespaces portal ${namespaces.portal} (${internet.portal}), gateway ` +
      `${namespaces.gateway} (${internet.gateway} | ${lan.gateway}), resource ${namespaces.resource} ` +
      `(${lan.web}, ${lan.app}, ${lan.admin}, DNS ${lan.dns}), client ${namespaces.client} ` +
      `(${internet.client}); portal, gateway and client on a bridge in ${namespaces.internet}`,
  );

  const resource = await startResourceHost(network, namespaces.resource);
  log(
    `resource host: web servers lab-web http://${lan.web}/ and :${TOPOLOGY.outsideFilterPort}, ` +
      `app http://${lan.app}/, lab-admin http://${lan.admin}/; DNS on ${lan.dns}:53: ` +
      `${TOPOLOGY.appName} -> ${lan.app}`,
  );

  const certificates = await makeRunCertificates(work, {
    names: [internet.portal, TOPOLOGY.portalName],
    commonName: TOPOLOGY.portalName,
  });
  log(
    `CA for this run: ${certificates.caFile} (SHA-256 ${certificates.caFingerprint.slice(0, 23)}…); ` +
      `it signed the portal's certificate for ${internet.portal} and ${TOPOLOGY.portalName}`,
  );

  const database = join(work, 'portal.sqlite');
  const portalCli = (args: readonly string[]) =>
    runCommand([GATEHOUSE_PORTAL, '--db', database, ...args], {
      timeoutMs: PORTAL_COMMAND_TIMEOUT_MS,
    });
  const orgFile = options.orgFile ?? DEMO_ORG_FILE;
  const applied = await portalCli(['apply', orgFile]);
  const changes = applied.stdout.trim().split('\n');
  log(
    `portal: gatehouse-portal apply ${orgFile}: ${changes.length} changes (${summarise(changes)})`,
  );
  const site = options.site ?? DEMO_ORG.site;
  const created = await portalCli(['token', 'create', '--gateway', site]);
  const gatewayToken = created.stdout.trim();
  const gatewayTokenId = /created token (\S+)/.exec(created.stderr)?.[1] ?? '(unknown id)';
  if (gatewayToken === '' || /\s/.test(gatewayToken)) {
    throw new Error(`gatehouse-portal token create printed no token: ${created.stderr.trim()}`);
  }
  log(
    `portal: a gateway token for site ${site}: id ${gatewayTokenId} (the token itself is not shown)`,
  );

  const origin = `https://${internet.portal}`;
  const portalProcess = network.spawn(namespaces.portal, [
    GATEHOUSE_PORTAL,
    '--db',
    database,
    'serve',
    '--listen',
    `${internet.portal}:443`,
    '--tls-cert',
    certificates.certFile,
    '--tls-key',
    certificates.keyFile,
  ]);
  await untilOutput(portalProcess, 'listening on', READY_TIMEOUT_MS);
  log(
    `portal: gatehouse-portal serve on ${origin} (TLS) in ${namespaces.portal}, database ${database}`,
  );

  const gatewayMounts = await startPrivateMounts(
    network,
    namespaces.gateway,
    join(work, 'gateway'),
  );
  gatewayMounts.replaceResolvConf(
    `# the gateway resolves DNS resources with the LAN's server\nnameserver ${lan.dns}\n`,
  );
  const clientMounts = await startPrivateMounts(network, namespaces.client, join(work, 'client'));
  clientMounts.replaceResolvConf(CLIENT_RESOLV_CONF);

  const startGateway = (extraArgs: readonly string[] = []): NamespaceProcess =>
    gatewayMounts.spawn(
      [
        GATEHOUSE_GATEWAY,
        '--portal',
        origin,
        '--endpoint',
        `${internet.gateway}:${TOPOLOGY.gatewayListenPort}`,
        '--listen-port',
        String(TOPOLOGY.gatewayListenPort),
        '--ca-file',
        certificates.caFile,
        '--state-dir',
        join(work, 'gateway', 'state'),
        ...extraArgs,
      ],
      { env: { GATEHOUSE_TOKEN: gatewayToken, GATEHOUSE_ID: GATEWAY_ID } },
    );

  const startClient = (token: string, extraArgs: readonly string[] = []): TopologyClient => {
    const tokenFile = join(work, 'client', 'token');
    rmSync(tokenFile, { force: true });
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    const socket = join(work, 'client', 'tunnel.sock');
    const args = [
      'up',
      '--portal',
      origin,
      '--token-file',
      tokenFile,
      '--ca-file',
      certificates.caFile,
      '--socket',
      socket,
      ...extraArgs,
    ];
    return { process: clientMounts.spawn([GATEHOUSE_TUNNEL, ...args]), tokenFile, socket, args };
  };

  return {
    network,
    work,
    namespaces,
    certificates,
    portal: { origin, database, process: portalProcess },
    gatewayToken,
    gatewayTokenId,
    gatewayMounts,
    clientMounts,
    resource,
    portalCli,
    startGateway,
    startClient,
    diagnostics: () => diagnostics(network),
    stop: () => network.destroy(),
    stopSync: () => network.destroySync(),
  };
}

/** Waits until `process` has printed `text`; throws with its output if it exits or the time is up. */
export async function untilOutput(
  process: NamespaceProcess,
  text: string | RegExp,
  timeoutMs: number,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  const seen = () =>
    typeof text === 'string' ? process.output().includes(text) : text.test(process.output());
  while (!seen()) {
    if (!process.running) {
      throw new Error(
        `${process.description} exited before saying "${String(text)}":\n${tail(process)}`,
      );
    }
    if (performance.now() > deadline) {
      throw new Error(
        `${process.description} did not say "${String(text)}" within ${timeoutMs} ms:\n${tail(process)}`,
      );
    }
    await sleep(25);
  }
}

/** `created user demo/dana …` lines → "1 account, 1 user, …". */
export function summarise(applyLines: readonly string[]): string {
  const counts = new Map<string, number>();
  for (const line of applyLines) {
    const kind = /^(?:created|updated|deleted) (service account|\w+)/.exec(line)?.[1];
    if (kind !== undefined) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  }
  const plural = (kind: string) => (kind.endsWith('y') ? `${kind.slice(0, -1)}ies` : `${kind}s`);
  return [...counts]
    .map(([kind, count]) => `${count} ${count === 1 ? kind : plural(kind)}`)
    .join(', ');
}

function tail(process: NamespaceProcess, lines = 20): string {
  return process.output().trimEnd().split('\n').slice(-lines).join('\n');
}

function diagnostics(network: TestNetwork): string {
  return network.processes
    .filter((started) => !['', 'ready'].includes(started.output().trim()))
    .map((started) => `--- ${started.description} (output tail) ---\n${tail(started)}`)
    .join('\n');
}

/** A veth from a bridge port in `bridgeNamespace` to `eth0` (addressed, up) in `namespace`. */
async function bridgePort(
  bridgeNamespace: string,
  portName: string,
  namespace: string,
  address: string,
): Promise<void> {
  const inBridge = ['ip', '-n', bridgeNamespace, 'link'];
  await runCommand([
    ...inBridge,
    'add',
    portName,
    'type',
    'veth',
    'peer',
    'name',
    'eth0',
    'netns',
    namespace,
  ]);
  await runCommand([...inBridge, 'set', portName, 'master', 'br0', 'up']);
  await runCommand(['ip', '-n', namespace, 'addr', 'add', address, 'dev', 'eth0']);
  await runCommand(['ip', '-n', namespace, 'link', 'set', 'eth0', 'up']);
}

async function startResourceHost(
  network: TestNetwork,
  namespace: string,
): Promise<{ web: NamespaceProcess; dns: NamespaceProcess }> {
  const { lan } = TOPOLOGY;
  const web = network.spawn(namespace, [
    process.execPath,
    WEB_SERVER,
    `${lan.web}:80=lab-web`,
    `${lan.web}:${TOPOLOGY.outsideFilterPort}=lab-web-${TOPOLOGY.outsideFilterPort}`,
    `${lan.app}:80=app`,
    `${lan.admin}:80=lab-admin`,
  ]);
  const dns = network.spawn(namespace, [
    process.execPath,
    DNS_SERVER,
    lan.dns,
    TOPOLOGY.appName,
    lan.app,
  ]);
  await Promise.all([
    untilOutput(web, 'ready', READY_TIMEOUT_MS),
    untilOutput(dns, 'ready', READY_TIMEOUT_MS),
  ]);
  return { web, dns };
}

/**
 * Like private-etc.ts, with a holder that lives until the network is
 * destroyed (a `--keep` run outlives any fixed sleep) and spawn taking an
 * environment (the gateway's token goes there, never into argv).
 */
async function startPrivateMounts(
  network: TestNetwork,
  namespace: string,
  directory: string,
): Promise<PrivateMounts> {
  const holder = network.spawn(namespace, [
    'unshare',
    '--mount',
    '--propagation',
    'private',
    '--',
    'sh',
    '-c',
    `mkdir -p "${directory}" && cp -a /etc "${directory}/etc" && mkdir "${directory}/var-lib" && ` +
      `mount --bind "${directory}/etc" /etc && mount --bind "${directory}/var-lib" /var/lib && ` +
      'echo ready && exec sleep infinity',
  ]);
  await untilOutput(holder, 'ready', READY_TIMEOUT_MS);
  const holderPid = holder.child.pid as number;
  const enter = ['nsenter', `--target=${holderPid}`, '--mount', '--net', '--'];
  const resolvConf = join(directory, 'etc', 'resolv.conf');
  return {
    resolvConf,
    holderPid,
    run: (argv, commandOptions) => runCommand([...enter, ...argv], commandOptions),
    spawn: (argv, spawnOptions) => network.spawn(namespace, [...enter, ...argv], spawnOptions),
    replaceResolvConf: (content) => {
      // The copy may be a symlink to the host's: replace it, never write through.
      rmSync(resolvConf, { force: true });
      writeFileSync(resolvConf, content);
    },
  };
}
