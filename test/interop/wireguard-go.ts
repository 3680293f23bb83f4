/**
 * Interop between Gatehouse's WireGuard and Debian's wireguard-go
 * (`npm run test:interop`).
 *
 * Every scenario gets fresh namespaces and keys: wireguard-go in one
 * namespace, the Gatehouse peer (gatehouse-peer.ts, a WireGuardDevice over a
 * UDP socket) in the other, joined by a veth pair. Scenarios, each with and
 * without a preshared key:
 *   - Gatehouse initiates: its ICMP echo requests to wireguard-go's tunnel
 *     address trigger the handshake; the kernel's replies must decrypt and match.
 *   - wireguard-go initiates: a kernel ping from its namespace to Gatehouse's
 *     tunnel address; Gatehouse answers the requests itself.
 *   - in both, a forced rekey from Gatehouse: a new handshake (seen as an event
 *     and in `wg show … dump`), then echoes again.
 *
 * The last stdout line is a contract other checks read:
 *   interop: wireguard-go ok handshakes=<n> echo=<ok>/<sent> rekeys=<n>
 *   interop: FAIL <reason>            (exit status 1)
 * Set INTEROP_PCAP_DIR to capture each scenario's veth traffic there.
 */
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { CommandError, systemTestSkipReason, TestNetwork } from '../lib/netns.ts';
import type { NamespaceProcess } from '../lib/netns.ts';
import { generateKeyPair, generatePresharedKey, WireGuardGo } from '../lib/wireguard-go.ts';
import type { PeerCommand, PeerConfiguration, PeerEvent } from './peer-protocol.ts';

const RUN_TIMEOUT_MS = 55_000;
const STEP_TIMEOUT_MS = 5_000;
const GATEHOUSE_ECHOES = 20;
const KERNEL_PINGS = 10;
const WIREGUARD_GO_PORT = 51820;
const GATEHOUSE_PORT = 51821;
const UNDERLAY = { wireguardGo: '10.98.0.1', gatehouse: '10.98.0.2', prefix: 24 };
const TUNNEL = { wireguardGo: '10.99.0.1', gatehouse: '10.99.0.2', prefix: 24 };
const peerScript = fileURLToPath(new URL('./gatehouse-peer.ts', import.meta.url));

type Initiator = 'gatehouse' | 'wireguard-go';
type EventOf<K extends PeerEvent['event']> = Extract<PeerEvent, { event: K }>;

class InteropFailure extends Error {}

interface Totals {
  handshakes: number;
  echoOk: number;
  echoSent: number;
  rekeys: number;
}

let currentNetwork: TestNetwork | undefined;
let finished = false;

function progress(line: string): void {
  console.log(`interop: ${line}`);
}

/** Prints the contract's last line once and exits; cleanup has already happened. */
function finish(
  outcome: { ok: true; totals: Totals } | { ok: false; reason: string; exitCode?: number },
): never {
  finished = true;
  if (outcome.ok) {
    const { handshakes, echoOk, echoSent, rekeys } = outcome.totals;
    console.log(
      `interop: wireguard-go ok handshakes=${handshakes} echo=${echoOk}/${echoSent} rekeys=${rekeys}`,
    );
    process.exit(0);
  }
  console.log(`interop: FAIL ${outcome.reason.replace(/\s+/g, ' ').trim()}`);
  process.exit(outcome.exitCode ?? 1);
}

/** For the watchdog and signals: nothing can be awaited, so tear down synchronously. */
function abortNow(reason: string, exitCode?: number): void {
  if (finished) return;
  currentNetwork?.destroySync();
  finish({ ok: false, reason, ...(exitCode === undefined ? {} : { exitCode }) });
}

/** The Gatehouse peer child and its event stream. */
class GatehousePeer {
  readonly events: PeerEvent[] = [];
  readonly #process: NamespaceProcess;
  #wake: (() => void) | undefined;

  constructor(network: TestNetwork, namespace: string) {
    this.#process = network.spawn(namespace, [process.execPath, peerScript]);
    const stdout = this.#process.child.stdout;
    if (stdout === null) throw new Error('gatehouse peer has no stdout');
    createInterface({ input: stdout }).on('line', (line) => {
      if (!line.startsWith('{')) return;
      try {
        this.events.push(JSON.parse(line) as PeerEvent);
      } catch {
        this.events.push({ event: 'error', message: `unparsable event line: ${line}` });
      }
      this.#wake?.();
    });
    void this.#process.exited.then(() => this.#wake?.());
  }

  send(command: PeerCommand): void {
    this.#process.child.stdin?.write(`${JSON.stringify(command)}\n`);
  }

  /** The index the next event will get: pass it as `after` to wait only for later events. */
  mark(): number {
    return this.events.length;
  }

  /** Waits for an event of `type` (at or after index `after`) that satisfies `accept`. */
  async waitFor<K extends PeerEvent['event']>(
    type: K,
    what: string,
    options: { after?: number; timeoutMs?: number; accept?: (event: EventOf<K>) => boolean } = {},
  ): Promise<EventOf<K>> {
    const deadline = performance.now() + (options.timeoutMs ?? STEP_TIMEOUT_MS);
    let index = options.after ?? 0;
    for (;;) {
      for (; index < this.events.length; index++) {
        const event = this.events[index];
        if (event?.event === 'error') throw new InteropFailure(`gatehouse peer: ${event.message}`);
        if (event?.event === type && (options.accept?.(event as EventOf<K>) ?? true)) {
          return event as EventOf<K>;
        }
      }
      if (!this.#process.running) {
        throw new InteropFailure(`gatehouse peer exited while waiting for ${what}`);
      }
      const remaining = deadline - performance.now();
      if (remaining <= 0) throw new InteropFailure(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  output(): string {
    return this.#process.output();
  }
}

interface Scenario {
  label: string;
  initiator: Initiator;
  /** `mismatched`: each side gets a different one, and the handshake must fail. */
  presharedKey: 'none' | 'shared' | 'mismatched';
}

interface ScenarioContext {
  scenario: Scenario;
  network: TestNetwork;
  wireguardGoNamespace: string;
  wireguardGo: WireGuardGo;
  gatehouse: GatehousePeer;
  gatehousePublicKey: string;
  totals: Totals;
  nextRequestId: number;
}

async function gatehouseEchoes(context: ScenarioContext, what: string): Promise<void> {
  const requestId = context.nextRequestId++;
  const after = context.gatehouse.mark();
  context.gatehouse.send({
    cmd: 'echo',
    requestId,
    destination: TUNNEL.wireguardGo,
    count: GATEHOUSE_ECHOES,
    intervalMs: 10,
    timeoutMs: STEP_TIMEOUT_MS - 1_000,
  });
  const done = await context.gatehouse.waitFor('echo-done', `echo replies (${what})`, {
    after,
    accept: (event) => event.requestId === requestId,
  });
  context.totals.echoSent += done.sent;
  context.totals.echoOk += done.received;
  if (done.received !== done.sent || done.sent !== GATEHOUSE_ECHOES) {
    throw new InteropFailure(
      `${what}: ${done.received}/${done.sent} echo replies; ${done.failures.slice(0, 3).join('; ')}`,
    );
  }
  progress(`${context.scenario.label}: ${what}: ${done.received}/${done.sent} echo replies ok`);
}

async function kernelPing(context: ScenarioContext, what: string): Promise<void> {
  const argv = ['ping', '-n', '-c', `${KERNEL_PINGS}`, '-i', '0.1', '-W', '1', TUNNEL.gatehouse];
  let stdout: string;
  try {
    stdout = (await context.network.exec(context.wireguardGoNamespace, argv, { timeoutMs: 15_000 }))
      .stdout;
  } catch (error) {
    if (!(error instanceof CommandError)) throw error;
    stdout = error.stdout;
  }
  const counts = /(\d+) packets transmitted, (\d+) received/.exec(stdout);
  const transmitted = Number(counts?.[1] ?? 0);
  const received = Number(counts?.[2] ?? 0);
  context.totals.echoSent += transmitted;
  context.totals.echoOk += received;
  if (counts === null || transmitted !== KERNEL_PINGS || received !== transmitted) {
    throw new InteropFailure(
      `${what}: kernel ping got ${received}/${transmitted} replies: ${stdout.trim().split('\n').pop() ?? ''}`,
    );
  }
  progress(`${context.scenario.label}: ${what}: kernel ping ${received}/${transmitted} ok`);
}

/** wireguard-go's latest handshake with Gatehouse, once it is later than `laterThan` (unix seconds). */
async function wireguardGoHandshakeAfter(
  context: ScenarioContext,
  laterThan: number,
  what: string,
): Promise<number> {
  const deadline = performance.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const peer = await context.wireguardGo.peer(context.gatehousePublicKey);
    if (peer.latestHandshakeSeconds > laterThan) return peer.latestHandshakeSeconds;
    if (performance.now() > deadline) {
      throw new InteropFailure(
        `wg show: latest handshake still ${peer.latestHandshakeSeconds}, expected > ${laterThan} (${what})`,
      );
    }
    await sleep(100);
  }
}

async function forcedRekey(context: ScenarioContext): Promise<void> {
  const before = await wireguardGoHandshakeAfter(context, 0, 'before rekey');
  // `wg show` has one-second resolution: start the rekey in a later second so it shows as a change.
  const untilNextSecond = (before + 1) * 1000 + 50 - Date.now();
  if (untilNextSecond > 0) await sleep(untilNextSecond);

  const after = context.gatehouse.mark();
  const requestId = context.nextRequestId++;
  context.gatehouse.send({ cmd: 'rekey', requestId });
  await context.gatehouse.waitFor('handshake-complete', 'the forced rekey handshake', {
    after,
    accept: (event) => event.initiator,
  });
  // Data on the new session is what makes wireguard-go, the responder, switch to it.
  await gatehouseEchoes(context, 'after forced rekey');
  const latest = await wireguardGoHandshakeAfter(context, before, 'after rekey');
  context.totals.rekeys += 1;
  progress(
    `${context.scenario.label}: forced rekey ok (wg latest-handshake ${before} -> ${latest})`,
  );
}

async function startCapture(network: TestNetwork, namespace: string, label: string): Promise<void> {
  const directory = process.env['INTEROP_PCAP_DIR'];
  if (!directory) return;
  mkdirSync(directory, { recursive: true });
  const file = join(directory, `${label.replace(/[^a-z0-9-]+/g, '_')}.pcap`);
  const capture = network.spawn(namespace, [
    'tcpdump',
    '-i',
    'veth0',
    '--immediate-mode',
    '-U',
    '-w',
    file,
  ]);
  await Promise.race([once(capture.child.stderr ?? capture.child, 'data'), sleep(2_000)]);
  progress(`${label}: capturing veth0 to ${file}`);
}

async function runScenario(scenario: Scenario, totals: Totals): Promise<void> {
  const network = TestNetwork.create('interop');
  currentNetwork = network;
  let context: ScenarioContext | undefined;
  try {
    const wireguardGoNamespace = await network.addNamespace();
    const gatehouseNamespace = await network.addNamespace();
    await network.addVethPair(
      {
        namespace: wireguardGoNamespace,
        name: 'veth0',
        address: `${UNDERLAY.wireguardGo}/${UNDERLAY.prefix}`,
      },
      {
        namespace: gatehouseNamespace,
        name: 'veth0',
        address: `${UNDERLAY.gatehouse}/${UNDERLAY.prefix}`,
      },
    );
    await startCapture(network, gatehouseNamespace, scenario.label);
    const [wireguardGoKeys, gatehouseKeys, presharedKey, otherPresharedKey] = await Promise.all([
      generateKeyPair(),
      generateKeyPair(),
      scenario.presharedKey === 'none' ? undefined : generatePresharedKey(),
      scenario.presharedKey === 'mismatched' ? generatePresharedKey() : undefined,
    ]);
    const gatehousePresharedKey = otherPresharedKey ?? presharedKey;

    const wireguardGo = await WireGuardGo.start(network, {
      namespace: wireguardGoNamespace,
      privateKey: wireguardGoKeys.privateKey,
      listenPort: WIREGUARD_GO_PORT,
      address: `${TUNNEL.wireguardGo}/${TUNNEL.prefix}`,
      logLevel: 'debug',
    });
    await wireguardGo.setPeer({
      publicKey: gatehouseKeys.publicKey,
      allowedIps: [`${TUNNEL.gatehouse}/32`],
      ...(presharedKey === undefined ? {} : { presharedKey }),
      ...(scenario.initiator === 'wireguard-go'
        ? { endpoint: `${UNDERLAY.gatehouse}:${GATEHOUSE_PORT}` }
        : {}),
    });

    const gatehouse = new GatehousePeer(network, gatehouseNamespace);
    context = {
      scenario,
      network,
      wireguardGoNamespace,
      wireguardGo,
      gatehouse,
      gatehousePublicKey: gatehouseKeys.publicKey,
      totals,
      nextRequestId: 1,
    };
    const configuration: PeerConfiguration = {
      privateKey: gatehouseKeys.privateKey,
      listenPort: GATEHOUSE_PORT,
      tunnelAddress: TUNNEL.gatehouse,
      peer: {
        publicKey: wireguardGoKeys.publicKey,
        ...(gatehousePresharedKey === undefined ? {} : { presharedKey: gatehousePresharedKey }),
        ...(scenario.initiator === 'gatehouse'
          ? { endpoint: { address: UNDERLAY.wireguardGo, port: WIREGUARD_GO_PORT } }
          : {}),
      },
    };
    gatehouse.send({ cmd: 'configure', configuration });
    const ready = await gatehouse.waitFor('ready', 'the gatehouse peer to start', {
      timeoutMs: 10_000,
    });
    progress(`${scenario.label}: gatehouse peer up, crypto ${ready.provider} (${ready.reason})`);

    if (scenario.presharedKey === 'mismatched') await rejectsMismatchedPresharedKey(context);
    else await handshakeEchoAndRekey(context);
  } catch (error) {
    if (context !== undefined) printDiagnostics(context);
    throw error;
  } finally {
    await network.destroy();
    currentNetwork = undefined;
  }
}

async function handshakeEchoAndRekey(context: ScenarioContext): Promise<void> {
  const { scenario, gatehouse } = context;
  const beforeFirst = gatehouse.mark();
  if (scenario.initiator === 'gatehouse') await gatehouseEchoes(context, 'first handshake');
  else await kernelPing(context, 'first handshake');
  const first = await gatehouse.waitFor('handshake-complete', 'the first handshake', {
    after: beforeFirst,
  });
  const expectInitiator = scenario.initiator === 'gatehouse';
  if (first.initiator !== expectInitiator) {
    throw new InteropFailure(
      `first handshake: gatehouse initiator=${first.initiator}, expected ${expectInitiator}`,
    );
  }
  const endpoint = (await context.wireguardGo.peer(context.gatehousePublicKey)).endpoint;
  if (endpoint !== `${UNDERLAY.gatehouse}:${GATEHOUSE_PORT}`) {
    throw new InteropFailure(`wireguard-go sees gatehouse at ${endpoint ?? '(none)'}`);
  }

  await forcedRekey(context);
  if (scenario.initiator === 'wireguard-go') await kernelPing(context, 'after forced rekey');

  const stats = await gatehouseStats(context);
  const handshakes = Number(stats['handshakes']);
  context.totals.handshakes += handshakes;
  const drops = Object.entries(stats['drops'] as Record<string, number>);
  progress(
    `${scenario.label}: ok (gatehouse handshakes=${handshakes}, drops: ${drops.map(([reason, count]) => `${reason}=${count}`).join(' ') || 'none'})`,
  );
}

/** The preshared key must really be mixed in: with different keys the handshake has to fail. */
async function rejectsMismatchedPresharedKey(context: ScenarioContext): Promise<void> {
  const { gatehouse } = context;
  const after = gatehouse.mark();
  gatehouse.send({ cmd: 'rekey', requestId: context.nextRequestId++ });
  await gatehouse.waitFor('drop', 'gatehouse to reject a response made with another psk', {
    after,
    accept: (event) => event.reason === 'handshake-failed',
  });
  await sleep(300);
  if (gatehouse.events.slice(after).some((event) => event.event === 'handshake-complete')) {
    throw new InteropFailure('a handshake completed although the preshared keys differ');
  }
  const latest = (await context.wireguardGo.peer(context.gatehousePublicKey))
    .latestHandshakeSeconds;
  if (latest !== 0) {
    throw new InteropFailure(
      `wireguard-go recorded a handshake (${latest}) although the psks differ`,
    );
  }
  progress(`${context.scenario.label}: handshake rejected as it must be`);
}

async function gatehouseStats(context: ScenarioContext): Promise<Record<string, unknown>> {
  const after = context.gatehouse.mark();
  const requestId = context.nextRequestId++;
  context.gatehouse.send({ cmd: 'stats', requestId });
  const { stats } = await context.gatehouse.waitFor('stats', 'peer stats', {
    after,
    accept: (event) => event.requestId === requestId,
  });
  return stats;
}

function tail(text: string, lines: number): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

function printDiagnostics(context: ScenarioContext): void {
  console.error(`--- ${context.scenario.label}: gatehouse peer events ---`);
  console.error(context.gatehouse.events.map((event) => JSON.stringify(event)).join('\n'));
  console.error(`--- ${context.scenario.label}: gatehouse peer output (tail) ---`);
  console.error(tail(context.gatehouse.output(), 40));
  console.error(`--- ${context.scenario.label}: wireguard-go log (tail) ---`);
  console.error(tail(context.wireguardGo.log(), 60));
}

async function main(): Promise<void> {
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.on(signal, () => abortNow(`interrupted by ${signal}`, code));
  }
  const watchdog = setTimeout(
    () => abortNow(`run exceeded ${RUN_TIMEOUT_MS / 1000} s`),
    RUN_TIMEOUT_MS,
  );

  const tools = ['ip', 'wg', 'wireguard-go', 'ping'];
  if (process.env['INTEROP_PCAP_DIR']) tools.push('tcpdump');
  const notReady = systemTestSkipReason(tools);
  if (notReady !== undefined) finish({ ok: false, reason: notReady });

  const totals: Totals = { handshakes: 0, echoOk: 0, echoSent: 0, rekeys: 0 };
  try {
    const scenarios: Scenario[] = [];
    for (const presharedKey of ['none', 'shared'] as const) {
      for (const initiator of ['gatehouse', 'wireguard-go'] as const) {
        const psk = presharedKey === 'none' ? 'without psk' : 'with psk';
        scenarios.push({ label: `${initiator} initiates, ${psk}`, initiator, presharedKey });
      }
    }
    scenarios.push({
      label: 'gatehouse initiates, mismatched psk',
      initiator: 'gatehouse',
      presharedKey: 'mismatched',
    });
    for (const scenario of scenarios) {
      progress(`${scenario.label}: start`);
      await runScenario(scenario, totals);
    }
  } catch (error) {
    clearTimeout(watchdog);
    if (!(error instanceof InteropFailure)) console.error(error);
    finish({ ok: false, reason: error instanceof Error ? error.message : String(error) });
  }
  clearTimeout(watchdog);
  finish({ ok: true, totals });
}

void main();
