import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { silentLogger } from '@gatehouse/logging';
import { ServiceClient, ServiceClientError } from '@gatehouse/service-ipc';
import { skipLoudly } from '@gatehouse/test-support';
import { DryRunTunnel } from '../src/dry-run-tunnel.ts';
import { runTunnelService } from '../src/service.ts';
import { TunnelStartError, type TunnelEvents } from '../src/tunnel.ts';
import type { TunnelSpec } from '../src/tunnel-spec.ts';

const key = (byte: number) => Buffer.alloc(32, byte).toString('base64');
const WG_QUICK = `[Interface]
PrivateKey = ${key(1)}
Address = 10.9.0.2/24

[Peer]
PublicKey = ${key(2)}
AllowedIPs = 10.9.0.0/24
`;

/** Dry-run tunnels that record their starts and stops; the test fails a start or a data plane. */
class Tunnels {
  starts: TunnelSpec[] = [];
  stops = 0;
  failNextStart: TunnelStartError | undefined;
  failDataPlane: (error: Error) => void = () => {};

  create(): DryRunTunnel {
    return new RecordingTunnel(this);
  }
}

class RecordingTunnel extends DryRunTunnel {
  readonly #tunnels: Tunnels;

  constructor(tunnels: Tunnels) {
    super();
    this.#tunnels = tunnels;
  }

  override async start(spec: TunnelSpec, events?: TunnelEvents): Promise<void> {
    const tunnels = this.#tunnels;
    tunnels.starts.push(spec);
    const failure = tunnels.failNextStart;
    tunnels.failNextStart = undefined;
    if (failure !== undefined) throw failure;
    tunnels.failDataPlane = events?.onFailed ?? (() => {});
    await super.start(spec);
  }

  override async stop(): Promise<void> {
    this.#tunnels.stops++;
    await super.stop();
  }
}

async function refusal(promise: Promise<unknown>): Promise<ServiceClientError> {
  const error = await promise.then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  assert.ok(error instanceof ServiceClientError, `refused: ${String(error)}`);
  return error;
}

void test('the daemon serves with no tunnel, starts one per start-tunnel, keeps serving after down and a failure', async (t) => {
  if (process.getuid?.() !== 0) {
    skipLoudly(t, 'needs root: the control socket only admits root (SO_PEERCRED uid 0)');
    return;
  }
  const directory = await mkdtemp(join(tmpdir(), 'gh-service-daemon-'));
  const socketPath = join(directory, 'run', 'tunnel.sock');
  const tunnels = new Tunnels();
  let repaired = 0;
  const service = runTunnelService({
    socketPath,
    createTunnel: () => tunnels.create(),
    repair: async () => {
      repaired++;
    },
    serviceVersion: 'test',
    logger: silentLogger,
  });
  let finished = false;
  void service.then(() => (finished = true));
  let client: ServiceClient | undefined;
  try {
    const deadline = performance.now() + 10_000;
    while (client === undefined) {
      client = await ServiceClient.connect({ socketPath }).catch(() => undefined);
      assert.ok(performance.now() < deadline, 'the daemon did not start serving');
      if (client === undefined) await sleep(20);
    }
    assert.equal(repaired, 1, 'repaired before serving');
    const start = { wgQuickConfig: WG_QUICK, interfaceName: 'gh-d0', dnsControl: 'auto' };

    const idle = await client.request('status', {});
    assert.equal(idle.state, 'disconnected');
    assert.equal(idle.state === 'disconnected' && idle.failure, null);
    assert.equal((await refusal(client.request('down', {}))).code, 'not-running');
    const noTunnelToChange = await refusal(
      client.request('apply-tunnel', { wgQuickConfig: WG_QUICK, interfaceName: 'gh-d0' }),
    );
    assert.equal(noTunnelToChange.code, 'not-running');
    const noTunnel = await refusal(
      client.request('set-dns-resources', { resources: [{ address: 'app.example' }] }),
    );
    assert.equal(noTunnel.code, 'not-running');

    const started = await client.request('start-tunnel', start);
    assert.equal(started.state, 'connected');
    assert.equal(started.state === 'connected' && started.interfaceName, 'gh-d0');
    assert.equal(tunnels.starts.length, 1);

    const withPeer = `${WG_QUICK}\n[Peer]\nPublicKey = ${key(3)}\nAllowedIPs = 10.9.9.0/24\n`;
    await client.request('set-dns-resources', { resources: [{ address: 'app.example' }] });
    const applied = await client.request('apply-tunnel', {
      wgQuickConfig: withPeer,
      interfaceName: 'gh-d0',
    });
    assert.equal(applied.state === 'connected' && applied.peers.length, 2);
    assert.deepEqual(
      applied.state === 'connected' && applied.dnsResources.patterns,
      ['app.example'],
      'the DNS resources stay as set',
    );
    const moved = await refusal(
      client.request('apply-tunnel', {
        wgQuickConfig: withPeer.replace('[Interface]', '[Interface]\nListenPort = 4000'),
        interfaceName: 'gh-d0',
      }),
    );
    assert.equal(moved.code, 'tunnel-failed');
    assert.match(
      moved.message,
      /did not take the change: listenPort cannot change while the tunnel runs/,
    );
    const renamed = await refusal(
      client.request('apply-tunnel', { wgQuickConfig: withPeer, interfaceName: 'gh-d9' }),
    );
    assert.match(renamed.message, /interfaceName cannot change/);
    const unchanged = await client.request('status', {});
    assert.equal(unchanged.state === 'connected' && unchanged.peers.length, 2);

    const second = await refusal(
      client.request('start-tunnel', { ...start, interfaceName: 'gh-d1' }),
    );
    assert.equal(second.code, 'already-running');
    assert.match(second.message, /tunnel gh-d0 is connected: one tunnel at a time/);
    assert.equal(tunnels.starts.length, 1);

    assert.deepEqual(await client.request('down', {}), { stopping: true, serviceExits: false });
    assert.equal(tunnels.stops, 1);
    assert.equal((await client.request('status', {})).state, 'disconnected');

    // The daemon checks what it is sent; the key is never quoted.
    const broken = await refusal(
      client.request('start-tunnel', {
        ...start,
        wgQuickConfig: WG_QUICK.replace('Address = 10.9.0.2/24', `Address = ${key(1)}`),
      }),
    );
    assert.equal(broken.code, 'bad-request');
    assert.match(broken.message, /^gh-d0\.conf:3: /);
    assert.doesNotMatch(broken.message, new RegExp(key(1).slice(0, 16).replace(/[+/]/g, '\\$&')));
    const afterBadConfig = await client.request('status', {});
    assert.equal(
      afterBadConfig.state === 'disconnected' && afterBadConfig.failure?.reason,
      'bad-config',
    );
    const badControl = await refusal(
      client.request('start-tunnel', { ...start, dnsControl: 'nope' }),
    );
    assert.equal(badControl.code, 'bad-request');

    tunnels.failNextStart = new TunnelStartError('dns-failed', 'resolvectl: no such link');
    const failedStart = await refusal(client.request('start-tunnel', start));
    assert.equal(failedStart.code, 'tunnel-failed');
    assert.match(failedStart.message, /tunnel gh-d0 could not start: resolvectl: no such link/);
    const afterFailedStart = await client.request('status', {});
    // Each refusal is counted: 7 with a reason (no tunnel x3, one at a time, 3 not taken), 2 bad.
    assert.equal(afterFailedStart.controlSocket.refusedRequests, 7);
    assert.equal(afterFailedStart.controlSocket.badRequests, 2);
    assert.deepEqual(afterFailedStart.state === 'disconnected' && afterFailedStart.failure, {
      reason: 'dns-failed',
      message: 'resolvectl: no such link',
    });

    assert.equal((await client.request('start-tunnel', start)).state, 'connected');
    tunnels.failDataPlane(new Error('data worker 0 died 4 times'));
    const failedBy = performance.now() + 5_000;
    let afterFailure = await client.request('status', {});
    while (afterFailure.state !== 'disconnected' && performance.now() < failedBy) {
      await sleep(10);
      afterFailure = await client.request('status', {});
    }
    assert.deepEqual(afterFailure.state === 'disconnected' && afterFailure.failure, {
      reason: 'engine-failed',
      message: 'data worker 0 died 4 times',
    });
    assert.equal(tunnels.stops, 2);
    assert.equal(finished, false, 'the daemon outlives a failed tunnel');

    assert.equal((await client.request('start-tunnel', start)).state, 'connected');
    client.close();
    client = undefined;
    process.kill(process.pid, 'SIGTERM');
    assert.equal(await service, 0);
    assert.equal(tunnels.stops, 3, 'SIGTERM stopped the tunnel');
  } finally {
    client?.close();
    if (!finished) process.kill(process.pid, 'SIGTERM');
    await service;
    await rm(directory, { recursive: true, force: true });
  }
});
