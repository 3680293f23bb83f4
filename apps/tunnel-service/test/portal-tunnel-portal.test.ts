/**
 * The headless client against the REAL portal (apps/portal's runServe in this process, over
 * SQLite, on 127.0.0.1): PortalTunnel with a real PhoenixSocket and a recording dry-run tunnel
 * (no root, no interface), a fake gateway on the portal's gateway channel, and the tunnel
 * service around it (control socket, SIGHUP, SIGTERM, exit 4).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { EngineEvent } from '@gatehouse/engine';
import { silentLogger, type Logger } from '@gatehouse/logging';
import { PhoenixSocket } from '@gatehouse/phoenix-channel';
import type { ConnectionFailure, TunnelStatus } from '@gatehouse/protocol';
import { ServiceClient } from '@gatehouse/service-ipc/client';
import { skipLoudly } from '@gatehouse/test-support';
import { encodeKey } from '@gatehouse/wireguard';
import { DryRunTunnel } from '../src/dry-run-tunnel.ts';
import { PortalTunnel, SignInRequiredError } from '../src/portal-tunnel.ts';
import { clientSocketUrl } from '../src/portal-url.ts';
import {
  EXIT_SIGN_IN_REQUIRED,
  runTunnelService,
  type PortalTunnelRequest,
} from '../src/service.ts';
import type { ProxyAddressName, TunnelEvents } from '../src/tunnel.ts';
import { prefixText, type TunnelSpec } from '../src/tunnel-spec.ts';
import {
  FakeGateway,
  FAST_BACKOFF,
  FORBIDDEN_PREFIX,
  GATEWAY_ENDPOINT,
  GIT_PATTERN,
  SEARCH_DOMAIN,
  startPortal,
  UPSTREAM_DNS,
  WIKI_PREFIX,
  type PortalWorld,
} from './portal-support.ts';

const WAIT_MS = 15_000;

/** A dry-run tunnel that records what it is given and lets the test raise engine events. */
class RecordingTunnel extends DryRunTunnel {
  starts: TunnelSpec[] = [];
  applied: TunnelSpec[] = [];
  stops = 0;
  events: TunnelEvents = {};
  /** What the DNS stub would have handed out. */
  readonly proxyNames = new Map<string, ProxyAddressName>();

  override async start(spec: TunnelSpec, events?: TunnelEvents): Promise<void> {
    this.starts.push(spec);
    this.events = events ?? {};
    await super.start(spec);
  }

  override async apply(spec: TunnelSpec): Promise<void> {
    this.applied.push(spec);
    await super.apply(spec);
  }

  override async stop(): Promise<void> {
    this.stops++;
    await super.stop();
  }

  override lookupProxyAddress(address: string): ProxyAddressName | undefined {
    return this.proxyNames.get(address);
  }

  engineEvent(event: EngineEvent): void {
    this.events.onEngineEvent?.(event);
  }

  /** The spec the tunnel holds now (the last start or apply). */
  latest(): TunnelSpec | undefined {
    return this.applied.at(-1) ?? this.starts.at(-1);
  }
}

async function until(condition: () => boolean, what: string, ms = WAIT_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function world(t: TestContext): Promise<PortalWorld> {
  const w = await startPortal();
  t.after(() => w.close());
  return w;
}

function gateway(t: TestContext, w: PortalWorld): FakeGateway {
  const g = new FakeGateway(w.portal.url, w.gatewayToken().text);
  t.after(() => g.close());
  return g;
}

function collectingLogger(lines: string[]): Logger {
  return {
    ...silentLogger,
    info: (message) => lines.push(`info: ${message}`),
    warn: (message) => lines.push(`warn: ${message}`),
    error: (message) => lines.push(`error: ${message}`),
  };
}

/** PortalTunnel as the service builds it, with a real PhoenixSocket to the test's portal. */
function portalTunnel(t: TestContext, w: PortalWorld, token: string) {
  const tunnel = new RecordingTunnel();
  const failures: ConnectionFailure[] = [];
  const logs: string[] = [];
  const portal = new PortalTunnel({
    portalUrl: w.portal.url,
    interfaceName: 'gatehouse0',
    internetResource: true,
    lanBypass: true,
    deviceId: 'b6f9a3c2-4d1e-4f7a-9c3b-2e8d5a6f7b10',
    deviceName: 'build-box',
    version: '0.1.0',
    openChannel: (handlers) =>
      new PhoenixSocket({
        url: clientSocketUrl(w.portal.url),
        token,
        topic: 'client',
        joinPayload: handlers.joinPayload,
        onEvent: handlers.onEvent,
        backoff: FAST_BACKOFF,
      }),
    createTunnel: () => tunnel,
    onFailure: (failure) => failures.push(failure),
    onChange: () => {},
    logger: collectingLogger(logs),
  });
  t.after(() => portal.stop());
  return { portal, tunnel, failures, logs };
}

function byName<T extends { name: string }>(items: readonly T[]): T[] {
  return [...items].sort((a, b) => a.name.localeCompare(b.name));
}

function peerPrefixes(spec: TunnelSpec | undefined, publicKey: string): string[] {
  const peer = spec?.peers.find((p) => encodeKey(p.publicKey) === publicKey);
  return peer === undefined ? [] : peer.allowedIps.map(prefixText);
}

void describe('the headless client against the real portal', () => {
  void it('joins, starts the tunnel from init, and a route miss is authorized through the gateway', async (t) => {
    const w = await world(t);
    const c = portalTunnel(t, w, w.token.text);

    await c.portal.start();
    const [spec] = c.tunnel.starts;
    assert.ok(spec !== undefined, 'the tunnel started');
    assert.equal(spec.interfaceName, 'gatehouse0');
    assert.equal(spec.mtu, 1280);
    assert.equal(spec.lanBypass, true);
    assert.equal(spec.addresses.length, 2);
    const routes = spec.routes;
    assert.ok(routes.includes(WIKI_PREFIX), routes.join(' '));
    assert.ok(!routes.includes(FORBIDDEN_PREFIX), 'no route to what alice may not reach');
    assert.ok(routes.includes(spec.proxyRanges.ipv4), 'the proxy range for git');
    assert.deepEqual(spec.dnsResources, [GIT_PATTERN]);
    assert.deepEqual(spec.dns.servers, [UPSTREAM_DNS]);
    assert.deepEqual(spec.dns.searchDomains, [SEARCH_DOMAIN]);
    assert.deepEqual(spec.peers, [], 'no gateway until a resource is asked for');

    const status = c.portal.status();
    assert.equal(status.connection, 'connected');
    assert.equal(status.url, w.portal.url);
    assert.deepEqual(status.identity, { accountSlug: 'acme', actorName: 'alice' });
    assert.deepEqual(
      byName(status.resources).map((r) => [r.name, r.type, r.address, r.siteName, r.authorized]),
      [
        ['git', 'dns', GIT_PATTERN, 'hq', false],
        ['wiki', 'cidr', WIKI_PREFIX, 'hq', false],
      ],
    );
    assert.ok(
      status.resources.every((r) => r.siteStatus === 'offline'),
      'no gateway yet',
    );

    const g = gateway(t, w);
    await until(
      () => c.portal.status().resources.every((r) => r.siteStatus === 'online'),
      "the site's gateway to show online",
    );

    c.tunnel.engineEvent({ type: 'route-miss', destination: '10.61.0.5', family: 4 });
    await until(() => peerPrefixes(c.tunnel.latest(), g.publicKey).length > 0, 'the peer');
    assert.equal(g.flows.length, 1);
    assert.equal(g.flows[0]?.clientPublicKey, c.portal.publicKey);
    const peer = c.tunnel.latest()?.peers[0];
    assert.equal(peer?.endpoint?.host, GATEWAY_ENDPOINT.split(':')[0]);
    assert.ok(peerPrefixes(c.tunnel.latest(), g.publicKey).includes(WIKI_PREFIX));
    assert.ok(peer?.presharedKey !== undefined, 'a preshared key from the portal');
    assert.equal(c.tunnel.starts.length, 1, 'applied, not restarted');

    // A DNS resource: the stub's proxy address for a name under *.git.corp.example.
    const proxy = spec.proxyRanges.ipv4.replace(/\.0\/\d+$/, '.7');
    c.tunnel.proxyNames.set(proxy, { name: 'repo.git.corp.example', proxyAddresses: [proxy] });
    c.tunnel.engineEvent({ type: 'route-miss', destination: proxy, family: 4 });
    await until(
      () => peerPrefixes(c.tunnel.latest(), g.publicKey).includes(`${proxy}/32`),
      "the proxy address on the gateway's peer",
    );
    assert.equal(g.flows.at(-1)?.domain, 'repo.git.corp.example');

    // What alice may not reach has no route and is never asked for.
    c.tunnel.engineEvent({ type: 'route-miss', destination: '10.61.1.5', family: 4 });
    await sleep(300);
    assert.equal(g.flows.length, 2);

    const after = c.portal.status();
    assert.deepEqual(
      byName(after.resources).map((r) => [r.name, r.authorized, r.siteStatus]),
      [
        ['git', true, 'online'],
        ['wiki', true, 'online'],
      ],
    );
    assert.equal(after.counters['routeMisses'], 3);
    assert.deepEqual(c.failures, []);
    assert.ok(
      c.logs.every((line) => !line.includes(w.token.text.split('.')[2] ?? '?')),
      'no log line holds the token',
    );
  });

  void it('a portal restart: the client reconnects by itself and the tunnel stays up', async (t) => {
    const w = await world(t);
    const g = gateway(t, w);
    const c = portalTunnel(t, w, w.token.text);
    await c.portal.start();
    await until(() => g.joins === 1, 'the gateway to join');
    c.tunnel.engineEvent({ type: 'route-miss', destination: '10.61.0.5', family: 4 });
    await until(() => peerPrefixes(c.tunnel.latest(), g.publicKey).length > 0, 'the peer');
    const joinsBefore = c.portal.status().counters['joins'];

    await w.restart();
    await until(
      () => c.portal.status().counters['joins'] === (joinsBefore ?? 0) + 1,
      'the client to join the restarted portal',
    );
    await until(() => c.portal.status().connection === 'connected', 'connected again');
    await until(() => g.joins === 2, 'the gateway to join again');
    assert.equal(c.tunnel.starts.length, 1, 'the tunnel was not started again');
    assert.equal(c.tunnel.stops, 0, 'the tunnel was not stopped');
    assert.ok(c.portal.tunnelUp);
    assert.deepEqual(c.failures, []);
    assert.ok(
      c.logs.some((line) => line === 'info: portal: connected again'),
      c.logs.join('\n'),
    );

    // The portal kept the flow: asked again, the same gateway's peer stays.
    c.tunnel.engineEvent({ type: 'route-miss', destination: '10.61.0.9', family: 4 });
    await sleep(300);
    assert.ok(peerPrefixes(c.tunnel.latest(), g.publicKey).includes(WIKI_PREFIX));
  });

  void it('a revoked token: the client is signed out and says sign-in required', async (t) => {
    const w = await world(t);
    const c = portalTunnel(t, w, w.token.text);
    await c.portal.start();

    w.revoke(w.token.id);
    await until(() => c.failures.length > 0, 'the sign-in-required failure');
    assert.equal(c.failures[0]?.reason, 'sign-in-required');
    assert.match(c.failures[0]?.message ?? '', /^sign-in required: the portal refused the token/);
    assert.equal(c.portal.status().connection, 'signed-out');
    assert.equal(c.portal.reconnect(), false, 'a signed-out tunnel does not reconnect on SIGHUP');
  });

  void it('a token the portal does not know: start rejects with SignInRequiredError', async (t) => {
    const w = await world(t);
    const bogus = w.clientToken();
    w.revoke(bogus.id);
    const c = portalTunnel(t, w, bogus.text);
    await assert.rejects(c.portal.start(), SignInRequiredError);
    assert.equal(c.tunnel.starts.length, 0, 'no tunnel without a token');
    assert.equal(c.portal.status().connection, 'signed-out');
  });
});

void describe('the tunnel service with a portal tunnel', () => {
  function serviceRequest(w: PortalWorld, token: string): PortalTunnelRequest {
    return {
      portalUrl: w.portal.url,
      token,
      interfaceName: 'gatehouse0',
      dnsControl: 'disabled',
      internetResource: true,
      lanBypass: true,
    };
  }

  function service(t: TestContext, foreground?: PortalTunnelRequest) {
    const dir = mkdtempSync(join(tmpdir(), 'gh-portal-service-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const tunnels: RecordingTunnel[] = [];
    const logs: string[] = [];
    const socketPath = join(dir, 'tunnel.sock');
    const exited = runTunnelService({
      socketPath,
      stateDirectory: join(dir, 'state'),
      createTunnel: () => {
        const tunnel = new RecordingTunnel();
        tunnels.push(tunnel);
        return tunnel;
      },
      ...(foreground === undefined ? {} : { foreground: { portal: foreground } }),
      serviceVersion: '0.1.0',
      logger: collectingLogger(logs),
    });
    return { socketPath, exited, tunnels, logs };
  }

  async function statusWhen(
    client: ServiceClient,
    condition: (status: TunnelStatus) => boolean,
    what: string,
  ): Promise<TunnelStatus> {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const status = await client.request('status', {});
      if (condition(status)) return status;
      assert.ok(Date.now() < deadline, `timed out waiting for ${what}: ${JSON.stringify(status)}`);
      await sleep(50);
    }
  }

  async function connectWhenServing(socketPath: string): Promise<ServiceClient> {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      try {
        return await ServiceClient.connect({ socketPath });
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await sleep(20);
      }
    }
  }

  void it('the daemon: start-portal-tunnel, status shows the portal side, SIGHUP reconnects, revoking signs out', async (t) => {
    if (process.getuid?.() !== 0) {
      skipLoudly(t, 'needs root: the control socket only admits root (SO_PEERCRED uid 0)');
      return;
    }
    const w = await world(t);
    const s = service(t);
    const client = await connectWhenServing(s.socketPath);
    t.after(() => client.close());

    const started = await client.request('start-portal-tunnel', serviceRequest(w, w.token.text));
    assert.equal(started.state, 'connected');
    assert.deepEqual(started.portal?.identity, { accountSlug: 'acme', actorName: 'alice' });
    assert.equal(started.portal?.connection, 'connected');
    assert.deepEqual(started.portal?.resources.map((r) => r.name).sort(), ['git', 'wiki']);
    assert.ok(!JSON.stringify(started).includes(w.token.text), 'the status never holds the token');

    process.kill(process.pid, 'SIGHUP');
    let status = await statusWhen(
      client,
      (now) => now.portal?.counters['joins'] === 2,
      'the second join after SIGHUP',
    );
    assert.equal(status.portal?.counters['manualReconnects'], 1);
    assert.equal(status.state, 'connected', 'the tunnel stayed up');
    assert.equal(s.tunnels.length, 1);
    assert.equal(s.tunnels[0]?.stops, 0);
    assert.ok(s.logs.includes('info: portal: reconnecting (SIGHUP)'), s.logs.join('\n'));

    w.revoke(w.token.id);
    status = await statusWhen(client, (now) => now.state === 'disconnected', 'the sign-out');
    assert.ok(status.state === 'disconnected');
    assert.equal(status.failure?.reason, 'sign-in-required');
    assert.equal(status.portal?.connection, 'signed-out');
    assert.equal(s.tunnels[0]?.stops, 1, 'the tunnel was taken down');

    process.kill(process.pid, 'SIGTERM');
    assert.equal(await s.exited, 0);
  });

  void it('in the foreground: a refused token ends the service with exit 4', async (t) => {
    const w = await world(t);
    const bogus = w.clientToken();
    w.revoke(bogus.id);
    const s = service(t, serviceRequest(w, bogus.text));
    assert.equal(await s.exited, EXIT_SIGN_IN_REQUIRED);
    assert.equal(s.tunnels.length, 0);
    assert.ok(
      s.logs.some((line) => /^error: sign-in required: the portal refused the token/.test(line)),
      s.logs.join('\n'),
    );
    assert.ok(
      s.logs.every((line) => !line.includes(bogus.text)),
      'no log line holds the token',
    );
  });

  void it('in the foreground: a token revoked while running ends the service with exit 4, SIGTERM with 0', async (t) => {
    const w = await world(t);
    const revoked = service(t, serviceRequest(w, w.token.text));
    await until(() => revoked.tunnels[0]?.starts.length === 1, 'the tunnel to start');
    w.revoke(w.token.id);
    assert.equal(await revoked.exited, EXIT_SIGN_IN_REQUIRED);
    assert.equal(revoked.tunnels[0]?.stops, 1);

    const stopped = service(t, serviceRequest(w, w.clientToken().text));
    await until(() => stopped.tunnels[0]?.starts.length === 1, 'the tunnel to start');
    await until(
      () => stopped.logs.some((line) => line.startsWith('info: tunnel gatehouse0 is up')),
      'the service to say the tunnel is up',
    );
    process.kill(process.pid, 'SIGTERM');
    assert.equal(await stopped.exited, 0);
    assert.equal(stopped.tunnels[0]?.stops, 1, 'SIGTERM took the tunnel down');
  });
});
