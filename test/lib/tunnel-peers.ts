/**
 * WireGuard tunnel peers of either kind inside test namespaces — Debian's
 * wireguard-go or Gatehouse's own `gatehouse-tunnel up` — and the standard
 * two-namespace topology the interop tests, the ECN test and the throughput
 * benchmark share: a veth pair for the underlay, one tunnel peer on each
 * end, both with the same tunnel MTU and /32 AllowedIPs for each other.
 */
import { rmSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runCommand } from './netns.ts';
import type { NamespaceProcess, ProcessExit, TestNetwork } from './netns.ts';
import { WireGuardGo, generateKeyPair } from './wireguard-go.ts';
import type { KeyPair } from './wireguard-go.ts';

export type PeerKind = 'gatehouse' | 'wireguard-go';

// The launcher, as users run it: it also sets the service's memory options.
const GATEHOUSE_TUNNEL = new URL('../../apps/tunnel-service/bin/gatehouse-tunnel', import.meta.url)
  .pathname;
const READY_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 10_000;
const STATUS_TIMEOUT_MS = 5_000;

export interface RemotePeer {
  publicKey: string;
  allowedIps: readonly string[];
  /** `address:port`; without one this side waits to be contacted. */
  endpoint?: string;
}

export interface TunnelPeerOptions {
  namespace: string;
  keys: KeyPair;
  listenPort: number;
  /** Tunnel address with prefix length, e.g. `10.201.0.1/24`. */
  address: string;
  /** Absent: none is set (no `MTU =` line; wireguard-go's own), so both take the default, 1420. */
  mtu?: number;
  peer: RemotePeer;
}

/** A UDP socket's kernel buffer sizes as `ss -m` reports them (skmem rb/tb), in bytes. */
export interface SocketBuffers {
  localAddress: string;
  receiveBytes: number;
  sendBytes: number;
}

export interface TunnelPeer {
  readonly kind: PeerKind;
  readonly options: TunnelPeerOptions;
  /** The tunnel interface's name in its namespace (wireguard-go's changes on restart). */
  readonly interfaceName: string;
  /** The process that runs the tunnel (worker threads included). */
  readonly pid: number;
  /** Where this side currently sends the remote peer's packets. */
  remoteEndpoint(): Promise<string | undefined>;
  /** The tunnel process's UDP sockets. */
  socketBuffers(): Promise<SocketBuffers[]>;
  /** SIGTERM and wait; SIGKILL only after a grace period. */
  stop(): Promise<ProcessExit>;
  /** Stops if running, then starts again with the same keys, port and peer; resolves with how it stopped. */
  restart(): Promise<ProcessExit>;
  /** The tail of the tunnel process's own output, for diagnostics. */
  output(): string;
}

export function startTunnelPeer(
  network: TestNetwork,
  kind: PeerKind,
  options: TunnelPeerOptions,
): Promise<TunnelPeer> {
  return kind === 'gatehouse'
    ? GatehousePeer.start(network, options)
    : WireGuardGoPeer.start(network, options);
}

/** Parses `ss -uampn` output: the UDP sockets owned by `pid` with their skmem rb/tb. */
export function parseSocketBuffers(ssOutput: string, pid: number): SocketBuffers[] {
  const found: SocketBuffers[] = [];
  // ss prints each socket on one line, its skmem on the same or the following line.
  const sockets = ssOutput.split(/\n(?=\S)/);
  for (const socket of sockets) {
    if (!socket.includes(`pid=${pid},`)) continue;
    const receive = /\brb(\d+)/.exec(socket)?.[1];
    const send = /\btb(\d+)/.exec(socket)?.[1];
    const fields = socket.trim().split(/\s+/);
    const localAddress = fields[3] ?? '?';
    if (receive === undefined || send === undefined) continue;
    found.push({ localAddress, receiveBytes: Number(receive), sendBytes: Number(send) });
  }
  return found;
}

async function udpSocketBuffers(
  network: TestNetwork,
  namespace: string,
  pid: number,
): Promise<SocketBuffers[]> {
  const { stdout } = await network.exec(namespace, ['ss', '-uampnH']);
  return parseSocketBuffers(stdout, pid);
}

let gatehouseInterfaceCounter = 0;

class GatehousePeer implements TunnelPeer {
  readonly kind = 'gatehouse';
  readonly options: TunnelPeerOptions;
  readonly interfaceName: string;
  readonly #network: TestNetwork;
  readonly #configFile: string;
  readonly #socketPath: string;
  #process: NamespaceProcess;

  private constructor(
    network: TestNetwork,
    options: TunnelPeerOptions,
    interfaceName: string,
    directory: string,
  ) {
    this.#network = network;
    this.options = options;
    this.interfaceName = interfaceName;
    this.#configFile = join(directory, `${interfaceName}.conf`);
    this.#socketPath = join(directory, 'run', 'tunnel.sock');
    this.#process = this.#spawn();
  }

  static async start(network: TestNetwork, options: TunnelPeerOptions): Promise<GatehousePeer> {
    const directory = await mkdtemp(join(tmpdir(), 'gh-tunnel-peer-'));
    network.onDestroy(() => rmSync(directory, { recursive: true, force: true }));
    const interfaceName = `gh${process.pid}x${gatehouseInterfaceCounter++}`;
    await writeFile(join(directory, `${interfaceName}.conf`), wgQuickFile(options), {
      mode: 0o600,
    });
    const peer = new GatehousePeer(network, options, interfaceName, directory);
    await peer.#waitUntilRunning();
    return peer;
  }

  get pid(): number {
    const pid = this.#process.child.pid;
    if (pid === undefined) throw new Error(`gatehouse-tunnel ${this.interfaceName} has no pid`);
    return pid;
  }

  #spawn(): NamespaceProcess {
    return this.#network.spawn(this.options.namespace, [
      GATEHOUSE_TUNNEL,
      'up',
      '--config',
      this.#configFile,
      '--socket',
      this.#socketPath,
    ]);
  }

  async #status(): Promise<GatehouseStatus> {
    const { stdout } = await runCommand(
      [GATEHOUSE_TUNNEL, 'status', '--json', '--socket', this.#socketPath],
      { timeoutMs: STATUS_TIMEOUT_MS },
    );
    return JSON.parse(stdout) as GatehouseStatus;
  }

  async #waitUntilRunning(): Promise<void> {
    const deadline = performance.now() + READY_TIMEOUT_MS;
    let lastError = '';
    while (performance.now() < deadline) {
      if (!this.#process.running) {
        const exit = await this.#process.exited;
        throw new Error(
          `gatehouse-tunnel ${this.interfaceName} exited during start-up ` +
            `(${exit.code ?? exit.signal}): ${this.#process.output()}`,
        );
      }
      try {
        if ((await this.#status()).state === 'connected') return;
      } catch (error) {
        lastError = (error as Error).message;
      }
      await sleep(100);
    }
    throw new Error(
      `gatehouse-tunnel ${this.interfaceName} not running within ${READY_TIMEOUT_MS} ms: ` +
        `${lastError}\n${this.#process.output()}`,
    );
  }

  async remoteEndpoint(): Promise<string | undefined> {
    const status = await this.#status();
    const peer = status.peers.find((p) => p.publicKey === this.options.peer.publicKey);
    return peer?.endpoint ?? undefined;
  }

  socketBuffers(): Promise<SocketBuffers[]> {
    return udpSocketBuffers(this.#network, this.options.namespace, this.pid);
  }

  stop(): Promise<ProcessExit> {
    return this.#process.stop(STOP_GRACE_MS);
  }

  async restart(): Promise<ProcessExit> {
    const exit = await this.stop();
    this.#process = this.#spawn();
    await this.#waitUntilRunning();
    return exit;
  }

  output(): string {
    return this.#process.output();
  }
}

/** The part of `gatehouse-tunnel status --json` this harness reads. */
interface GatehouseStatus {
  state: string;
  peers: { publicKey: string; endpoint: string | null }[];
}

function wgQuickFile(options: TunnelPeerOptions): string {
  const lines = [
    '[Interface]',
    `PrivateKey = ${options.keys.privateKey}`,
    `Address = ${options.address}`,
    `ListenPort = ${options.listenPort}`,
    ...(options.mtu === undefined ? [] : [`MTU = ${options.mtu}`]),
    '',
    '[Peer]',
    `PublicKey = ${options.peer.publicKey}`,
    `AllowedIPs = ${options.peer.allowedIps.join(', ')}`,
  ];
  if (options.peer.endpoint !== undefined) lines.push(`Endpoint = ${options.peer.endpoint}`);
  return `${lines.join('\n')}\n`;
}

class WireGuardGoPeer implements TunnelPeer {
  readonly kind = 'wireguard-go';
  readonly options: TunnelPeerOptions;
  readonly #network: TestNetwork;
  #device: WireGuardGo;

  private constructor(network: TestNetwork, options: TunnelPeerOptions, device: WireGuardGo) {
    this.#network = network;
    this.options = options;
    this.#device = device;
  }

  static async start(network: TestNetwork, options: TunnelPeerOptions): Promise<WireGuardGoPeer> {
    return new WireGuardGoPeer(
      network,
      options,
      await WireGuardGoPeer.#startDevice(network, options),
    );
  }

  static async #startDevice(
    network: TestNetwork,
    options: TunnelPeerOptions,
  ): Promise<WireGuardGo> {
    const device = await WireGuardGo.start(network, {
      namespace: options.namespace,
      privateKey: options.keys.privateKey,
      listenPort: options.listenPort,
      address: options.address,
    });
    if (options.mtu !== undefined) {
      await network.exec(options.namespace, [
        'ip',
        'link',
        'set',
        'dev',
        device.name,
        'mtu',
        `${options.mtu}`,
      ]);
    }
    await device.setPeer(options.peer);
    return device;
  }

  get interfaceName(): string {
    return this.#device.name;
  }

  get pid(): number {
    const pid = this.#device.process.child.pid;
    if (pid === undefined) throw new Error(`wireguard-go ${this.interfaceName} has no pid`);
    return pid;
  }

  async remoteEndpoint(): Promise<string | undefined> {
    return (await this.#device.peer(this.options.peer.publicKey)).endpoint;
  }

  socketBuffers(): Promise<SocketBuffers[]> {
    return udpSocketBuffers(this.#network, this.options.namespace, this.pid);
  }

  stop(): Promise<ProcessExit> {
    return this.#device.process.stop(STOP_GRACE_MS);
  }

  async restart(): Promise<ProcessExit> {
    const exit = await this.stop();
    this.#device = await WireGuardGoPeer.#startDevice(this.#network, this.options);
    return exit;
  }

  output(): string {
    return this.#device.log();
  }
}

/** The standard topology's addresses; every pair lives in its own namespaces, so pairs may coexist. */
export const PAIR_ADDRESSES = {
  underlayPrefix: 24,
  tunnelPrefix: 24,
  underlay6Prefix: 64,
  left: {
    underlay: '10.200.0.1',
    underlay6: 'fd00:200::1',
    tunnel: '10.201.0.1',
    listenPort: 51820,
  },
  right: {
    underlay: '10.200.0.2',
    underlay6: 'fd00:200::2',
    tunnel: '10.201.0.2',
    listenPort: 51821,
  },
} as const;

export const TUNNEL_MTU = 1420;
/** The veth interface's name in both namespaces. */
export const UNDERLAY_INTERFACE = 'veth0';

export interface TunnelPairOptions {
  /** Which underlay addresses the peers' endpoints are (default 4); with 6 the veth has both. */
  underlayFamily?: 4 | 6;
  /** The tunnel MTU both sides set; 'default' sets none (default TUNNEL_MTU). */
  mtu?: number | 'default';
}

export interface TunnelPair {
  leftNamespace: string;
  rightNamespace: string;
  left: TunnelPeer;
  right: TunnelPeer;
}

/**
 * Two namespaces joined by a veth pair (MTU 1500), a tunnel peer of
 * `kinds[0]` on the left and of `kinds[1]` on the right; each knows the
 * other's endpoint, so either can start the handshake.
 */
export async function createTunnelPair(
  network: TestNetwork,
  kinds: readonly [PeerKind, PeerKind],
  options: TunnelPairOptions = {},
): Promise<TunnelPair> {
  const { left, right } = PAIR_ADDRESSES;
  const leftNamespace = await network.addNamespace();
  const rightNamespace = await network.addNamespace();
  await network.addVethPair(
    {
      namespace: leftNamespace,
      name: UNDERLAY_INTERFACE,
      address: `${left.underlay}/${PAIR_ADDRESSES.underlayPrefix}`,
    },
    {
      namespace: rightNamespace,
      name: UNDERLAY_INTERFACE,
      address: `${right.underlay}/${PAIR_ADDRESSES.underlayPrefix}`,
    },
  );
  const family = options.underlayFamily ?? 4;
  if (family === 6) {
    for (const [namespace, side] of [
      [leftNamespace, left],
      [rightNamespace, right],
    ] as const) {
      const address = `${side.underlay6}/${PAIR_ADDRESSES.underlay6Prefix}`;
      await network.exec(namespace, [
        'ip',
        '-6',
        'addr',
        'add',
        address,
        'dev',
        UNDERLAY_INTERFACE,
        'nodad',
      ]);
    }
  }
  const endpointOf = (side: typeof left | typeof right): string =>
    family === 6 ? `[${side.underlay6}]:${side.listenPort}` : `${side.underlay}:${side.listenPort}`;
  const mtu = options.mtu ?? TUNNEL_MTU;
  const [leftKeys, rightKeys] = await Promise.all([generateKeyPair(), generateKeyPair()]);
  const leftPeer = await startTunnelPeer(network, kinds[0], {
    namespace: leftNamespace,
    keys: leftKeys,
    listenPort: left.listenPort,
    address: `${left.tunnel}/${PAIR_ADDRESSES.tunnelPrefix}`,
    ...(mtu === 'default' ? {} : { mtu }),
    peer: {
      publicKey: rightKeys.publicKey,
      allowedIps: [`${right.tunnel}/32`],
      endpoint: endpointOf(right),
    },
  });
  const rightPeer = await startTunnelPeer(network, kinds[1], {
    namespace: rightNamespace,
    keys: rightKeys,
    listenPort: right.listenPort,
    address: `${right.tunnel}/${PAIR_ADDRESSES.tunnelPrefix}`,
    ...(mtu === 'default' ? {} : { mtu }),
    peer: {
      publicKey: leftKeys.publicKey,
      allowedIps: [`${left.tunnel}/32`],
      endpoint: endpointOf(left),
    },
  });
  return { leftNamespace, rightNamespace, left: leftPeer, right: rightPeer };
}
