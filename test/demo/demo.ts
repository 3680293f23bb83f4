/**
 * `npm run demo [-- --keep]`: the headless client `gatehouse-tunnel` at work,
 * on an embedded default, inside two network namespaces joined by a veth
 * pair. The "office" runs Debian's wireguard-go as a stand-in gateway, an
 * intranet page (office-web-server.ts) and a DNS server that knows an
 * internal name; the "laptop" runs `gatehouse-tunnel up --config` with fresh
 * keys and a private /etc, then status, a ping and an HTTP fetch through the
 * tunnel, a DNS resource and an internal name resolved, and down, which
 * restores resolv.conf. `--keep` keeps the tunnel up, printing commands to
 * try, until Ctrl-C or `gatehouse-tunnel down`.
 *
 * The last stdout line is a contract other checks read:
 *   demo: ok
 *   demo: FAIL <reason>            (exit status 1; 2 for a bad option, 130/143 when interrupted)
 */
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { listNamespaces, systemTestSkipReason, TestNetwork } from '../lib/netns.ts';
import type { NamespaceProcess } from '../lib/netns.ts';
import { describePing, ping } from '../lib/ping.ts';
import { gatehouseCli, startGatehouseUp, startPrivateEtc } from '../lib/private-etc.ts';
import type { PrivateEtc } from '../lib/private-etc.ts';
import { generateKeyPair, WireGuardGo } from '../lib/wireguard-go.ts';
import type { KeyPair } from '../lib/wireguard-go.ts';
import type { FetchedPage } from './fetch-page.ts';

const RUN_TIMEOUT_MS = 55_000;
const READY_TIMEOUT_MS = 5_000;
const TOOLS = ['ip', 'unshare', 'nsenter', 'mount', 'wireguard-go', 'wg', 'getent', 'ping'];
const LAPTOP = { underlay: '10.200.0.1', tunnel: '10.201.0.1' };
const OFFICE = { underlay: '10.200.0.2', tunnel: '10.201.0.2', listenPort: 51820 };
const PREFIX = 24;
const UNDERLAY_INTERFACE = 'veth0';
/** The config file's name names the interface, as with wg-quick. */
const INTERFACE = 'gatehouse';
const IPV4_PROXY_RANGE = '100.96.0.0/11';
const IPV6_PROXY_RANGE = 'fd00:2021:1111:8000::/107';
const RESOURCE_NAME = 'app.corp.example';
const INTERNAL_NAME = 'wiki.corp.example';
const PAGE_URL = `http://${OFFICE.tunnel}/`;
const ORIGINAL_RESOLV_CONF =
  "# the laptop's own resolver, before the tunnel\nnameserver 192.0.2.53\n";
const WEB_SERVER = fileURLToPath(new URL('./office-web-server.ts', import.meta.url));
const FETCH_PAGE = fileURLToPath(new URL('./fetch-page.ts', import.meta.url));
const DNS_SERVER = fileURLToPath(new URL('../fixtures/upstream-dns-server.ts', import.meta.url));

class DemoFailure extends Error {}

let network: TestNetwork | undefined;
let watchdog: NodeJS.Timeout | undefined;
let keeping = false;
let finished = false;

function say(line: string): void {
  console.log(`demo: ${line}`);
}

function indented(text: string): void {
  for (const line of text.trimEnd().split('\n')) console.log(line === '' ? '' : `    ${line}`);
}

function nameservers(resolvConf: string): string {
  return [...resolvConf.matchAll(/^nameserver (\S+)$/gm)].map((match) => match[1]).join(', ');
}

/** Prints the contract's last line once and exits; cleanup has already happened. */
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

async function untilReady(server: NamespaceProcess): Promise<void> {
  const deadline = performance.now() + READY_TIMEOUT_MS;
  while (!server.output().includes('ready')) {
    if (performance.now() > deadline || !server.running) {
      throw new DemoFailure(`${server.description} did not start: ${server.output()}`);
    }
    await sleep(20);
  }
}

interface Office {
  namespace: string;
  gateway: WireGuardGo;
  dnsServer: NamespaceProcess;
  webServer: NamespaceProcess;
}

async function startOffice(
  net: TestNetwork,
  namespace: string,
  keys: KeyPair,
  laptopPublicKey: string,
): Promise<Office> {
  const gateway = await WireGuardGo.start(net, {
    namespace,
    privateKey: keys.privateKey,
    listenPort: OFFICE.listenPort,
    address: `${OFFICE.tunnel}/${PREFIX}`,
  });
  await gateway.setPeer({ publicKey: laptopPublicKey, allowedIps: [`${LAPTOP.tunnel}/32`] });
  // A real gateway answers for the proxy addresses of its resources; the stand-in answers for all.
  await net.exec(namespace, ['ip', 'route', 'add', 'local', IPV4_PROXY_RANGE, 'dev', 'lo']);
  say(
    `office: wireguard-go ${gateway.name} on ${OFFICE.tunnel}/${PREFIX}, UDP port ` +
      `${OFFICE.listenPort} (a stand-in for a Gatehouse gateway)`,
  );
  const webServer = net.spawn(namespace, [process.execPath, WEB_SERVER, OFFICE.tunnel, '80']);
  const dnsServer = net.spawn(namespace, [
    process.execPath,
    DNS_SERVER,
    OFFICE.tunnel,
    INTERNAL_NAME,
    OFFICE.tunnel,
  ]);
  await Promise.all([untilReady(webServer), untilReady(dnsServer)]);
  say(
    `office: an intranet page on ${PAGE_URL} and a DNS server on ${OFFICE.tunnel}:53 ` +
      `that knows ${INTERNAL_NAME}`,
  );
  return { namespace, gateway, dnsServer, webServer };
}

function wgQuickConfig(privateKey: string, officePublicKey: string): string {
  return `[Interface]
PrivateKey = ${privateKey}
Address = ${LAPTOP.tunnel}/${PREFIX}
DNS = ${OFFICE.tunnel}

[Peer]
PublicKey = ${officePublicKey}
Endpoint = ${OFFICE.underlay}:${OFFICE.listenPort}
AllowedIPs = ${OFFICE.tunnel}/32, ${IPV4_PROXY_RANGE}, ${IPV6_PROXY_RANGE}
`;
}

async function pingThroughTunnel(
  net: TestNetwork,
  laptop: string,
  destination: string,
  what: string,
): Promise<void> {
  const count = 3;
  const result = await ping(net, laptop, destination, {
    count,
    intervalSeconds: 0.2,
    deadlineSeconds: 5,
  });
  if (result.received < count) throw new DemoFailure(`ping ${what}: ${describePing(result)}`);
  const roundTrips = result.roundTripsMs.map((ms) => ms.toFixed(1)).join(', ');
  say(
    `ping ${what}: ${result.received}/${result.transmitted} replies, round trips ${roundTrips} ms`,
  );
}

async function fetchPage(net: TestNetwork, laptop: string, office: Office): Promise<void> {
  const { stdout } = await net.exec(laptop, [process.execPath, FETCH_PAGE, PAGE_URL], {
    timeoutMs: 15_000,
  });
  const page = JSON.parse(stdout) as FetchedPage;
  if (page.status !== 200) throw new DemoFailure(`GET ${PAGE_URL}: status ${page.status}`);
  const seenFrom = `GET / from ${LAPTOP.tunnel}`;
  if (!office.webServer.output().includes(seenFrom)) {
    throw new DemoFailure(`the office web server did not log "${seenFrom}"`);
  }
  const mebibytes = page.bytes / (1024 * 1024);
  const megabitsPerSecond = (page.bytes * 8) / (page.milliseconds * 1000);
  say(
    `GET ${PAGE_URL} through the tunnel: ${page.status} "${page.firstLine}" ` +
      `(${mebibytes.toFixed(1)} MiB in ${Math.round(page.milliseconds)} ms, ` +
      `${Math.round(megabitsPerSecond)} Mbit/s; the office saw it come from ${LAPTOP.tunnel})`,
  );
}

async function resolve(privateEtc: PrivateEtc, name: string): Promise<string> {
  const { stdout } = await privateEtc.run(['getent', 'ahostsv4', name]);
  return stdout.trim().split(/\s+/)[0] ?? '';
}

function isIpv4ProxyAddress(address: string): boolean {
  const [first, second] = address.split('.').map(Number);
  return first === 100 && second !== undefined && second >= 96 && second < 128;
}

function printKeepInstructions(
  laptop: string,
  office: Office,
  socketPath: string,
  upPid: number | undefined,
): void {
  say(
    'kept running until Ctrl-C or the last command; try these as root, from the repository root:',
  );
  for (const command of [
    `ip netns exec ${laptop} ping -c 3 ${OFFICE.tunnel}`,
    `ip netns exec ${laptop} node_modules/.bin/node test/demo/fetch-page.ts ${PAGE_URL}`,
    `npx gatehouse-tunnel status --socket ${socketPath}`,
    `nsenter --target ${upPid} --mount --net getent hosts ${RESOURCE_NAME} ${INTERNAL_NAME}`,
    `ip netns exec ${office.namespace} wg show ${office.gateway.name}`,
    `npx gatehouse-tunnel down --socket ${socketPath}`,
  ]) {
    say(`  ${command}`);
  }
}

async function runDemo(net: TestNetwork, work: string, keep: boolean): Promise<void> {
  const laptop = await net.addNamespace();
  const officeNamespace = await net.addNamespace();
  await net.addVethPair(
    { namespace: laptop, name: UNDERLAY_INTERFACE, address: `${LAPTOP.underlay}/${PREFIX}` },
    {
      namespace: officeNamespace,
      name: UNDERLAY_INTERFACE,
      address: `${OFFICE.underlay}/${PREFIX}`,
    },
  );
  say(
    `network namespaces: laptop ${laptop} (${LAPTOP.underlay}) and office ${officeNamespace} ` +
      `(${OFFICE.underlay}), joined by a veth pair`,
  );
  const [laptopKeys, officeKeys] = await Promise.all([generateKeyPair(), generateKeyPair()]);
  const office = await startOffice(net, officeNamespace, officeKeys, laptopKeys.publicKey);

  const privateEtc = await startPrivateEtc(net, laptop, work);
  privateEtc.replaceResolvConf(Buffer.from(ORIGINAL_RESOLV_CONF));
  const resolvConf = () => readFileSync(privateEtc.resolvConf, 'utf8');
  say(`laptop: a private copy of /etc; resolv.conf: nameserver ${nameservers(resolvConf())}`);
  const configFile = join(work, `${INTERFACE}.conf`);
  const config = wgQuickConfig(laptopKeys.privateKey, officeKeys.publicKey);
  writeFileSync(configFile, config, { mode: 0o600 });
  say(`laptop: wrote ${configFile} (mode 0600, fresh keys):`);
  indented(config.replace(laptopKeys.privateKey, '(not shown)'));

  say(`laptop: $ gatehouse-tunnel up --config ${configFile}`);
  const socketPath = join(work, 'run', 'tunnel.sock');
  const up = await startGatehouseUp(privateEtc, configFile, socketPath, (line) =>
    console.log(`  [up] ${line}`),
  );
  const upClosed = once(up.child, 'close');
  say(`laptop: resolv.conf: nameserver ${nameservers(resolvConf())} (DNS= of the config)`);
  const cli = async (command: string, args: string[] = []) => {
    say(`laptop: $ gatehouse-tunnel ${[command, ...args].join(' ')}`);
    indented((await gatehouseCli(privateEtc, socketPath, command, args)).stdout);
  };
  await cli('status');

  await pingThroughTunnel(net, laptop, OFFICE.tunnel, `${OFFICE.tunnel} (the office)`);
  await fetchPage(net, laptop, office);

  await cli('dns-resources', [RESOURCE_NAME]);
  say(`laptop: resolv.conf: nameserver ${nameservers(resolvConf())} (the DNS stub)`);
  const proxy = await resolve(privateEtc, RESOURCE_NAME);
  if (!isIpv4ProxyAddress(proxy)) {
    throw new DemoFailure(`${RESOURCE_NAME} resolved to "${proxy}", not a proxy address`);
  }
  say(`laptop: ${RESOURCE_NAME} -> ${proxy} (a proxy address from the DNS stub)`);
  await pingThroughTunnel(
    net,
    laptop,
    proxy,
    `${proxy} (${RESOURCE_NAME}; the office answers for proxy addresses, as a gateway would)`,
  );
  const internal = await resolve(privateEtc, INTERNAL_NAME);
  const queryThroughTunnel = `query ${INTERNAL_NAME} A from ${LAPTOP.tunnel}`;
  if (internal !== OFFICE.tunnel || !office.dnsServer.output().includes(queryThroughTunnel)) {
    throw new DemoFailure(
      `${INTERNAL_NAME} resolved to "${internal}"; the office DNS server saw: ` +
        office.dnsServer.output(),
    );
  }
  say(
    `laptop: ${INTERNAL_NAME} -> ${internal} (not a resource: the stub asked the office's ` +
      `DNS server, which saw "${queryThroughTunnel}", through the tunnel)`,
  );

  if (keep) {
    keeping = true;
    clearTimeout(watchdog);
    printKeepInstructions(laptop, office, socketPath, up.child.pid);
  } else {
    await cli('down');
  }
  const [exit] = await Promise.all([up.exited, upClosed]);
  if (exit.code !== 0) {
    throw new DemoFailure(`gatehouse-tunnel up exited with ${exit.code ?? exit.signal}`);
  }
  if (resolvConf() !== ORIGINAL_RESOLV_CONF) {
    throw new DemoFailure(`resolv.conf not restored: ${JSON.stringify(resolvConf())}`);
  }
  say(`laptop: resolv.conf restored byte for byte: nameserver ${nameservers(resolvConf())}`);
}

function printDiagnostics(net: TestNetwork): void {
  for (const started of net.processes) {
    console.error(`--- ${started.description} (output tail) ---`);
    console.error(started.output().trimEnd().split('\n').slice(-20).join('\n'));
  }
}

async function main(): Promise<void> {
  let keep: boolean;
  try {
    keep = parseArgs({ options: { keep: { type: 'boolean' } } }).values.keep === true;
  } catch (error) {
    finish({
      ok: false,
      reason: `${(error as Error).message}; usage: npm run demo [-- --keep]`,
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
    () => stopNow(`the demo took longer than ${RUN_TIMEOUT_MS / 1000} s`),
    RUN_TIMEOUT_MS,
  );
  const notReady = systemTestSkipReason(TOOLS);
  if (notReady !== undefined) finish({ ok: false, reason: notReady });

  say(
    'Gatehouse: a laptop reaches its office through a WireGuard tunnel, in two network namespaces',
  );
  const net = TestNetwork.create('demo');
  network = net;
  const work = mkdtempSync(join(tmpdir(), 'gh-demo-'));
  net.onDestroy(() => rmSync(work, { recursive: true, force: true }));
  try {
    await runDemo(net, work, keep);
  } catch (error) {
    clearTimeout(watchdog);
    if (!(error instanceof DemoFailure)) console.error(error);
    printDiagnostics(net);
    await net.destroy();
    finish({ ok: false, reason: error instanceof Error ? error.message : String(error) });
  }
  clearTimeout(watchdog);
  await net.destroy();
  const leftovers = listNamespaces().filter((name) => net.namespaces.includes(name));
  if (existsSync(work)) leftovers.push(work);
  if (leftovers.length > 0) finish({ ok: false, reason: `left behind: ${leftovers.join(' ')}` });
  say('cleaned up: namespaces, processes and the temporary directory are gone');
  finish({ ok: true });
}

void main();
