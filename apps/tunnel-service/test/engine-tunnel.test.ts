import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseEndpoint } from '@gatehouse/addresses';
import { DNS_STUB_REFUSALS as STUB_REFUSALS } from '@gatehouse/dns-stub';
import type { EngineEvent, EngineOptions, EnginePeer, EngineStatus } from '@gatehouse/engine';
import type { DnsSettings, InterfaceSettings, RoutingOptions } from '@gatehouse/netconfig';
import {
  DNS_STUB_REFUSALS,
  type ConnectionFailureReason,
  type DnsStatus,
  type DnsStubCounters,
} from '@gatehouse/protocol';
import { silentLogger, type Logger } from '@gatehouse/logging';
import {
  EngineTunnel,
  type EngineTunnelDependencies,
  type ResourceStubOptions,
} from '../src/engine-tunnel.ts';
import { NO_DNS_RESOURCES, TunnelStartError } from '../src/tunnel.ts';
import type { PeerSpec, TunnelSpec } from '../src/tunnel-spec.ts';
import { parseWgQuickConfig, tunnelSpecFromWgQuick } from '../src/wg-quick-config.ts';

const key = (byte: number) => Buffer.alloc(32, byte).toString('base64');

const STUB_COUNTERS: DnsStubCounters = {
  assignments: 3,
  quarantined: 1,
  reclaimed: 2,
  refused: {
    ...(Object.fromEntries(
      DNS_STUB_REFUSALS.map((reason) => [reason, 0]),
    ) as DnsStubCounters['refused']),
    'not-local': 4,
  },
};

function config(text: string): TunnelSpec {
  const parsed = parseWgQuickConfig(text);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  return tunnelSpecFromWgQuick(parsed.config, 'gh-unit0');
}

const CONFIG = config(`[Interface]
PrivateKey = ${key(1)}
Address = 10.9.0.2/24, fd00:9::2/64
ListenPort = 51999
DNS = 10.9.0.1, corp.example

[Peer]
PublicKey = ${key(2)}
Endpoint = gw.example:51820
AllowedIPs = 10.9.0.0/24, 100.64.0.0/10, fd00:9::/64
PersistentKeepalive = 25
`);

const FULL_TUNNEL = config(`[Interface]
PrivateKey = ${key(1)}
Address = 10.9.0.2/32
MTU = 1380
FwMark = 0x1234

[Peer]
PublicKey = ${key(2)}
AllowedIPs = 0.0.0.0/0
`);

const STEPS = [
  'lookup',
  'flush',
  'startSystemDns',
  'startEngine',
  'configureInterface',
  'setRoutes',
  'dns.use',
] as const;
type Step = (typeof STEPS)[number];

interface Harness {
  deps: EngineTunnelDependencies;
  /** Steps that throw from now on. */
  failing: Set<string>;
  calls: string[];
  engineStarts: Array<{ options: EngineOptions; peers: EnginePeer[] }>;
  setPeers: EnginePeer[][];
  stubStarts: ResourceStubOptions[];
  dnsUses: DnsSettings[];
  interfaces: InterfaceSettings[];
  routes: string[][];
  routeOptions: RoutingOptions[];
  logs: string[];
}

function harness(options: { failAt?: Step | 'startResourceStub'; previous?: string[] } = {}) {
  const h: Harness = {
    calls: [],
    engineStarts: [],
    setPeers: [],
    stubStarts: [],
    dnsUses: [],
    interfaces: [],
    routes: [],
    routeOptions: [],
    logs: [],
    failing: new Set(options.failAt === undefined ? [] : [options.failAt]),
    deps: undefined as unknown as EngineTunnelDependencies,
  };
  const step = (name: string) => {
    h.calls.push(name);
    if (h.failing.has(name)) throw new Error(`${name} failed`);
  };
  let dnsStatus: DnsStatus = {
    servers: [],
    searchDomains: [],
    reapplied: 0,
    checkFailures: 0,
    applied: false,
    reason: 'x',
  };
  const logger: Logger = {
    ...silentLogger,
    info: (message) => h.logs.push(`info: ${message}`),
    warn: (message) => h.logs.push(`warn: ${message}`),
    error: (message) => h.logs.push(`error: ${message}`),
  };
  h.deps = {
    logger,
    lookupHost: async (host) => {
      step('lookup');
      assert.equal(host, 'gw.example');
      return '192.0.2.7';
    },
    createRouting: (identity) => {
      h.calls.push(`routing ${identity.interfaceName} mark 0x${identity.mark.toString(16)}`);
      return {
        flush: async () => step('flush'),
        configureInterface: async (settings) => {
          h.interfaces.push(settings);
          step('configureInterface');
        },
        setRoutes: async (prefixes, routeOptions) => {
          h.routes.push([...prefixes]);
          h.routeOptions.push(routeOptions);
          step('setRoutes');
        },
      };
    },
    startSystemDns: async () => {
      step('startSystemDns');
      return {
        previousServers: options.previous ?? [],
        use: async (settings) => {
          h.dnsUses.push(settings);
          step('dns.use');
          dnsStatus = { ...settings, reapplied: 0, checkFailures: 0, applied: true };
        },
        restore: async () => {
          h.calls.push('dns.restore');
        },
        status: () => dnsStatus,
      };
    },
    startEngine: async (engineOptions, peers) => {
      h.engineStarts.push({ options: engineOptions, peers });
      step('startEngine');
      let current = peers;
      return {
        cryptoProvider: 'openssl-evp',
        status: () => engineStatus(current),
        setPeers: (next) => {
          h.setPeers.push(next);
          step('engine.setPeers');
          current = next;
        },
        idleMs: (address) => (address === '100.96.0.1' ? 5000 : Infinity),
        stop: async () => {
          h.calls.push('engine.stop');
        },
      };
    },
    startResourceStub: async (stubOptions) => {
      h.stubStarts.push(stubOptions);
      step('startResourceStub');
      return {
        setResources: (patterns) => h.calls.push(`stub.setResources ${patterns.join(' ')}`),
        lookupProxyAddress: (address) =>
          address === '100.96.0.9'
            ? { name: 'app.corp.example', proxyAddresses: ['100.96.0.9', 'fd00:2021:1111:8000::9'] }
            : undefined,
        stats: () => STUB_COUNTERS,
        close: async () => {
          h.calls.push('stub.close');
        },
      };
    },
  };
  return h;
}

function engineStatus(peers: EnginePeer[]): EngineStatus {
  const drops = {} as EngineStatus['peers'][0]['drops'];
  return {
    interfaceName: 'gh-unit0',
    listenPort: 51999,
    cryptoProvider: 'openssl-evp',
    noRoute: 0,
    workerRestarts: 0,
    failure: null,
    unattributedDrops: {} as EngineStatus['unattributedDrops'],
    peers: peers.map((peer) => ({
      publicKey: Buffer.from(peer.publicKey).toString('base64'),
      endpoint: '192.0.2.7:51820',
      allowedIps: peer.allowedIps,
      rxBytes: 1,
      txBytes: 2,
      rxPackets: 3,
      txPackets: 4,
      lastHandshake: 1_700_000_000_000,
      persistentKeepalive: peer.persistentKeepaliveSeconds ?? null,
      drops: new Proxy(drops, { get: (_, reason) => (reason === 'replay' ? 5 : 0) }),
    })),
  };
}

const UNDO_AFTER_START = ['dns.restore', 'flush', 'engine.stop'];

void describe('EngineTunnel start', () => {
  void it('repairs, then starts the engine, the interface, the routes and DNS, in that order', async () => {
    const h = harness();
    const tunnel = new EngineTunnel(h.deps);
    await tunnel.start(CONFIG);
    assert.deepEqual(h.calls, [
      'lookup',
      'routing gh-unit0 mark 0x4748',
      'flush',
      'startSystemDns',
      'startEngine',
      'configureInterface',
      'setRoutes',
      'dns.use',
    ]);
    const [{ options, peers }] = h.engineStarts as [Harness['engineStarts'][0]];
    assert.equal(options.interfaceName, 'gh-unit0');
    assert.equal(options.fwmark, 0x4748);
    assert.equal(options.mtu, 1420);
    assert.equal(options.listenPort, 51999);
    assert.deepEqual(
      peers.map((peer) => [peer.endpoint, peer.allowedIps, peer.persistentKeepaliveSeconds]),
      [[parseEndpoint('192.0.2.7:51820'), ['10.9.0.0/24', '100.64.0.0/10', 'fd00:9::/64'], 25]],
    );
    assert.deepEqual(h.interfaces, [
      { addresses: ['10.9.0.2/24', 'fd00:9::2/64'], listenOnlyAddresses: [], mtu: 1420 },
    ]);
    assert.deepEqual(h.routes, [['10.9.0.0/24', '100.64.0.0/10', 'fd00:9::/64']]);
    assert.deepEqual(h.dnsUses, [{ servers: ['10.9.0.1'], searchDomains: ['corp.example'] }]);
    assert.ok(
      h.logs.includes('info: data plane: openssl-evp ChaCha20-Poly1305'),
      h.logs.join('\n'),
    );
  });

  void it("uses the file's FwMark and MTU, and routes a /0 (full tunnel)", async () => {
    const h = harness();
    await new EngineTunnel(h.deps).start(FULL_TUNNEL);
    assert.equal(h.calls[0], 'routing gh-unit0 mark 0x1234');
    assert.equal(h.engineStarts[0]?.options.fwmark, 0x1234);
    assert.equal(h.engineStarts[0]?.options.mtu, 1380);
    assert.equal(h.engineStarts[0]?.options.listenPort, undefined);
    assert.deepEqual(h.routes, [['0.0.0.0/0']]);
    assert.deepEqual(h.dnsUses, [{ servers: [], searchDomains: [] }]);
  });

  void it("routes with the spec's LAN bypass setting, on start and on a change of routes", async () => {
    const h = harness();
    const tunnel = new EngineTunnel(h.deps);
    await tunnel.start({ ...FULL_TUNNEL, lanBypass: false });
    await tunnel.apply({ ...FULL_TUNNEL, lanBypass: false, routes: ['0.0.0.0/0', '::/0'] });
    assert.deepEqual(h.routeOptions, [{ lanBypass: false }, { lanBypass: false }]);
    await assert.rejects(
      tunnel.apply({ ...FULL_TUNNEL, lanBypass: true }),
      /lanBypass cannot change while the tunnel runs/,
    );
    const wgQuick = harness();
    await new EngineTunnel(wgQuick.deps).start(FULL_TUNNEL);
    assert.deepEqual(wgQuick.routeOptions, [{ lanBypass: true }], 'wg-quick keeps the LAN bypass');
  });

  void it("hands the engine the owner's failure callback and event handler", async () => {
    const h = harness();
    const failures: Error[] = [];
    const events: EngineEvent[] = [];
    await new EngineTunnel(h.deps).start(FULL_TUNNEL, {
      onFailed: (error) => failures.push(error),
      onEngineEvent: (event) => events.push(event),
    });
    const { options } = h.engineStarts[0] as Harness['engineStarts'][0];
    options.onFailed?.(new Error('data worker 0 died 4 times'));
    options.onEvent?.({ type: 'route-miss', destination: '10.0.0.7', family: 4 });
    options.onEvent?.({ type: 'handshake-failed', peer: key(2), droppedPackets: 3 });
    assert.deepEqual(
      failures.map((error) => error.message),
      ['data worker 0 died 4 times'],
    );
    assert.deepEqual(events, [
      { type: 'route-miss', destination: '10.0.0.7', family: 4 },
      { type: 'handshake-failed', peer: key(2), droppedPackets: 3 },
    ]);
  });

  void it("a route miss's held packets flow once apply() gives a peer that covers it", async () => {
    const h = harness();
    const tunnel = new EngineTunnel(h.deps);
    const misses: string[] = [];
    const spec: TunnelSpec = { ...FULL_TUNNEL, peers: [] };
    await tunnel.start(spec, {
      onEngineEvent: (event) => event.type === 'route-miss' && misses.push(event.destination),
    });
    h.engineStarts[0]?.options.onEvent?.({
      type: 'route-miss',
      destination: '10.0.0.7',
      family: 4,
    });
    await tunnel.apply({ ...spec, peers: FULL_TUNNEL.peers });
    assert.deepEqual(misses, ['10.0.0.7']);
    assert.deepEqual(
      h.setPeers.map((peers) => peers.map((peer) => peer.allowedIps)),
      [[['0.0.0.0/0']]],
      "the engine's setPeers is what releases the held packets",
    );
  });

  const undone: Record<Step, string[]> = {
    lookup: [],
    flush: [],
    startSystemDns: [],
    startEngine: [],
    configureInterface: ['flush', 'engine.stop'],
    setRoutes: ['flush', 'engine.stop'],
    'dns.use': UNDO_AFTER_START,
  };
  const reasons: Record<Step, ConnectionFailureReason> = {
    lookup: 'endpoint-unresolved',
    flush: 'setup-failed',
    startSystemDns: 'dns-failed',
    startEngine: 'setup-failed',
    configureInterface: 'setup-failed',
    setRoutes: 'setup-failed',
    'dns.use': 'dns-failed',
  };
  for (const failAt of STEPS) {
    void it(`undoes what was done, newest first, when ${failAt} fails (${reasons[failAt]})`, async () => {
      const h = harness({ failAt });
      const tunnel = new EngineTunnel(h.deps);
      await assert.rejects(tunnel.start(CONFIG), (error: unknown) => {
        assert.ok(error instanceof TunnelStartError, String(error));
        assert.equal(error.reason, reasons[failAt]);
        assert.match(error.message, new RegExp(`${failAt} failed`));
        return true;
      });
      const failedAt = h.calls.indexOf(failAt);
      assert.deepEqual(h.calls.slice(failedAt + 1), undone[failAt]);
      await tunnel.stop();
      assert.deepEqual(h.calls.slice(failedAt + 1), undone[failAt], 'stop after a failed start');
    });
  }

  void it('names the peer and the host when an endpoint does not resolve', async () => {
    const h = harness();
    h.deps.lookupHost = async () => {
      throw new Error('getaddrinfo ENOTFOUND gw.example');
    };
    await assert.rejects(
      new EngineTunnel(h.deps).start(CONFIG),
      new RegExp(
        `peer ${key(2).replace(/[+/=]/g, '\\$&')}: cannot resolve its endpoint host "gw\\.example": getaddrinfo ENOTFOUND`,
      ),
    );
    assert.deepEqual(h.calls, [], 'nothing is touched before endpoints resolve');
  });
});

void describe('EngineTunnel stop and status', () => {
  void it('undoes everything in reverse order, once', async () => {
    const h = harness();
    const tunnel = new EngineTunnel(h.deps);
    await tunnel.start(CONFIG);
    const before = h.calls.length;
    await Promise.all([tunnel.stop(), tunnel.stop()]);
    await tunnel.stop();
    assert.deepEqual(h.calls.slice(before), UNDO_AFTER_START);
  });

  void it('keeps undoing after a step fails, then reports it', async () => {
    const h = harness();
    const tunnel = new EngineTunnel(h.deps);
    await tunnel.start(CONFIG);
    h.calls.length = 0;
    h.failing.add('flush');
    await assert.rejects(tunnel.stop(), /could not remove Gatehouse's rules and routes/);
    assert.deepEqual(h.calls, UNDO_AFTER_START);
    assert.ok(h.logs.some((line) => line.startsWith('error: could not remove')));
  });

  void it("maps the engine's status and the DNS status into the protocol's", async () => {
    const h = harness();
    const tunnel = new EngineTunnel(h.deps);
    await tunnel.start(CONFIG);
    const status = tunnel.status();
    assert.equal(status.interfaceName, 'gh-unit0');
    assert.equal(status.listenPort, 51999);
    assert.equal(status.cryptoProvider, 'openssl-evp');
    assert.deepEqual(status.dns, {
      servers: ['10.9.0.1'],
      searchDomains: ['corp.example'],
      reapplied: 0,
      checkFailures: 0,
      applied: true,
    });
    assert.deepEqual(status.dnsResources, NO_DNS_RESOURCES);
    const [peer] = status.peers;
    assert.equal(peer?.publicKey, key(2));
    assert.equal(peer?.endpoint, '192.0.2.7:51820');
    assert.equal(peer?.lastHandshakeAt, 1_700_000_000_000);
    assert.equal(peer?.persistentKeepalive, 25);
    assert.equal(peer?.drops.replay, 5);
    assert.equal(peer?.drops['tun-full'], 0);
    await tunnel.stop();
    assert.throws(() => tunnel.status(), /not running/);
  });
});

void describe('EngineTunnel DNS resources', () => {
  void it('starts the stub on the first resources, updates it, and stops it on an empty list', async () => {
    const h = harness();
    const tunnel = new EngineTunnel(h.deps);
    await tunnel.start(CONFIG);
    h.calls.length = 0;

    const sentinels = ['100.100.111.1', 'fd00:2021:1111:8000:100:100:111:1'];
    assert.deepEqual(await tunnel.setDnsResources(['*.corp.example']), {
      patterns: ['*.corp.example'],
      stubRunning: true,
      stubAddresses: sentinels,
      upstreams: ['10.9.0.1'],
      stubCounters: STUB_COUNTERS,
    });
    assert.deepEqual(tunnel.status().dnsResources, {
      patterns: ['*.corp.example'],
      stubRunning: true,
      stubAddresses: sentinels,
      upstreams: ['10.9.0.1'],
      stubCounters: STUB_COUNTERS,
    });
    assert.deepEqual(h.calls, ['configureInterface', 'startResourceStub', 'dns.use']);
    assert.deepEqual(h.interfaces.at(-1), {
      addresses: ['10.9.0.2/24', 'fd00:9::2/64'],
      listenOnlyAddresses: sentinels,
      mtu: 1420,
    });
    const [stub] = h.stubStarts;
    assert.deepEqual(stub?.resources, ['*.corp.example']);
    assert.deepEqual(stub?.upstreams, ['10.9.0.1']);
    assert.equal(stub?.mark, 0x4748);
    assert.equal(stub?.isTunnelled('10.9.0.1'), true);
    assert.equal(stub?.isTunnelled('192.168.1.1'), false);
    assert.equal(stub?.addressIdleMs('100.96.0.1'), 5000, "the engine's activity reaches the stub");
    assert.deepEqual(h.engineStarts[0]?.options.watchedRanges, [
      '100.96.0.0/11',
      'fd00:2021:1111:8000::/107',
    ]);
    assert.deepEqual(h.dnsUses.at(-1), { servers: sentinels, searchDomains: ['corp.example'] });
    assert.ok(
      h.logs.some((line) => /warn: .*fd00:2021:1111:8000::\/107/.test(line)),
      'the IPv6 proxy range is outside AllowedIPs',
    );
    assert.ok(!h.logs.some((line) => /warn: .*100\.96\.0\.0\/11/.test(line)));

    assert.deepEqual(tunnel.lookupProxyAddress('100.96.0.9'), {
      name: 'app.corp.example',
      proxyAddresses: ['100.96.0.9', 'fd00:2021:1111:8000::9'],
    });
    assert.equal(tunnel.lookupProxyAddress('10.9.0.1'), undefined);

    h.calls.length = 0;
    assert.deepEqual(await tunnel.setDnsResources(['a.example', '**.b.example']), {
      patterns: ['a.example', '**.b.example'],
      stubRunning: true,
      stubAddresses: sentinels,
      upstreams: ['10.9.0.1'],
      stubCounters: STUB_COUNTERS,
    });
    assert.deepEqual(tunnel.status().dnsResources.patterns, ['a.example', '**.b.example']);
    assert.deepEqual(h.calls, ['stub.setResources a.example **.b.example']);

    h.calls.length = 0;
    assert.deepEqual(await tunnel.setDnsResources([]), NO_DNS_RESOURCES);
    assert.deepEqual(tunnel.status().dnsResources, NO_DNS_RESOURCES);
    assert.deepEqual(h.calls, ['dns.use', 'stub.close', 'configureInterface']);
    assert.deepEqual(h.dnsUses.at(-1), { servers: ['10.9.0.1'], searchDomains: ['corp.example'] });
    assert.deepEqual(h.interfaces.at(-1), {
      addresses: ['10.9.0.2/24', 'fd00:9::2/64'],
      listenOnlyAddresses: [],
      mtu: 1420,
    });
  });

  void describe("listens and hands out proxy addresses only in the tunnel's address families", () => {
    const cases: Array<{
      addresses: string;
      sentinels: string[];
      families: { ipv4: boolean; ipv6: boolean };
    }> = [
      {
        addresses: '10.9.0.2/24, fd00:9::2/64',
        sentinels: ['100.100.111.1', 'fd00:2021:1111:8000:100:100:111:1'],
        families: { ipv4: true, ipv6: true },
      },
      {
        addresses: '10.9.0.2/24',
        sentinels: ['100.100.111.1'],
        families: { ipv4: true, ipv6: false },
      },
      {
        addresses: 'fd00:9::2/64',
        sentinels: ['100.100.111.1', 'fd00:2021:1111:8000:100:100:111:1'],
        families: { ipv4: false, ipv6: true },
      },
    ];
    for (const c of cases) {
      void it(`Address = ${c.addresses}`, async () => {
        const h = harness();
        const tunnel = new EngineTunnel(h.deps);
        await tunnel.start(
          config(`[Interface]
PrivateKey = ${key(1)}
Address = ${c.addresses}

[Peer]
PublicKey = ${key(3)}
AllowedIPs = 100.96.0.0/11, fd00:2021:1111:8000::/107
`),
        );
        const status = await tunnel.setDnsResources(['app.example']);
        assert.deepEqual(status.stubAddresses, c.sentinels);
        assert.deepEqual(h.stubStarts[0]?.listen, c.sentinels);
        assert.deepEqual(h.stubStarts[0]?.proxyFamilies, c.families);
        assert.deepEqual(h.interfaces.at(-1)?.listenOnlyAddresses, c.sentinels);
        assert.deepEqual(h.dnsUses.at(-1)?.servers, c.sentinels);
      });
    }
  });

  void it("falls back to the system's previous resolvers, never resolved's own stub", async () => {
    const h = harness({ previous: ['127.0.0.53', '192.168.1.1'] });
    const tunnel = new EngineTunnel(h.deps);
    await tunnel.start(FULL_TUNNEL);
    await tunnel.setDnsResources(['app.example']);
    assert.deepEqual(h.stubStarts[0]?.upstreams, ['192.168.1.1']);
    assert.equal(h.stubStarts[0]?.isTunnelled('192.168.1.1'), true, 'full tunnel');
  });

  void it("watches and hands out the spec's proxy ranges; a change of them restarts the stub", async () => {
    const h = harness();
    const tunnel = new EngineTunnel(h.deps);
    const ranges = { ipv4: '100.200.0.0/16', ipv6: 'fd00:99::/107' };
    const spec: TunnelSpec = { ...CONFIG, proxyRanges: ranges, dnsResources: ['app.example'] };
    await tunnel.start(spec);
    assert.deepEqual(h.engineStarts[0]?.options.watchedRanges, [ranges.ipv4, ranges.ipv6]);
    assert.deepEqual(h.stubStarts[0]?.proxyRanges, ranges);
    assert.ok(
      h.logs.some((line) => /warn: .*100\.200\.0\.0\/16/.test(line)),
      "the IPv4 proxy range is outside the peer's AllowedIPs",
    );

    h.calls.length = 0;
    const moved = { ipv4: '100.96.0.0/11', ipv6: 'fd00:2021:1111:8000::/107' };
    await tunnel.apply({ ...spec, proxyRanges: moved });
    assert.deepEqual(h.stubStarts[1]?.proxyRanges, moved);
    assert.ok(
      h.calls.includes('stub.close') && h.calls.includes('startResourceStub'),
      h.calls.join(),
    );
    assert.ok(h.logs.some((line) => /warn: the DNS resources' proxy ranges changed/.test(line)));
  });

  void it('undoes a half-started stub and keeps the tunnel running', async () => {
    const h = harness({ failAt: 'startResourceStub' });
    const tunnel = new EngineTunnel(h.deps);
    await tunnel.start(CONFIG);
    h.calls.length = 0;
    await assert.rejects(tunnel.setDnsResources(['a.example']), /startResourceStub failed/);
    assert.deepEqual(h.calls, ['configureInterface', 'startResourceStub', 'configureInterface']);
    assert.equal(tunnel.status().interfaceName, 'gh-unit0', 'still running');
    assert.deepEqual(tunnel.status().dnsResources, NO_DNS_RESOURCES);
  });

  void it('at stop closes the stub, then undoes the rest once', async () => {
    const h = harness();
    const tunnel = new EngineTunnel(h.deps);
    await tunnel.start(CONFIG);
    await tunnel.setDnsResources(['a.example']);
    h.calls.length = 0;
    await tunnel.stop();
    assert.deepEqual(h.calls, ['stub.close', ...UNDO_AFTER_START]);
  });
});

void it("the status carries exactly the DNS stub's refusal reasons", () => {
  assert.deepEqual([...STUB_REFUSALS].sort(), [...DNS_STUB_REFUSALS].sort());
});

void describe('EngineTunnel apply', () => {
  const TWO_PEERS = config(`[Interface]
PrivateKey = ${key(1)}
Address = 10.9.0.2/24

[Peer]
PublicKey = ${key(2)}
Endpoint = 192.0.2.2:51820
AllowedIPs = 10.9.1.0/24

[Peer]
PublicKey = ${key(3)}
Endpoint = 192.0.2.3:51820
AllowedIPs = 10.9.2.0/24
PersistentKeepalive = 25
`);
  const [first, second] = TWO_PEERS.peers as [PeerSpec, PeerSpec];

  void it('a change to one peer hands the engine the other peer exactly as before, and changes only what differs', async () => {
    const h = harness();
    const tunnel = new EngineTunnel(h.deps);
    await tunnel.start(TWO_PEERS);
    const [started] = h.engineStarts;
    h.calls.length = 0;
    const roamed: PeerSpec = {
      ...second,
      endpoint: { host: '192.0.2.99', port: 4500 },
      allowedIps: [...second.allowedIps, { family: 4, address: '10.9.3.0', prefixLength: 24 }],
    };
    await tunnel.apply({
      ...TWO_PEERS,
      peers: [first, roamed],
      routes: [...TWO_PEERS.routes, '10.9.3.0/24'],
    });
    assert.equal(h.engineStarts.length, 1, 'the engine was not restarted');
    assert.deepEqual(h.calls, ['engine.setPeers', 'setRoutes']);
    const [peers] = h.setPeers;
    assert.deepEqual(peers?.[0], started?.peers[0], 'the untouched peer is unchanged');
    assert.deepEqual(peers?.[1]?.endpoint, parseEndpoint('192.0.2.99:4500'));
    assert.deepEqual(peers?.[1]?.allowedIps, ['10.9.2.0/24', '10.9.3.0/24']);
    assert.deepEqual(h.routes.at(-1), ['10.9.1.0/24', '10.9.2.0/24', '10.9.3.0/24']);
    assert.equal(tunnel.status().peers[1]?.allowedIps.length, 2);

    h.calls.length = 0;
    await tunnel.apply({ ...TWO_PEERS, peers: [first, roamed], routes: h.routes.at(-1) ?? [] });
    assert.deepEqual(h.calls, [], 'the same spec again changes nothing');
  });

  void it('removing a peer keeps the other one; addresses, MTU and DNS are applied in place', async () => {
    const h = harness();
    const tunnel = new EngineTunnel(h.deps);
    await tunnel.start(TWO_PEERS);
    h.calls.length = 0;
    await tunnel.apply({
      ...TWO_PEERS,
      peers: [first],
      routes: ['10.9.1.0/24'],
      mtu: 1300,
      addresses: [{ family: 4, address: '10.9.0.3', prefixLength: 24 }],
      dns: { servers: ['10.9.1.53'], searchDomains: [] },
    });
    assert.deepEqual(h.calls, ['configureInterface', 'engine.setPeers', 'setRoutes', 'dns.use']);
    assert.deepEqual(
      h.setPeers[0]?.map((peer) => peer.allowedIps),
      [['10.9.1.0/24']],
    );
    assert.deepEqual(h.interfaces.at(-1), {
      addresses: ['10.9.0.3/24'],
      listenOnlyAddresses: [],
      mtu: 1300,
    });
    assert.deepEqual(h.dnsUses.at(-1), { servers: ['10.9.1.53'], searchDomains: [] });
  });

  void it('refuses to change what the tunnel is built around, and changes nothing', async (t) => {
    const cases: Array<{ field: string; change: Partial<TunnelSpec> }> = [
      { field: 'interfaceName', change: { interfaceName: 'gh-other' } },
      { field: 'privateKey', change: { privateKey: new Uint8Array(32).fill(9) } },
      { field: 'listenPort', change: { listenPort: 4000 } },
      { field: 'fwMark', change: { fwMark: 0x99 } },
    ];
    for (const c of cases) {
      await t.test(c.field, async () => {
        const h = harness();
        const tunnel = new EngineTunnel(h.deps);
        await tunnel.start(TWO_PEERS);
        h.calls.length = 0;
        await assert.rejects(
          tunnel.apply({ ...TWO_PEERS, ...c.change, peers: [first] }),
          new RegExp(`^Error: ${c.field} cannot change while the tunnel runs`),
        );
        assert.deepEqual(h.calls, []);
        assert.equal(tunnel.status().peers.length, 2);
      });
    }
  });

  void it('a DNS change while the stub runs restarts it with the new upstreams; a failed step can be applied again', async () => {
    const h = harness();
    const tunnel = new EngineTunnel(h.deps);
    await tunnel.start({ ...CONFIG, dnsResources: ['app.example'] });
    assert.deepEqual(h.stubStarts.at(-1)?.upstreams, ['10.9.0.1']);
    h.calls.length = 0;
    const changed = {
      ...CONFIG,
      dnsResources: ['app.example'],
      dns: { servers: ['10.9.0.53'], searchDomains: [] },
    };
    await tunnel.apply(changed);
    assert.deepEqual(h.stubStarts.at(-1)?.upstreams, ['10.9.0.53']);
    assert.deepEqual(h.calls, [
      'dns.use',
      'stub.close',
      'configureInterface',
      'configureInterface',
      'startResourceStub',
      'dns.use',
    ]);

    h.failing.add('setRoutes');
    const routed = { ...changed, routes: [...changed.routes, '10.9.9.0/24'] };
    await assert.rejects(tunnel.apply(routed), /setRoutes failed/);
    h.failing.delete('setRoutes');
    h.calls.length = 0;
    await tunnel.apply(routed);
    assert.deepEqual(h.calls, ['setRoutes']);
    assert.ok(h.routes.at(-1)?.includes('10.9.9.0/24'));
  });
});
