/**
 * The real tunnel: the data-plane engine on a TUN device, Gatehouse's
 * addresses, routes and rules, system DNS, and the DNS stub for DNS
 * resources. Start-up first repairs what a crashed run left (stale rules
 * and routes, a stale resolv.conf), then applies everything in order;
 * a failure or stop undoes it in reverse order.
 */

import { DEFAULT_SENTINEL_ADDRESSES, type ProxyAddressFamilies } from '@gatehouse/dns-stub';
import type { EngineOptions, EnginePeer } from '@gatehouse/engine';
import {
  DEFAULT_FWMARK,
  type DnsSettings,
  type InterfaceSettings,
  type RoutingOptions,
} from '@gatehouse/netconfig';
import type {
  ConnectionFailureReason,
  DnsResourcesStatus,
  DnsStatus,
  DnsStubCounters,
} from '@gatehouse/protocol';
import { prefixedLogger, type Logger } from '@gatehouse/logging';
import { resolvePeerEndpoints, type HostLookup } from './endpoint-resolution.ts';
import { tunnelStatusFromEngine, type EngineStatusView } from './engine-status.ts';
import {
  NO_DNS_RESOURCES,
  TunnelStartError,
  type ProxyAddressName,
  type Tunnel,
  type TunnelEvents,
  type TunnelReport,
} from './tunnel.ts';
import {
  diffTunnelSpecs,
  prefixText,
  refuseFixedChanges,
  type PeerSpec,
  type TunnelSpec,
  type TunnelSpecChange,
} from './tunnel-spec.ts';
import { tunnelledAddressTest, type TunnelledAddressTest } from './tunnelled-addresses.ts';
import { UndoStack } from './undo-stack.ts';

/** What the tunnel uses of `@gatehouse/engine`'s Engine. */
export interface TunnelEngine {
  readonly cryptoProvider: string;
  status(): EngineStatusView;
  /** Adds, removes and updates peers by public key; an unchanged peer keeps its session. */
  setPeers(peers: EnginePeer[]): void;
  /** Milliseconds since an address of the proxy ranges last carried a packet (Infinity: never). */
  idleMs(address: string): number;
  stop(): Promise<void>;
}

/** What the tunnel uses of `@gatehouse/netconfig`'s GatehouseRouting. */
export interface TunnelRouting {
  flush(): Promise<void>;
  configureInterface(settings: InterfaceSettings): Promise<void>;
  setRoutes(prefixes: readonly string[], options: RoutingOptions): Promise<void>;
}

/** System DNS for one run (see system-dns-session.ts). */
export interface TunnelSystemDns {
  readonly previousServers: readonly string[];
  use(settings: DnsSettings): Promise<void>;
  restore(): Promise<void>;
  status(): DnsStatus;
}

export interface ResourceStubOptions {
  /** The sentinel addresses to listen on. */
  listen: readonly string[];
  proxyFamilies: ProxyAddressFamilies;
  /** Where the proxy addresses come from (the spec's proxyRanges). */
  proxyRanges: { ipv4: string; ipv6: string };
  resources: readonly string[];
  upstreams: readonly string[];
  mark: number;
  isTunnelled: TunnelledAddressTest;
  /** The data path's activity, so that the stub takes back only proxy addresses nobody uses. */
  addressIdleMs: (address: string) => number;
}

/** The DNS stub listening on the sentinel addresses. */
export interface ResourceStub {
  setResources(patterns: readonly string[]): void;
  /** The name behind one of the stub's proxy addresses; undefined for any other address. */
  lookupProxyAddress(address: string): ProxyAddressName | undefined;
  stats(): DnsStubCounters;
  close(): Promise<void>;
}

export interface EngineTunnelDependencies {
  startEngine(options: EngineOptions, peers: EnginePeer[]): Promise<TunnelEngine>;
  createRouting(identity: { interfaceName: string; mark: number }): TunnelRouting;
  /** Repairs system DNS after a crash and decides how to control it. */
  startSystemDns(interfaceName: string): Promise<TunnelSystemDns>;
  startResourceStub(options: ResourceStubOptions): Promise<ResourceStub>;
  lookupHost: HostLookup;
  logger: Logger;
}

/** The families the tunnel has an address of: the stub hands out proxy addresses of those only. */
export function proxyFamiliesOf({ addresses }: TunnelSpec): ProxyAddressFamilies {
  return {
    ipv4: addresses.some((address) => address.family === 4),
    ipv6: addresses.some((address) => address.family === 6),
  };
}

/**
 * Where the stub listens, as listen-only interface addresses so that the
 * kernel delivers queries to it. The IPv4 sentinel always: it is never a
 * source address. The IPv6 one only with an IPv6 tunnel address, as a
 * deprecated address is still the source when no other global one is left.
 */
export function sentinelAddresses(families: ProxyAddressFamilies): string[] {
  return DEFAULT_SENTINEL_ADDRESSES.filter((address) => families.ipv6 || !address.includes(':'));
}

/** resolved's own stubs: as upstreams they would send the stub's queries straight back to it. */
const LOOPING_UPSTREAMS = new Set(['127.0.0.53', '127.0.0.54', ...DEFAULT_SENTINEL_ADDRESSES]);

interface RunningStub {
  server: ResourceStub;
  undo: UndoStack;
  addresses: readonly string[];
  patterns: readonly string[];
  upstreams: readonly string[];
}

interface Running {
  spec: TunnelSpec;
  mark: number;
  engine: TunnelEngine;
  routing: TunnelRouting;
  dns: TunnelSystemDns;
  isTunnelled: TunnelledAddressTest;
  undo: UndoStack;
  stub: RunningStub | undefined;
  /** Changes run one at a time. */
  change: Promise<unknown>;
}

export class EngineTunnel implements Tunnel {
  readonly #deps: EngineTunnelDependencies;
  #running: Running | undefined;
  #stopping: Promise<void> | undefined;

  constructor(dependencies: EngineTunnelDependencies) {
    this.#deps = dependencies;
  }

  async start(spec: TunnelSpec, events: TunnelEvents = {}): Promise<void> {
    if (this.#running !== undefined || this.#stopping !== undefined)
      throw new Error('the tunnel was already started');
    const { logger } = this.#deps;
    const { interfaceName } = spec;
    const peers = await failsAs('endpoint-unresolved', () => this.#enginePeers(spec.peers));
    const mark = spec.fwMark ?? DEFAULT_FWMARK;
    const routing = this.#deps.createRouting({ interfaceName, mark });
    const undo = new UndoStack();
    try {
      await failsAs('setup-failed', () => routing.flush());
      const dns = await failsAs('dns-failed', () => this.#deps.startSystemDns(interfaceName));

      const engine = await failsAs('setup-failed', () =>
        this.#deps.startEngine(
          {
            interfaceName,
            privateKey: spec.privateKey,
            ...(spec.listenPort === undefined ? {} : { listenPort: spec.listenPort }),
            fwmark: mark,
            mtu: spec.mtu,
            watchedRanges: [spec.proxyRanges.ipv4, spec.proxyRanges.ipv6],
            logger: prefixedLogger(logger, 'engine: '),
            ...(events.onFailed === undefined ? {} : { onFailed: events.onFailed }),
            ...(events.onEngineEvent === undefined ? {} : { onEvent: events.onEngineEvent }),
          },
          peers,
        ),
      );
      undo.push('stop the engine', () => engine.stop());
      logger.info(`data plane: ${engine.cryptoProvider} ChaCha20-Poly1305`);

      undo.push("remove Gatehouse's rules and routes", () => routing.flush());
      await failsAs('setup-failed', async () => {
        await routing.configureInterface(interfaceSettings(spec));
        await routing.setRoutes(spec.routes, { lanBypass: spec.lanBypass });
      });

      undo.push('give system DNS back', () => dns.restore());
      await failsAs('dns-failed', () => dns.use(spec.dns));

      const running: Running = {
        spec,
        mark,
        engine,
        routing,
        dns,
        isTunnelled: tunnelledAddressTest(spec.peers),
        undo,
        stub: undefined,
        change: Promise.resolve(),
      };
      if (spec.dnsResources.length > 0) {
        running.stub = await failsAs('dns-failed', () =>
          this.#startStub(running, spec.dnsResources),
        );
      }
      this.#running = running;
    } catch (error) {
      await this.#unwind(undo, 'after the failed start');
      throw error;
    }
  }

  apply(spec: TunnelSpec): Promise<void> {
    const running = this.#mustBeRunning();
    const change = running.change.then(() => this.#apply(running, spec));
    running.change = change.catch(() => undefined);
    return change;
  }

  /** Undoes everything start did; safe to call twice and after a failed start. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  status(): TunnelReport {
    const running = this.#mustBeRunning();
    return tunnelStatusFromEngine(
      running.engine.status(),
      running.dns.status(),
      dnsResourcesStatus(running.stub),
    );
  }

  /**
   * The stub runs only while there are DNS resources: with none, system DNS
   * is exactly the spec's DNS (as wg-quick sets it) and no query takes a
   * detour through Gatehouse.
   */
  async setDnsResources(patterns: readonly string[]): Promise<DnsResourcesStatus> {
    const running = this.#mustBeRunning();
    await this.apply({ ...running.spec, dnsResources: [...patterns] });
    return dnsResourcesStatus(running.stub);
  }

  lookupProxyAddress(address: string): ProxyAddressName | undefined {
    return this.#running?.stub?.server.lookupProxyAddress(address);
  }

  async #apply(running: Running, spec: TunnelSpec): Promise<void> {
    if (this.#running !== running) throw new Error('the tunnel is stopping');
    const changes = diffTunnelSpecs(running.spec, spec);
    refuseFixedChanges(changes);
    const previous = running.spec;
    running.spec = spec;
    try {
      await this.#applyChanges(running, changes, previous);
    } catch (error) {
      // Every step makes its part exactly so: applying the spec again redoes the lot.
      running.spec = previous;
      throw error;
    }
  }

  async #applyChanges(
    running: Running,
    changes: readonly TunnelSpecChange[],
    previous: TunnelSpec,
  ): Promise<void> {
    const { spec } = running;
    const peers = changes.some((change) => change.kind === 'peers')
      ? await this.#enginePeers(spec.peers)
      : undefined;
    let stubOutdated = false;
    for (const change of changes) {
      switch (change.kind) {
        case 'peers':
          if (peers !== undefined) running.engine.setPeers(peers);
          running.isTunnelled = tunnelledAddressTest(spec.peers);
          this.#deps.logger.info(
            `peers: ${change.added.length} added, ${change.removed.length} removed, ${change.changed.length} changed`,
          );
          break;
        case 'interface':
          await running.routing.configureInterface(
            interfaceSettings(spec, running.stub?.addresses ?? []),
          );
          stubOutdated = !sameFamilies(proxyFamiliesOf(previous), proxyFamiliesOf(spec));
          break;
        case 'routes':
          await running.routing.setRoutes(spec.routes, { lanBypass: spec.lanBypass });
          break;
        case 'dns':
          stubOutdated = true;
          if (running.stub === undefined) await running.dns.use(spec.dns);
          break;
        case 'dns-resources':
          if (!sameRanges(previous.proxyRanges, spec.proxyRanges)) {
            stubOutdated = true;
            this.#deps.logger.warn(
              `the DNS resources' proxy ranges changed to ${spec.proxyRanges.ipv4} and ` +
                `${spec.proxyRanges.ipv6}: the DNS stub starts again with them; the data path ` +
                'watches the old ranges until the tunnel restarts, so only queries keep names alive',
            );
          }
          break;
        case 'fixed':
          break;
      }
    }
    await this.#updateStub(running, stubOutdated);
  }

  /** The stub for the spec's DNS resources: started, restarted (new upstreams or families), changed or stopped. */
  async #updateStub(running: Running, outdated: boolean): Promise<void> {
    const patterns = running.spec.dnsResources;
    const stub = running.stub;
    if (stub !== undefined && (patterns.length === 0 || outdated)) {
      running.stub = undefined;
      await this.#unwind(stub.undo, 'while stopping the DNS stub', true);
    }
    if (patterns.length === 0) return;
    if (running.stub === undefined) {
      running.stub = await this.#startStub(running, patterns);
    } else if (running.stub.patterns !== patterns) {
      running.stub.server.setResources(patterns);
      running.stub.patterns = patterns;
    }
  }

  async #startStub(running: Running, patterns: readonly string[]): Promise<RunningStub> {
    const { spec, routing, dns } = running;
    const { logger } = this.#deps;
    const proxyFamilies = proxyFamiliesOf(spec);
    const proxyRanges = [
      ...(proxyFamilies.ipv4 ? [spec.proxyRanges.ipv4] : []),
      ...(proxyFamilies.ipv6 ? [spec.proxyRanges.ipv6] : []),
    ];
    for (const range of proxyRanges) {
      if (!running.isTunnelled(range.split('/')[0] ?? '')) {
        logger.warn(
          `no peer's AllowedIPs cover the DNS resources' proxy range ${range}: their traffic has nowhere to go`,
        );
      }
    }
    const fileServers = spec.dns.servers;
    const upstreams = (fileServers.length > 0 ? fileServers : dns.previousServers).filter(
      (server) => !LOOPING_UPSTREAMS.has(server),
    );
    const addresses = sentinelAddresses(proxyFamilies);
    const undo = new UndoStack();
    try {
      undo.push('remove the DNS sentinel addresses', () =>
        routing.configureInterface(interfaceSettings(running.spec)),
      );
      await routing.configureInterface(interfaceSettings(spec, addresses));
      const server = await this.#deps.startResourceStub({
        listen: addresses,
        proxyFamilies,
        proxyRanges: spec.proxyRanges,
        resources: patterns,
        upstreams,
        mark: running.mark,
        isTunnelled: (address) => running.isTunnelled(address),
        addressIdleMs: (address) => running.engine.idleMs(address),
      });
      undo.push('stop the DNS stub', () => server.close());
      undo.push('point system DNS back at DNS=', () => dns.use(running.spec.dns));
      await dns.use({ servers: addresses, searchDomains: spec.dns.searchDomains });
      logger.info(
        `DNS stub for ${patterns.length} DNS resource(s); upstreams: ${upstreams.join(', ') || 'none'}`,
      );
      return { server, undo, addresses, patterns, upstreams };
    } catch (error) {
      await this.#unwind(undo, 'after the DNS stub failed to start');
      throw error;
    }
  }

  /** The engine's peers, endpoints resolved. */
  async #enginePeers(peers: readonly PeerSpec[]): Promise<EnginePeer[]> {
    const endpoints = await resolvePeerEndpoints(peers, this.#deps.lookupHost);
    return peers.map((peer, index) => ({
      publicKey: peer.publicKey,
      ...(peer.presharedKey === undefined ? {} : { presharedKey: peer.presharedKey }),
      ...(endpoints[index] === undefined ? {} : { endpoint: endpoints[index] }),
      allowedIps: peer.allowedIps.map(prefixText),
      ...(peer.persistentKeepalive === undefined
        ? {}
        : { persistentKeepaliveSeconds: peer.persistentKeepalive }),
    }));
  }

  async #stop(): Promise<void> {
    const running = this.#running;
    this.#running = undefined;
    if (running === undefined) return;
    await running.change;
    // Stopping the engine removes the sentinel addresses and the main undo gives DNS back.
    const stubClosed = running.stub?.server.close();
    await stubClosed?.catch((error: unknown) =>
      this.#deps.logger.error(`stopping the DNS stub failed: ${(error as Error).message}`),
    );
    await this.#unwind(running.undo, 'while stopping', true);
  }

  async #unwind(undo: UndoStack, when: string, throwOnFailure = false): Promise<void> {
    const failures = await undo.unwind();
    for (const { name, error } of failures)
      this.#deps.logger.error(`could not ${name} ${when}: ${(error as Error)?.message ?? error}`);
    if (throwOnFailure && failures.length > 0)
      throw new Error(`could not ${failures.map((failure) => failure.name).join(', ')}`);
  }

  #mustBeRunning(): Running {
    if (this.#running === undefined) throw new Error('the tunnel is not running');
    return this.#running;
  }
}

/** The step's error as a TunnelStartError with this reason, message and cause kept. */
async function failsAs<T>(reason: ConnectionFailureReason, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    if (error instanceof TunnelStartError) throw error;
    throw new TunnelStartError(reason, (error as Error)?.message ?? String(error), {
      cause: error,
    });
  }
}

function dnsResourcesStatus(stub: RunningStub | undefined): DnsResourcesStatus {
  if (stub === undefined) return NO_DNS_RESOURCES;
  return {
    patterns: [...stub.patterns],
    stubRunning: true,
    stubAddresses: [...stub.addresses],
    upstreams: [...stub.upstreams],
    stubCounters: stub.server.stats(),
  };
}

function interfaceSettings(
  spec: TunnelSpec,
  listenOnlyAddresses: readonly string[] = [],
): InterfaceSettings {
  return { addresses: spec.addresses.map(prefixText), listenOnlyAddresses, mtu: spec.mtu };
}

function sameRanges(a: TunnelSpec['proxyRanges'], b: TunnelSpec['proxyRanges']): boolean {
  return a.ipv4 === b.ipv4 && a.ipv6 === b.ipv6;
}

function sameFamilies(a: ProxyAddressFamilies, b: ProxyAddressFamilies): boolean {
  return a.ipv4 === b.ipv4 && a.ipv6 === b.ipv6;
}
