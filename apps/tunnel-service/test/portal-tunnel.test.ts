import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { EngineEvent } from '@gatehouse/engine';
import { silentLogger, type Logger } from '@gatehouse/logging';
import type { ChannelEvent, ChannelStats } from '@gatehouse/phoenix-channel';
import type { ConnectionFailure } from '@gatehouse/protocol';
import { encodeKey, generateKeyPair } from '@gatehouse/wireguard';
import { DryRunTunnel } from '../src/dry-run-tunnel.ts';
import {
  PortalTunnel,
  SignInRequiredError,
  type PortalChannel,
  type PortalChannelHandlers,
} from '../src/portal-tunnel.ts';
import { TunnelStartError, type TunnelEvents } from '../src/tunnel.ts';
import type { TunnelSpec } from '../src/tunnel-spec.ts';

const CIDR_ID = '73037362-715d-4a83-a749-f18eadd970e6';
const GATEWAY_KEY = encodeKey(generateKeyPair().publicKey);

const INIT = {
  interface: {
    ipv4: '100.72.112.111',
    ipv6: 'fd00:2021:1111::13:efb9',
    upstream_dns: [{ protocol: 'ip_port', address: '1.1.1.1:53' }],
    search_domain: 'corp.example',
  },
  address_ranges: {
    tunnel_ipv4: '100.64.0.0/11',
    tunnel_ipv6: 'fd00:2021:1111::/107',
    proxy_ipv4: '100.96.0.0/11',
    proxy_ipv6: 'fd00:2021:1111:8000::/107',
  },
  resources: [
    {
      id: CIDR_ID,
      type: 'cidr',
      name: 'lab',
      address: '10.50.0.0/24',
      address_description: null,
      sites: [{ id: 'bf56f32d-7b2c-4f5d-a784-788977d014a4', name: 'hq' }],
      filters: [],
      status: 'online',
    },
  ],
  relays: [],
  identity: { account_slug: 'acme', actor_name: 'Alice' },
};

const AUTHORIZED = {
  resource_id: CIDR_ID,
  gateway_id: 'e8f0d9a0-8d37-4d3a-9a2b-5c7f1a2b3c4d',
  site_id: 'bf56f32d-7b2c-4f5d-a784-788977d014a4',
  gateway_public_key: GATEWAY_KEY,
  gateway_endpoints: ['203.0.113.7:51820'],
  gateway_ipv4: '100.115.164.78',
  gateway_ipv6: 'fd00:2021:1111::2c:f6ab',
  preshared_key: encodeKey(generateKeyPair().privateKey),
  expires_at: null,
};

class FakeChannel implements PortalChannel {
  readonly handlers: PortalChannelHandlers;
  readonly pushes: { event: string; payload: unknown }[] = [];
  started = false;
  closed = false;
  readonly stats: ChannelStats = {
    malformedFrames: 0,
    unexpectedFrames: 0,
    unmatchedReplies: 0,
    heartbeatsSent: 0,
    heartbeatsAnswered: 0,
    reconnects: 2,
    joins: 1,
    droppedPushes: 0,
  };

  constructor(handlers: PortalChannelHandlers) {
    this.handlers = handlers;
  }

  start(): void {
    this.started = true;
  }

  push(event: string, payload: unknown): string | undefined {
    this.pushes.push({ event, payload });
    return String(this.pushes.length);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  emit(event: ChannelEvent): void {
    this.handlers.onEvent(event);
  }

  message(event: string, payload: unknown): void {
    this.emit({ type: 'message', event, payload });
  }
}

class RecordingTunnel extends DryRunTunnel {
  starts: TunnelSpec[] = [];
  applied: TunnelSpec[] = [];
  stops = 0;
  events: TunnelEvents = {};
  failStart: Error | undefined;

  override async start(spec: TunnelSpec, events?: TunnelEvents): Promise<void> {
    this.starts.push(spec);
    this.events = events ?? {};
    if (this.failStart !== undefined) throw this.failStart;
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

  engineEvent(event: EngineEvent): void {
    this.events.onEngineEvent?.(event);
  }
}

function harness() {
  const channels: FakeChannel[] = [];
  const tunnel = new RecordingTunnel();
  const failures: ConnectionFailure[] = [];
  const logs: string[] = [];
  const logger: Logger = {
    ...silentLogger,
    info: (message) => logs.push(`info: ${message}`),
    warn: (message) => logs.push(`warn: ${message}`),
    error: (message) => logs.push(`error: ${message}`),
  };
  let changes = 0;
  const portal = new PortalTunnel({
    portalUrl: 'https://portal.example',
    interfaceName: 'gatehouse0',
    internetResource: true,
    lanBypass: false,
    deviceId: 'device-1',
    deviceName: 'build-box',
    version: '0.1.0',
    openChannel: (handlers) => {
      const channel = new FakeChannel(handlers);
      channels.push(channel);
      return channel;
    },
    createTunnel: () => tunnel,
    onFailure: (failure) => failures.push(failure),
    onChange: () => changes++,
    logger,
  });
  const channel = (): FakeChannel => {
    const last = channels.at(-1);
    assert.ok(last !== undefined, 'a channel was opened');
    return last;
  };
  return { portal, channels, channel, tunnel, failures, logs, changes: () => changes };
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 2000;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(5);
  }
}

void describe('PortalTunnel', () => {
  void it('joins with its key and device, starts the tunnel on init, shows the portal side', async () => {
    const h = harness();
    const started = h.portal.start();
    const channel = h.channel();
    assert.equal(channel.started, true);
    assert.deepEqual(channel.handlers.joinPayload(), {
      public_key: h.portal.publicKey,
      device_id: 'device-1',
      name: 'build-box',
      os_name: 'Linux',
      os_version: (channel.handlers.joinPayload() as { os_version: string }).os_version,
      version: '0.1.0',
    });
    assert.equal(h.portal.status().connection, 'connecting');

    channel.emit({ type: 'joined', response: {} });
    channel.message('init', INIT);
    await started;
    assert.equal(h.portal.tunnelUp, true);
    const [spec] = h.tunnel.starts;
    assert.equal(spec?.interfaceName, 'gatehouse0');
    assert.equal(spec?.lanBypass, false, "the user's setting");
    assert.deepEqual(spec?.proxyRanges, {
      ipv4: '100.96.0.0/11',
      ipv6: 'fd00:2021:1111:8000::/107',
    });
    assert.ok(spec?.routes.includes('10.50.0.0/24'), JSON.stringify(spec?.routes));

    const status = h.portal.status();
    assert.equal(status.connection, 'connected');
    assert.deepEqual(status.identity, { accountSlug: 'acme', actorName: 'Alice' });
    assert.deepEqual(status.resources, [
      {
        id: CIDR_ID,
        name: 'lab',
        type: 'cidr',
        address: '10.50.0.0/24',
        siteName: 'hq',
        siteStatus: 'online',
        authorized: false,
      },
    ]);
    assert.equal(status.counters['session.messages.init'], 1);
    assert.equal(status.counters['channel.reconnects'], 2);
    assert.equal(h.portal.tunnelReport().interfaceName, 'gatehouse0');
    await h.portal.stop();
    assert.equal(h.tunnel.stops, 1);
    assert.equal(channel.closed, true);
  });

  void it('a route miss asks the portal; the authorization becomes the gateway peer', async () => {
    const h = harness();
    const started = h.portal.start();
    h.channel().emit({ type: 'joined', response: {} });
    h.channel().message('init', INIT);
    await started;

    h.tunnel.engineEvent({ type: 'route-miss', destination: '10.50.0.7', family: 4 });
    const ask = h.channel().pushes.find((push) => push.event === 'request_authorization');
    assert.ok(ask !== undefined, JSON.stringify(h.channel().pushes));
    assert.equal((ask.payload as { resource_id: string }).resource_id, CIDR_ID);

    h.channel().message('authorization_created', AUTHORIZED);
    await until(() => h.tunnel.applied.length > 0, 'the spec with the gateway');
    const peer = h.tunnel.applied.at(-1)?.peers[0];
    assert.equal(peer === undefined ? '' : encodeKey(peer.publicKey), GATEWAY_KEY);
    assert.ok(h.portal.status().resources[0]?.authorized);
    assert.equal(h.portal.status().counters['routeMisses'], 1);

    h.tunnel.engineEvent({ type: 'handshake-failed', peer: GATEWAY_KEY, droppedPackets: 1 });
    assert.equal(h.portal.status().counters['handshakeFailures'], 1);
    await h.portal.stop();
  });

  void it('malformed pushes are counted and change nothing', async () => {
    const h = harness();
    const started = h.portal.start();
    h.channel().message('init', INIT);
    await started;
    h.channel().message('authorization_created', { resource_id: 7 });
    h.channel().message('init', 'not an init');
    h.channel().message('no_such_event', {});
    await sleep(10);
    assert.deepEqual(h.tunnel.applied, []);
    const counters = h.portal.status().counters;
    assert.equal(counters['session.malformed'], 2);
    assert.equal(counters['session.unknownEvents'], 1);
    await h.portal.stop();
  });

  void it('signed out while up: the owner hears sign-in-required, with how to get a new token', async () => {
    const h = harness();
    const started = h.portal.start();
    h.channel().emit({ type: 'joined', response: {} });
    h.channel().message('init', INIT);
    await started;
    h.channel().emit({
      type: 'signed-out',
      reason: 'the portal refused the token (HTTP 401 invalid_token)',
    });
    assert.equal(h.failures.length, 1);
    assert.equal(h.failures[0]?.reason, 'sign-in-required');
    assert.match(h.failures[0]?.message ?? '', /^sign-in required: the portal refused the token/);
    assert.match(h.failures[0]?.message ?? '', /gatehouse-portal token create/);
    assert.equal(h.portal.status().connection, 'signed-out');
    assert.equal(h.portal.reconnect(), false, 'nothing to reconnect once signed out');
    assert.equal(h.tunnel.stops, 0, 'the owner takes the tunnel down');
    await h.portal.stop();
    assert.equal(h.tunnel.stops, 1);
  });

  void it('signed out before the first init: start rejects and the channel is closed', async () => {
    const h = harness();
    const started = h.portal.start();
    h.channel().emit({ type: 'signed-out', reason: 'the portal ended the session: token_expired' });
    await assert.rejects(started, SignInRequiredError);
    await until(() => h.channel().closed, 'the channel closed');
    assert.deepEqual(h.failures, [], 'the start failed: no failure after it');
    assert.equal(h.tunnel.starts.length, 0);
  });

  void it('reconnect opens a new channel, ignores the old one, and keeps the tunnel', async () => {
    const h = harness();
    const started = h.portal.start();
    const first = h.channel();
    first.emit({ type: 'joined', response: {} });
    first.message('init', INIT);
    await started;

    assert.equal(h.portal.reconnect(), true);
    assert.equal(h.channels.length, 2);
    await until(() => first.closed, 'the old channel closed');
    assert.equal(h.portal.status().connection, 'reconnecting');
    first.emit({ type: 'signed-out', reason: 'stale' });
    assert.deepEqual(h.failures, [], "the old channel's events are stale");

    const second = h.channel();
    assert.equal(second.started, true);
    second.emit({ type: 'joined', response: {} });
    second.message('init', INIT);
    assert.equal(h.portal.status().connection, 'connected');
    assert.equal(h.tunnel.starts.length, 1, 'the tunnel was not restarted');
    assert.equal(h.tunnel.stops, 0);
    assert.equal(h.portal.status().counters['manualReconnects'], 1);
    await h.portal.stop();
  });

  void it('disconnects and refused joins show as reconnecting with the reason', async () => {
    const h = harness();
    const started = h.portal.start();
    h.channel().emit({
      type: 'disconnected',
      reason: 'could not connect: ECONNREFUSED',
      retryInMs: 800,
    });
    assert.equal(h.portal.status().connection, 'connecting', 'never joined yet');
    assert.equal(h.portal.status().lastError, 'could not connect: ECONNREFUSED');
    h.channel().emit({ type: 'joined', response: {} });
    assert.equal(h.portal.status().lastError, undefined);
    h.channel().emit({
      type: 'join-refused',
      response: { reason: 'too_many_devices' },
      retryInMs: 1000,
    });
    assert.equal(h.portal.status().connection, 'reconnecting');
    assert.match(h.portal.status().lastError ?? '', /refused the join \(too_many_devices\)/);
    await h.portal.stop();
    await assert.rejects(started, /stopped before the portal configured the tunnel/);
  });

  void it("the first tunnel's failed start rejects start with its step and closes the channel", async () => {
    const h = harness();
    h.tunnel.failStart = new TunnelStartError('setup-failed', 'ip link add failed');
    const started = h.portal.start();
    h.channel().message('init', INIT);
    await assert.rejects(started, (error: unknown) => {
      assert.ok(error instanceof TunnelStartError);
      assert.equal(error.reason, 'setup-failed');
      return true;
    });
    await until(() => h.channel().closed, 'the channel closed');
  });

  void it("the data plane's failure reaches the owner as engine-failed", async () => {
    const h = harness();
    const started = h.portal.start();
    h.channel().message('init', INIT);
    await started;
    h.tunnel.events.onFailed?.(new Error('data worker 0 died 4 times'));
    assert.deepEqual(h.failures, [
      { reason: 'engine-failed', message: 'data worker 0 died 4 times' },
    ]);
    await h.portal.stop();
  });
});
