/**
 * `npm start [-- --keep | --check]`: the whole product on one machine, in
 * network namespaces (test/lib/topology.ts): a portal with TLS from a CA
 * made for the run, a gateway next to a resource host (web servers and a DNS
 * name), and a client. The demo organisation (demo-org.yaml) is applied, the
 * demo user signs in on the sign-in page in Debian's Chromium and the
 * gatehouse:// deep link is caught as the desktop app would; the headless
 * client connects with that token, fetches the resource by address and by
 * name, finds the forbidden resource and a port outside the filter
 * unreachable, and times one transfer through the gateway. Then everything
 * is torn down. `--keep` keeps it running until Ctrl-C and prints what to
 * try; `--check` is the default.
 *
 * The last stdout line is a contract other checks read:
 *   start: ok
 *   start: FAIL <reason>           (exit status 1; 2 for a bad option, 130/143 when interrupted)
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { listNamespaces, missingTools, requireRoot, TestNetwork } from '../lib/netns.ts';
import type { NamespaceProcess } from '../lib/netns.ts';
import {
  CLIENT_UP,
  DEMO_ORG,
  GATEHOUSE_TUNNEL,
  GATEWAY_JOINED,
  startTopology,
  TOPOLOGY,
  TOPOLOGY_TOOLS,
  untilOutput,
} from '../lib/topology.ts';
import type { PrivateMounts, Topology } from '../lib/topology.ts';
import { CHROMIUM, signInWithChromium } from '../lib/topology-sign-in.ts';
import type { HttpProbeResult } from '../fixtures/http-probe.ts';

const RUN_TIMEOUT_MS = 150_000;
const GATEWAY_READY_TIMEOUT_MS = 20_000;
const CLIENT_READY_TIMEOUT_MS = 30_000;
const PROBE_TIMEOUT_MS = 3_000;
const STATUS_TIMEOUT_MS = 3_000;
const TRANSFER_BYTES = 50 * 1024 * 1024;
const TRANSFER_TIMEOUT_MS = 60_000;
const HTTP_PROBE = fileURLToPath(new URL('../fixtures/http-probe.ts', import.meta.url));
const GATEHOUSE_PORTAL = fileURLToPath(
  new URL('../../apps/portal/bin/gatehouse-portal', import.meta.url),
);
const hasCurl = missingTools(['curl']).length === 0;

class StartFailure extends Error {
  /** False for a failure whose reason says it all (a part not built yet): no process tails. */
  readonly diagnose: boolean;
  constructor(message: string, diagnose = true) {
    super(message);
    this.diagnose = diagnose;
  }
}

let topology: Topology | undefined;
let network: TestNetwork | undefined;
let watchdog: NodeJS.Timeout | undefined;
let keeping = false;
let finished = false;

function say(line: string): void {
  console.log(`start: ${line}`);
}

function indented(text: string): void {
  for (const line of text.trimEnd().split('\n')) console.log(line === '' ? '' : `    ${line}`);
}

function finish(outcome: { ok: true } | { ok: false; reason: string; exitCode?: number }): never {
  finished = true;
  if (outcome.ok) {
    say('ok');
    process.exit(0);
  }
  say(`FAIL ${outcome.reason.replace(/\s+/g, ' ').trim()}`);
  process.exit(outcome.exitCode ?? 1);
}

/** For the watchdog and signals: nothing can be awaited, so tear down synchronously. */
function stopNow(reason: string, exitCode?: number): void {
  if (finished) return;
  network?.destroySync();
  if (keeping) {
    say('stopped: removed the namespaces, their processes and the temporary directory');
    finish({ ok: true });
  }
  finish({ ok: false, reason, ...(exitCode === undefined ? {} : { exitCode }) });
}

function megabitsPerSecond(bytes: number, milliseconds: number): number {
  return (bytes * 8) / (milliseconds * 1000);
}

/** GET `url` from inside `where` (a namespace or private mounts); the probe's answer. */
async function probe(
  topo: Topology,
  where: string | PrivateMounts,
  url: string,
  timeoutMs = PROBE_TIMEOUT_MS,
  caFile?: string,
): Promise<HttpProbeResult> {
  const argv = [
    process.execPath,
    HTTP_PROBE,
    url,
    String(timeoutMs),
    ...(caFile === undefined ? [] : [caFile]),
  ];
  const options = { timeoutMs: timeoutMs + 10_000 };
  const { stdout } =
    typeof where === 'string'
      ? await topo.network.exec(where, argv, options)
      : await where.run(argv, options);
  return JSON.parse(stdout) as HttpProbeResult;
}

function describe(result: HttpProbeResult): string {
  return result.ok
    ? `${result.status} "${result.firstLine}" in ${Math.round(result.milliseconds)} ms`
    : `${result.error} after ${Math.round(result.milliseconds)} ms`;
}

async function mustFetch(
  topo: Topology,
  where: string | PrivateMounts,
  url: string,
  what: string,
  caFile?: string,
): Promise<HttpProbeResult & { ok: true }> {
  const result = await probe(topo, where, url, PROBE_TIMEOUT_MS, caFile);
  if (!result.ok || result.status >= 400) {
    throw new StartFailure(`${what}: GET ${url}: ${describe(result)}`);
  }
  return result;
}

async function mustNotReach(
  topo: Topology,
  where: string | PrivateMounts,
  url: string,
  what: string,
): Promise<string> {
  const result = await probe(topo, where, url);
  if (result.ok) throw new StartFailure(`${what}: GET ${url} was answered: ${describe(result)}`);
  return describe(result);
}

async function resolveName(mounts: PrivateMounts, name: string): Promise<string> {
  const { stdout } = await mounts.run(['getent', 'ahostsv4', name], { timeoutMs: 10_000 });
  return stdout.trim().split(/\s+/)[0] ?? '';
}

function webServerSaw(topo: Topology, request: string): boolean {
  return topo.resource.web.output().includes(request);
}

async function checkResourceHost(topo: Topology): Promise<void> {
  const { lan } = TOPOLOGY;
  const page = await mustFetch(
    topo,
    topo.namespaces.gateway,
    `http://${lan.web}/`,
    'gateway → lab-web',
  );
  const address = await resolveName(topo.gatewayMounts, TOPOLOGY.appName);
  if (address !== lan.app) {
    throw new StartFailure(
      `the gateway resolved ${TOPOLOGY.appName} to "${address}", not ${lan.app}`,
    );
  }
  say(
    `gateway namespace: GET http://${lan.web}/ -> ${describe(page)}; ${TOPOLOGY.appName} -> ` +
      `${address} (its resolv.conf names ${lan.dns})`,
  );
}

async function checkClientSide(topo: Topology): Promise<void> {
  const { internet, lan } = TOPOLOGY;
  const page = await mustFetch(
    topo,
    topo.namespaces.client,
    `${topo.portal.origin}/`,
    'client → portal',
    topo.certificates.caFile,
  );
  const direct = await mustNotReach(
    topo,
    topo.namespaces.client,
    `http://${lan.web}/`,
    'client → LAN',
  );
  say(
    `client namespace: ${topo.portal.origin}/ -> ${page.status} over TLS trusting the run's CA; ` +
      `the resource LAN directly: ${direct} (only the portal and ${internet.gateway} are reachable)`,
  );
}

async function signIn(topo: Topology): Promise<string> {
  const { account, user } = DEMO_ORG;
  const signedIn = await signInWithChromium({
    namespace: topo.namespaces.client,
    origin: topo.portal.origin,
    account,
    username: user.email,
    password: user.password,
    spkiSha256: topo.certificates.serverSpkiSha256,
    directory: join(topo.work, 'chromium'),
  });
  say(
    `sign-in: Chromium ${signedIn.browserVersion} (headless, in the client namespace) opened ` +
      `${topo.portal.origin}/${account}?as=gui-client&nonce=…&state=…, "${signedIn.heading}", ` +
      `signed in as ${user.email}; caught gatehouse://handle_client_sign_in_callback ` +
      `(account_slug=${signedIn.accountSlug}, actor_name=${signedIn.actorName}, state matches) ` +
      `in ${Math.round(signedIn.milliseconds)} ms`,
  );
  return signedIn.token;
}

async function startGateway(topo: Topology): Promise<NamespaceProcess> {
  const gateway = topo.startGateway();
  say(
    `gateway: $ GATEHOUSE_TOKEN=(the site's token) GATEHOUSE_ID=… gatehouse-gateway --portal ` +
      `${topo.portal.origin} --endpoint ${TOPOLOGY.internet.gateway}:` +
      `${TOPOLOGY.gatewayListenPort} --ca-file ${topo.certificates.caFile}`,
  );
  try {
    await untilOutput(gateway, GATEWAY_JOINED, GATEWAY_READY_TIMEOUT_MS);
  } catch (error) {
    const exit = gateway.running ? undefined : await gateway.exited;
    if (gateway.output().includes('not built yet')) {
      throw new StartFailure('gateway not built yet', false);
    }
    throw new StartFailure(
      exit === undefined
        ? (error as Error).message
        : `gatehouse-gateway exited with ${exit.code ?? exit.signal}: ${lastLine(gateway)}`,
    );
  }
  const output = gateway.output();
  const key = /public key (\S+) \((new|from)/.exec(output);
  const init = /init: (\d+) flow/.exec(output)?.[1];
  say(
    `gateway: joined the portal` +
      (key === null
        ? ''
        : ` with public key ${key[1]} (${key[2] === 'new' ? 'made now' : 'kept'})`) +
      (init === undefined ? '' : `; init: ${init} flows held`),
  );
  return gateway;
}

/** The line that says why: an uncaught error's own line, else the last one that is not Node's trailer. */
function lastLine(started: NamespaceProcess): string {
  const lines = started
    .output()
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !/^Node\.js v\d/.test(line) && !line.startsWith('at '));
  return lines.findLast((line) => /^\w*Error\b/.test(line)) ?? lines.at(-1) ?? '';
}

async function startClient(
  topo: Topology,
  token: string,
): Promise<{ up: NamespaceProcess; socket: string }> {
  const client = topo.startClient(token);
  const file = statSync(client.tokenFile);
  say(
    `client: wrote the token to ${client.tokenFile} (uid ${file.uid}, mode ` +
      `${(file.mode & 0o777).toString(8).padStart(4, '0')}); $ gatehouse-tunnel ${client.args.join(' ')}`,
  );
  const up = client.process;
  try {
    await untilOutput(up, CLIENT_UP, CLIENT_READY_TIMEOUT_MS);
  } catch (error) {
    if (!up.running && /unknown option|--portal/i.test(up.output())) {
      throw new StartFailure('gatehouse-tunnel up --portal not built yet', false);
    }
    throw new StartFailure(
      up.running
        ? (error as Error).message
        : `gatehouse-tunnel up exited with ${(await up.exited).code}: ${lastLine(up)}`,
    );
  }
  const said = (pattern: RegExp) => pattern.exec(up.output())?.[1] ?? '?';
  say(
    `client: connected to ${topo.portal.origin}, signed in as ${said(/signed in as (.+)$/m)}, ` +
      `${said(/init: (\d+) resource/)} resources offered; ${said(/(tunnel \S+ is up with [^\n]*)/)}`,
  );
  return { up, socket: client.socket };
}

/** SIGUSR1 makes gatehouse-gateway log one status line: its peers and what its policy dropped. */
async function showGatewayStatus(gateway: NamespaceProcess): Promise<void> {
  const before = gateway.output().length;
  const pid = gateway.child.pid;
  if (pid === undefined || !gateway.running)
    throw new StartFailure('gatehouse-gateway is not running');
  process.kill(pid, 'SIGUSR1');
  const deadline = performance.now() + STATUS_TIMEOUT_MS;
  let line: string | undefined;
  while (line === undefined && performance.now() < deadline) {
    await sleep(50);
    line = /status: portal .*/.exec(gateway.output().slice(before))?.[0];
  }
  if (line === undefined) {
    say(`gateway: no status line within ${STATUS_TIMEOUT_MS} ms of SIGUSR1`);
    return;
  }
  const denied = /policy-denied=(\d+)/.exec(line)?.[1];
  say(
    `gateway: kill -USR1 → ${line}` +
      (denied === undefined
        ? ''
        : ` (policy-denied: the ${denied} packets to :${TOPOLOGY.outsideFilterPort})`),
  );
}

async function showStatus(topo: Topology, socket: string): Promise<void> {
  const status = await topo.clientMounts.run([GATEHOUSE_TUNNEL, 'status', '--socket', socket], {
    timeoutMs: 20_000,
  });
  say('client: $ gatehouse-tunnel status');
  indented(status.stdout);
}

async function reachResources(topo: Topology): Promise<void> {
  const { lan } = TOPOLOGY;
  const web = await mustFetch(
    topo,
    topo.clientMounts,
    `http://${lan.web}/`,
    'CIDR resource lab-web',
  );
  const masqueraded = `GET / from ${lan.gateway} on lab-web`;
  if (!webServerSaw(topo, masqueraded)) {
    throw new StartFailure(`the web server did not log "${masqueraded}"`);
  }
  say(
    `client: GET http://${lan.web}/ (lab-web, by address) -> ${describe(web)}; the server saw it from ${lan.gateway}`,
  );

  const proxy = await resolveName(topo.clientMounts, TOPOLOGY.appName);
  const app = await mustFetch(
    topo,
    topo.clientMounts,
    `http://${TOPOLOGY.appName}/`,
    'DNS resource app',
  );
  if (!webServerSaw(topo, `from ${lan.gateway} on app`)) {
    throw new StartFailure(`the app server did not see the request come through the gateway`);
  }
  say(
    `client: ${TOPOLOGY.appName} -> ${proxy} (a proxy address); GET http://${TOPOLOGY.appName}/ -> ` +
      `${describe(app)} (the gateway mapped it to ${lan.app})`,
  );

  const forbidden = await mustNotReach(
    topo,
    topo.clientMounts,
    `http://${lan.admin}/`,
    'lab-admin (no policy)',
  );
  if (webServerSaw(topo, 'on lab-admin')) throw new StartFailure('lab-admin saw a request');
  say(
    `client: GET http://${lan.admin}/ (lab-admin: no policy for dana) -> ${forbidden}, as it should`,
  );

  const port = TOPOLOGY.outsideFilterPort;
  const outside = await mustNotReach(
    topo,
    topo.clientMounts,
    `http://${lan.web}:${port}/`,
    `lab-web:${port}`,
  );
  if (webServerSaw(topo, `on lab-web-${port}`))
    throw new StartFailure(`lab-web:${port} saw a request`);
  say(
    `client: GET http://${lan.web}:${port}/ (outside lab-web's filter tcp/80) -> ${outside}, as it should`,
  );

  const url = `http://${lan.web}/bytes/${TRANSFER_BYTES}`;
  const transfer = await probe(topo, topo.clientMounts, url, TRANSFER_TIMEOUT_MS);
  if (!transfer.ok || transfer.bytes !== TRANSFER_BYTES) {
    throw new StartFailure(
      `transfer: GET ${url}: ${transfer.ok ? `${transfer.bytes} bytes` : describe(transfer)}`,
    );
  }
  say(
    `client: GET ${url} through the gateway: ${TRANSFER_BYTES / 1024 / 1024} MiB in ` +
      `${Math.round(transfer.milliseconds)} ms, ${Math.round(megabitsPerSecond(transfer.bytes, transfer.milliseconds))} Mbit/s`,
  );
}

function printKeepInstructions(topo: Topology, socket: string): void {
  const { namespaces, certificates, portal } = topo;
  const { lan } = TOPOLOGY;
  const inClient = `ip netns exec ${namespaces.client}`;
  // nsenter --mount: the client's own /etc (its resolv.conf names the tunnel's DNS stub).
  const withClientDns = `nsenter --target ${topo.clientMounts.holderPid} --mount --net`;
  const get = (url: string, caFile?: string) =>
    hasCurl
      ? `curl -sS --max-time 3${caFile === undefined ? '' : ` --cacert ${caFile}`} ${url}`
      : `${process.execPath} ${HTTP_PROBE} ${url} 3000${caFile === undefined ? '' : ` ${caFile}`}`;
  const signInPage = `${portal.origin}/${DEMO_ORG.account}?as=headless-client`;
  say('kept running until Ctrl-C; try these as root:');
  for (const [what, command] of [
    [
      'the sign-in page (a token to paste)',
      `${inClient} ${get(`'${signInPage}'`, certificates.caFile)}`,
    ],
    [
      'the same in a browser (needs a display)',
      `${inClient} chromium --no-sandbox --user-data-dir=${join(topo.work, 'chromium', 'keep-profile')} ` +
        `--ignore-certificate-errors-spki-list=${certificates.serverSpkiSha256} '${signInPage}'`,
    ],
    ['the DNS resource, by name', `${withClientDns} ${get(`http://${TOPOLOGY.appName}/`)}`],
    ['the CIDR resource', `${inClient} ${get(`http://${lan.web}/`)}`],
    ['lab-admin, refused by policy', `${inClient} ${get(`http://${lan.admin}/`)}`],
    ['the client', `${withClientDns} ${GATEHOUSE_TUNNEL} status --socket ${socket}`],
    ['the portal', `${GATEHOUSE_PORTAL} --db ${portal.database} users | devices | tokens`],
    ['the gateway', `ip netns exec ${namespaces.gateway} nft list table inet gatehouse_gateway`],
  ] as const) {
    say(`  ${what}:`);
    say(`    ${command}`);
  }
  say(`  the demo user: ${DEMO_ORG.user.email}, password ${DEMO_ORG.user.password}`);
}

async function run(topo: Topology, keep: boolean): Promise<void> {
  await checkResourceHost(topo);
  await checkClientSide(topo);
  const token = await signIn(topo);
  const gateway = await startGateway(topo);
  const { up, socket } = await startClient(topo, token);
  await reachResources(topo);
  await showGatewayStatus(gateway);
  await showStatus(topo, socket);
  if (keep) {
    keeping = true;
    clearTimeout(watchdog);
    printKeepInstructions(topo, socket);
    const gone = await Promise.race([up.exited.then(() => up), gateway.exited.then(() => gateway)]);
    keeping = false;
    throw new StartFailure(`${gone.description} exited while kept: ${lastLine(gone)}`);
  }
}

async function main(): Promise<void> {
  let keep: boolean;
  try {
    const { values } = parseArgs({
      options: { keep: { type: 'boolean' }, check: { type: 'boolean' } },
    });
    if (values.keep === true && values.check === true)
      throw new Error('--keep and --check exclude each other');
    keep = values.keep === true;
  } catch (error) {
    finish({
      ok: false,
      reason: `${(error as Error).message}; usage: npm start [-- --keep | --check]`,
      exitCode: 2,
    });
  }
  // Before the network's own handlers, so that the contract's last line is printed.
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.on(signal, () => stopNow(`interrupted by ${signal}`, code));
  }
  watchdog = setTimeout(
    () => stopNow(`took longer than ${RUN_TIMEOUT_MS / 1000} s`),
    RUN_TIMEOUT_MS,
  );
  const notRoot = requireRoot();
  if (notRoot !== undefined) finish({ ok: false, reason: notRoot });
  const missing = missingTools(TOPOLOGY_TOOLS);
  if (missing.length > 0) finish({ ok: false, reason: `missing tools: ${missing.join(', ')}` });
  if (!existsSync(CHROMIUM))
    finish({ ok: false, reason: `no Chromium at ${CHROMIUM} (scripts/bootstrap.sh installs it)` });

  say(
    'Gatehouse end to end: a portal, a gateway, a resource host and a client, in network namespaces',
  );
  const net = TestNetwork.create('start');
  network = net;
  let topo: Topology;
  try {
    topo = await startTopology({ network: net, log: say });
    topology = topo;
    await run(topo, keep);
  } catch (error) {
    clearTimeout(watchdog);
    if (!(error instanceof StartFailure)) console.error(error);
    else if (error.diagnose && topology !== undefined) console.error(topology.diagnostics());
    await net.destroy();
    finish({
      ok: false,
      reason: error instanceof Error ? error.message.split('\n')[0]! : String(error),
    });
  }
  clearTimeout(watchdog);
  const work = topo.work;
  await net.destroy();
  const leftovers = listNamespaces().filter((name) => net.namespaces.includes(name));
  if (existsSync(work)) leftovers.push(work);
  if (leftovers.length > 0) finish({ ok: false, reason: `left behind: ${leftovers.join(' ')}` });
  say('cleaned up: namespaces, processes and the temporary directory are gone');
  finish({ ok: true });
}

void main();
