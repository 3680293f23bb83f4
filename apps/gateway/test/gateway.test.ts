/**
 * The gateway's wiring with every part faked: the order of start and stop,
 * plans applied before planApplied, pushes and resolutions carried out,
 * what a lost connection and a refused token do, a failed apply retried.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { EngineEvent, EnginePeer, EngineStatus } from '@gatehouse/engine';
import type { Logger } from '@gatehouse/logging';
import type { ChannelEvent } from '@gatehouse/phoenix-channel';

import {
  EXIT_FAILURE,
  EXIT_SIGNED_OUT,
  EXIT_STOPPED,
  Gateway,
  SIGNED_OUT_MESSAGE,
  type GatewayParts,
  type SessionEffect,
  type SessionPlan,
  type SessionPort,
} from '../src/gateway.ts';
import type { ResolveOutcome } from '../src/name-resolution.ts';
import type { TablePlan } from '../src/nftables.ts';

const EMPTY_PLAN: SessionPlan = {
  version: 0,
  interface: undefined,
  tunnelRanges: undefined,
  proxyRanges: undefined,
  peers: [],
  dnat: [],
};

const INIT_PLAN: SessionPlan = {
  ...EMPTY_PLAN,
  version: 1,
  interface: { ipv4: '100.64.0.1', ipv6: 'fd00:2021:1111::1' },
  tunnelRanges: { ipv4: '100.64.0.0/11', ipv6: 'fd00:2021:1111::/107' },
  proxyRanges: { ipv4: '100.96.0.0/11', ipv6: 'fd00:2021:1111:8000::/107' },
};

const PEER: EnginePeer = {
  publicKey: new Uint8Array(32).fill(7),
  presharedKey: new Uint8Array(32).fill(8),
  allowedIps: ['100.64.0.2/32', 'fd00:2021:1111::2/128'],
  policy: [{ destination: '10.0.0.0/24', protocol: 'any' }],
};

/** A session that turns a few messages into plans and effects, and records what it was told. */
class FakeSession implements SessionPort {
  readonly effects: SessionEffect[] = [];
  current: SessionPlan = EMPTY_PLAN;
  readonly applied: number[] = [];
  readonly resolutions: { name: string; outcome: ResolveOutcome }[] = [];
  readonly messages: string[] = [];
  readonly #afterApply = new Map<number, SessionEffect>();

  handleMessage(event: string): void {
    this.messages.push(event);
    if (event === 'init') this.#plan(INIT_PLAN);
    if (event === 'authorize_flow') {
      this.#plan({ ...this.current, version: this.current.version + 1, peers: [PEER] });
      this.#afterApply.set(this.current.version, {
        type: 'push',
        event: 'flow_authorized',
        payload: { ref: '1' },
      });
    }
    if (event === 'dns_flow') this.effects.push({ type: 'resolve', name: 'app.example.com' });
  }

  handleResolution(name: string, outcome: ResolveOutcome): void {
    this.resolutions.push({ name, outcome });
  }

  handleTimeout(): void {}

  nextDeadline(): number | undefined {
    return undefined;
  }

  pollEffect(): SessionEffect | undefined {
    return this.effects.shift();
  }

  plan(): SessionPlan {
    return this.current;
  }

  planApplied(version: number): void {
    this.applied.push(version);
    const effect = this.#afterApply.get(version);
    if (effect !== undefined) this.effects.push(effect);
    this.#afterApply.delete(version);
  }

  stats(): unknown {
    return { messages: { init: this.messages.filter((m) => m === 'init').length } };
  }

  #plan(plan: SessionPlan): void {
    this.current = plan;
    this.effects.push({ type: 'plan-changed' });
  }
}

interface Harness {
  parts: GatewayParts;
  session: FakeSession;
  calls: string[];
  logs: string[];
  pushes: { event: string; payload: unknown }[];
  peers: EnginePeer[][];
  tables: TablePlan[];
  emit(event: ChannelEvent): void;
  engineEvent(event: EngineEvent): void;
  failTableApplies: { count: number };
}

function harness(): Harness {
  const calls: string[] = [];
  const logs: string[] = [];
  const pushes: { event: string; payload: unknown }[] = [];
  const peers: EnginePeer[][] = [];
  const tables: TablePlan[] = [];
  const failTableApplies = { count: 0 };
  const session = new FakeSession();
  let onPortalEvent: (event: ChannelEvent) => void = () => {};
  let onEngineEvent: (event: EngineEvent) => void = () => {};
  const logger: Logger = {
    debug: (m) => logs.push(`debug: ${m}`),
    info: (m) => logs.push(`info: ${m}`),
    warn: (m) => logs.push(`warn: ${m}`),
    error: (m) => logs.push(`error: ${m}`),
  };
  const parts: GatewayParts = {
    interfaceName: 'gw0',
    session,
    logger,
    applyRetryMs: 20,
    startEngine: async (hooks) => {
      calls.push('engine.start');
      onEngineEvent = hooks.onEvent;
      return {
        setPeers: (list) => {
          calls.push('engine.setPeers');
          peers.push(list);
        },
        status: () =>
          ({
            interfaceName: 'gw0',
            listenPort: 51820,
            cryptoProvider: 'fake',
            peers: [],
            noRoute: 0,
            workerRestarts: 0,
            failure: null,
            unattributedDrops: {},
          }) as unknown as EngineStatus,
        stop: async () => {
          calls.push('engine.stop');
        },
      };
    },
    openPortal: (onEvent) => {
      calls.push('portal.open');
      onPortalEvent = onEvent;
      return {
        start: () => calls.push('portal.start'),
        push: (event, payload) => {
          pushes.push({ event, payload });
          return String(pushes.length);
        },
        close: async () => {
          calls.push('portal.close');
        },
        state: 'joined',
        stats: { reconnects: 0 },
      };
    },
    table: {
      apply: async (plan) => {
        calls.push('table.apply');
        if (failTableApplies.count > 0) {
          failTableApplies.count--;
          throw new Error('nft: busy');
        }
        tables.push(plan);
      },
      remove: async () => {
        calls.push('table.remove');
      },
      unmapped: async () => ({ packets: 0, bytes: 0 }),
    },
    tun: {
      removeLeftover: async () => {
        calls.push('tun.removeLeftover');
        return false;
      },
      bringUp: async (mtu) => {
        calls.push(`tun.bringUp ${mtu}`);
      },
      setAddresses: async (addresses) => {
        calls.push(`tun.setAddresses ${addresses.ipv4} ${addresses.ipv6}`);
      },
      setRoutes: async (ranges) => {
        calls.push(`tun.setRoutes ${ranges?.ipv4} ${ranges?.ipv6}`);
      },
      remove: async () => {
        calls.push('tun.remove');
      },
    },
    forwarding: {
      enable: () => calls.push('forwarding.enable'),
      restore: () => calls.push('forwarding.restore'),
    },
    resolve: async () => ({ ok: true, ipv4: ['10.0.0.5'], ipv6: [], ttlSeconds: 30 }),
  };
  return {
    parts,
    session,
    calls,
    logs,
    pushes,
    peers,
    tables,
    failTableApplies,
    emit: (event) => onPortalEvent(event),
    engineEvent: (event) => onEngineEvent(event),
  };
}

/** Lets the fakes' promises and the gateway's apply loop run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

void test('start: leftovers first, then the engine, the TUN, forwarding, the first table, the portal', async () => {
  const h = harness();

  const gateway = await Gateway.start(h.parts);

  assert.deepEqual(h.calls, [
    'table.remove',
    'tun.removeLeftover',
    'engine.start',
    'tun.bringUp 1280',
    'forwarding.enable',
    'engine.setPeers',
    'table.apply',
    'portal.open',
    'portal.start',
  ]);
  assert.deepEqual(h.session.applied, [0]);
  await gateway.stop();
});

void test('a plan is applied — peers, addresses, routes, table — before planApplied, whose push goes out', async () => {
  const h = harness();
  const gateway = await Gateway.start(h.parts);
  h.calls.length = 0;

  h.emit({ type: 'message', event: 'init', payload: {} });
  await settle();
  h.emit({ type: 'message', event: 'authorize_flow', payload: {} });
  await settle();

  assert.deepEqual(h.calls, [
    'engine.setPeers',
    'tun.setAddresses 100.64.0.1 fd00:2021:1111::1',
    'tun.setRoutes 100.64.0.0/11 fd00:2021:1111::/107',
    'table.apply',
    // The second plan: same interface and ranges, so only peers and the table.
    'engine.setPeers',
    'table.apply',
  ]);
  assert.deepEqual(h.session.applied, [0, 1, 2]);
  assert.deepEqual(h.peers.at(-1), [PEER]);
  assert.deepEqual(h.pushes, [{ event: 'flow_authorized', payload: { ref: '1' } }]);
  await gateway.stop();
});

void test('a resolve effect is answered with handleResolution', async () => {
  const h = harness();
  const gateway = await Gateway.start(h.parts);

  h.emit({ type: 'message', event: 'dns_flow', payload: {} });
  await settle();

  assert.equal(h.session.resolutions.length, 1);
  assert.equal(h.session.resolutions[0]?.name, 'app.example.com');
  assert.equal(h.session.resolutions[0]?.outcome.ok, true);
  assert.equal(gateway.counters.resolutions, 1);
  await gateway.stop();
});

void test('a lost portal connection tears nothing down', async () => {
  const h = harness();
  const gateway = await Gateway.start(h.parts);
  h.emit({ type: 'message', event: 'init', payload: {} });
  await settle();
  h.calls.length = 0;

  h.emit({ type: 'disconnected', reason: 'the WebSocket closed (1006)', retryInMs: 1500 });
  await settle();

  assert.deepEqual(h.calls, []);
  assert.equal(gateway.counters.portalDisconnects, 1);
  assert.ok(h.logs.some((line) => /warn: the portal connection is down .* 1\.5 s/.test(line)));
  await gateway.stop();
});

void test('a refused token: the message, the teardown in order, exit 3', async () => {
  const h = harness();
  const gateway = await Gateway.start(h.parts);
  h.calls.length = 0;

  h.emit({ type: 'signed-out', reason: 'invalid_token' });

  assert.equal(await gateway.finished, EXIT_SIGNED_OUT);
  assert.ok(h.logs.includes(`error: ${SIGNED_OUT_MESSAGE}`));
  assert.deepEqual(h.calls, [
    'portal.close',
    'engine.stop',
    'table.remove',
    'forwarding.restore',
    'tun.remove',
  ]);
});

void test('stop by a signal exits 0; a teardown step that fails makes it 1', async () => {
  const h = harness();
  const gateway = await Gateway.start(h.parts);
  assert.equal(await gateway.stop(EXIT_STOPPED, 'received SIGTERM'), EXIT_STOPPED);
  assert.equal(await gateway.finished, EXIT_STOPPED);

  const failing = harness();
  failing.parts.table.remove = async () => {
    throw new Error('nft: permission denied');
  };
  await assert.rejects(Gateway.start(failing.parts), /permission denied/);

  const late = harness();
  const lateGateway = await Gateway.start(late.parts);
  late.parts.tun.remove = async () => {
    throw new Error('ip: busy');
  };
  assert.equal(await lateGateway.stop(EXIT_STOPPED, 'received SIGINT'), EXIT_FAILURE);
});

void test('a plan that cannot be applied is counted and tried again', async () => {
  const h = harness();
  const gateway = await Gateway.start(h.parts);
  h.failTableApplies.count = 1;

  h.emit({ type: 'message', event: 'init', payload: {} });
  await settle();
  assert.deepEqual(h.session.applied, [0]);
  assert.equal(gateway.counters.planApplyFailures, 1);
  const deadline = Date.now() + 2_000;
  while (h.session.applied.length < 2 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }

  assert.deepEqual(h.session.applied, [0, 1]);
  assert.ok(h.logs.some((line) => /error: applying plan v1 failed .*nft: busy/.test(line)));
  await gateway.stop();
});

void test('route misses are counted; the status line carries the counters', async () => {
  const h = harness();
  const gateway = await Gateway.start(h.parts);

  h.emit({ type: 'message', event: 'init', payload: {} });
  await settle();
  h.engineEvent({ type: 'route-miss', destination: '100.64.0.9', family: 4 });
  const line = await gateway.statusLine();

  assert.equal(gateway.counters.routeMisses, 1);
  assert.match(line, /^status: portal joined/);
  assert.match(line, /routeMisses=1/);
  assert.match(line, /proxy_unmapped 0 packets/);
  assert.match(line, /plan v1 \(applied v1\)/);
  assert.match(line, /session \{messages\.init=1\}/);
  await gateway.stop();
});
