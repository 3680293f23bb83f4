/**
 * Debian's wireguard-go as a real WireGuard peer inside a test namespace,
 * configured with `wg set` and `ip`, observed through `wg show <if> dump`.
 *
 * wireguard-go's control socket lives in /var/run/wireguard/, which all
 * namespaces share, so every interface gets a name unique to this process:
 * `gw<pid>x<n>` (at most 15 characters, the kernel's limit).
 */
import { readdirSync, rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isProcessAlive, runCommand } from './netns.ts';
import type { NamespaceProcess, TestNetwork } from './netns.ts';

const SOCKET_DIRECTORY = '/var/run/wireguard';
const OUR_SOCKET = /^gw(\d+)x\d+\.sock$/;
const READY_TIMEOUT_MS = 5_000;

export interface KeyPair {
  /** base64, as `wg` prints it */
  privateKey: string;
  publicKey: string;
}

export async function generateKeyPair(): Promise<KeyPair> {
  const privateKey = (await runCommand(['wg', 'genkey'])).stdout.trim();
  const publicKey = (
    await runCommand(['wg', 'pubkey'], { input: `${privateKey}\n` })
  ).stdout.trim();
  return { privateKey, publicKey };
}

export async function generatePresharedKey(): Promise<string> {
  return (await runCommand(['wg', 'genpsk'])).stdout.trim();
}

export interface WireGuardGoOptions {
  namespace: string;
  privateKey: string;
  listenPort: number;
  /** Tunnel address with prefix length, e.g. `10.99.0.1/24`. */
  address: string;
  /** wireguard-go's LOG_LEVEL; `debug` logs every handshake message. */
  logLevel?: 'silent' | 'error' | 'verbose' | 'debug';
}

export interface WireGuardGoPeer {
  publicKey: string;
  presharedKey?: string;
  /** `address:port` */
  endpoint?: string;
  allowedIps: readonly string[];
  persistentKeepaliveSeconds?: number;
}

export interface PeerDump {
  publicKey: string;
  presharedKey: string | undefined;
  endpoint: string | undefined;
  allowedIps: string[];
  /** Unix seconds; 0 before the first handshake. */
  latestHandshakeSeconds: number;
  rxBytes: number;
  txBytes: number;
  persistentKeepaliveSeconds: number | undefined;
}

export interface InterfaceDump {
  publicKey: string;
  listenPort: number;
  peers: PeerDump[];
}

let interfaceCounter = 0;
let staleSocketSweepDone = false;

/** Removes control sockets left behind by test runs that died without cleaning up. */
export function sweepStaleWireGuardSockets(): string[] {
  let entries: string[];
  try {
    entries = readdirSync(SOCKET_DIRECTORY);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const entry of entries) {
    const owner = OUR_SOCKET.exec(entry)?.[1];
    if (owner === undefined || isProcessAlive(Number(owner))) continue;
    rmSync(`${SOCKET_DIRECTORY}/${entry}`, { force: true });
    removed.push(entry);
  }
  return removed;
}

/**
 * Hands a key to `wg` as a 0600 file in a private directory, removed right
 * after. (`/dev/stdin` fails here: Node gives children sockets, not pipes,
 * and opening /proc/self/fd/0 on a socket fails with ENXIO.)
 */
async function withKeyFile<T>(key: string, use: (path: string) => Promise<T>): Promise<T> {
  const directory = await mkdtemp(join(tmpdir(), 'gh-wg-key-'));
  try {
    const path = join(directory, 'key');
    await writeFile(path, `${key}\n`, { mode: 0o600 });
    return await use(path);
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

function optional(field: string | undefined): string | undefined {
  return field === undefined || field === '(none)' || field === 'off' ? undefined : field;
}

/** Parses `wg show <if> dump`: one tab-separated interface line, then one line per peer. */
export function parseDump(text: string): InterfaceDump {
  const [interfaceLine, ...peerLines] = text.trim().split('\n');
  const [, publicKey, listenPort] = (interfaceLine ?? '').split('\t');
  if (publicKey === undefined || listenPort === undefined) {
    throw new Error(`unexpected wg dump: ${JSON.stringify(text)}`);
  }
  const peers = peerLines.map((line): PeerDump => {
    const fields = line.split('\t');
    if (fields.length !== 8)
      throw new Error(`unexpected wg dump peer line: ${JSON.stringify(line)}`);
    const [key, psk, endpoint, allowedIps, handshake, rx, tx, keepalive] = fields as [
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    const keepaliveSeconds = optional(keepalive);
    return {
      publicKey: key,
      presharedKey: optional(psk),
      endpoint: optional(endpoint),
      allowedIps: optional(allowedIps)?.split(',') ?? [],
      latestHandshakeSeconds: Number(handshake),
      rxBytes: Number(rx),
      txBytes: Number(tx),
      persistentKeepaliveSeconds:
        keepaliveSeconds === undefined ? undefined : Number(keepaliveSeconds),
    };
  });
  return { publicKey, listenPort: Number(listenPort), peers };
}

export class WireGuardGo {
  readonly name: string;
  readonly namespace: string;
  readonly process: NamespaceProcess;
  readonly #network: TestNetwork;

  private constructor(
    network: TestNetwork,
    namespace: string,
    name: string,
    started: NamespaceProcess,
  ) {
    this.#network = network;
    this.namespace = namespace;
    this.name = name;
    this.process = started;
  }

  /** Starts wireguard-go in the namespace, sets key and port, adds the address, brings the link up. */
  static async start(network: TestNetwork, options: WireGuardGoOptions): Promise<WireGuardGo> {
    if (!staleSocketSweepDone) {
      staleSocketSweepDone = true;
      const removed = sweepStaleWireGuardSockets();
      if (removed.length > 0)
        console.error(`removed stale wireguard sockets: ${removed.join(' ')}`);
    }
    const device = await WireGuardGo.#launch(network, options);
    const { name } = device;
    await withKeyFile(options.privateKey, (path) =>
      device.#wg(['set', name, 'private-key', path, 'listen-port', `${options.listenPort}`]),
    );
    await network.exec(options.namespace, ['ip', 'addr', 'add', options.address, 'dev', name]);
    await network.exec(options.namespace, ['ip', 'link', 'set', name, 'up']);
    return device;
  }

  /**
   * Spawns wireguard-go and waits for its control socket. Debian's
   * wireguard-go (0.0.20220316) now and then exits at once with "Failed to
   * listen on uapi socket: no such file or directory" (its retry path removes
   * a socket file that was never there); that start is retried once, loudly.
   */
  static async #launch(network: TestNetwork, options: WireGuardGoOptions): Promise<WireGuardGo> {
    for (let attempt = 1; ; attempt++) {
      const name = `gw${process.pid}x${interfaceCounter++}`;
      network.onDestroy(() => rmSync(`${SOCKET_DIRECTORY}/${name}.sock`, { force: true }));
      const started = network.spawn(options.namespace, ['wireguard-go', '-f', name], {
        env: { WG_PROCESS_FOREGROUND: '1', LOG_LEVEL: options.logLevel ?? 'error' },
      });
      const device = new WireGuardGo(network, options.namespace, name, started);
      try {
        await device.#waitUntilReady();
        return device;
      } catch (error) {
        const message = (error as Error).message;
        if (attempt > 1 || !message.includes('Failed to listen on uapi socket')) throw error;
        console.error(`wireguard-go start failed, retrying once: ${message.trim()}`);
      }
    }
  }

  async #waitUntilReady(): Promise<void> {
    const deadline = performance.now() + READY_TIMEOUT_MS;
    let lastError = '';
    while (performance.now() < deadline) {
      if (!this.process.running) {
        throw new Error(
          `wireguard-go ${this.name} exited during start-up: ${this.process.output()}`,
        );
      }
      try {
        await this.#wg(['show', this.name]);
        return;
      } catch (error) {
        lastError = (error as Error).message;
      }
      await sleep(20);
    }
    throw new Error(
      `wireguard-go ${this.name} not ready within ${READY_TIMEOUT_MS} ms: ${lastError}`,
    );
  }

  #wg(args: readonly string[]): Promise<{ stdout: string }> {
    return this.#network.exec(this.namespace, ['wg', ...args]);
  }

  /** Adds or updates a peer; the preshared key goes through a 0600 file. */
  async setPeer(peer: WireGuardGoPeer): Promise<void> {
    if (peer.presharedKey === undefined) {
      await this.#wg(this.#peerArgs(peer));
      return;
    }
    await withKeyFile(peer.presharedKey, (path) =>
      this.#wg([...this.#peerArgs(peer), 'preshared-key', path]),
    );
  }

  #peerArgs(peer: WireGuardGoPeer): string[] {
    const args = ['set', this.name, 'peer', peer.publicKey];
    if (peer.endpoint !== undefined) args.push('endpoint', peer.endpoint);
    if (peer.persistentKeepaliveSeconds !== undefined) {
      args.push('persistent-keepalive', `${peer.persistentKeepaliveSeconds}`);
    }
    args.push('allowed-ips', peer.allowedIps.join(','));
    return args;
  }

  async dump(): Promise<InterfaceDump> {
    return parseDump((await this.#wg(['show', this.name, 'dump'])).stdout);
  }

  async peer(publicKey: string): Promise<PeerDump> {
    const found = (await this.dump()).peers.find((peer) => peer.publicKey === publicKey);
    if (found === undefined) throw new Error(`wireguard-go ${this.name} has no peer ${publicKey}`);
    return found;
  }

  /** wireguard-go's own log (set `logLevel: 'debug'` to see every handshake message). */
  log(): string {
    return this.process.output();
  }

  async stop(): Promise<void> {
    await this.process.stop();
  }
}
