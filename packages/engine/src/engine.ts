/**
 * The engine's control thread: a WireGuardDevice (handshakes, timers, peer
 * configuration) and one data worker per TUN queue.
 *
 * Threads and flows. Worker i owns TUN queue i and UDP socket i (an IPv4
 * socket plus, when the host has IPv6, a v6-only one); the IPv4 sockets
 * share the listen port in one SO_REUSEPORT group, the IPv6 sockets in
 * another on the same port (udp-sockets.ts). The control thread owns
 * those fds, so a worker that dies is started again over the same ones
 * (worker-restarts.ts says how often). Invariant: no
 * flow is handled by two workers at once in one direction.
 * - Network → TUN: the kernel hashes a datagram's 4-tuple to one socket of
 *   the group, so all traffic from a peer's endpoint reaches one worker,
 *   which writes it to its own queue. (So one worker receives each keypair;
 *   the replay window's lock only matters while a roam moves a peer.)
 * - TUN → network: TUN steers each flow to the queue that last wrote it
 *   (its flow table, refreshed by every write), so a flow's outbound
 *   packets are read by the very worker that writes its inbound ones; a
 *   flow that starts on our side goes to the kernel's hash queue until the
 *   first reply is written, then stays with the replying worker.
 * The control thread never touches transport packets except keepalives
 * and handshakes, which it sends through socket 0 of the endpoint's family
 * (sending on one socket from two threads is safe in the kernel). Workers
 * hand it handshake messages through rings and "handshake needed" bits through the device's
 * signal words; both ring the device's doorbell, which the control thread
 * awaits with Atomics.waitAsync next to a timer for device.pollTimeout().
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';

import { silentLogger, type Logger } from '@gatehouse/logging';
import { closeTunQueueFds, openTunQueues, readTunKernelDrops } from '@gatehouse/tun';
import type { MemoryTunQueues, OpenedTunQueues, TunKernelDrops } from '@gatehouse/tun';
import { formatAddress, formatEndpoint } from '@gatehouse/addresses';
import type { AddressFamily } from '@gatehouse/addresses';
import { DatagramBatch, DualStackSocket } from '@gatehouse/udp';
import type { DatagramSocket, MemoryUdpNetwork, MemoryUdpSocket } from '@gatehouse/udp';
import {
  Doorbell,
  encodeKey,
  endpointAddressLength,
  endpointPort,
  mac1Key,
  PeerSlots,
  selectCryptoProvider,
  WireGuardDevice,
} from '@gatehouse/wireguard';
import type { Endpoint } from '@gatehouse/addresses';
import type { CryptoProviderName, Instant } from '@gatehouse/wireguard';

import { AddressActivity } from './address-activity.ts';
import { spawnWorker, stopWorker, watchWorker } from './data-workers.ts';
import type { DataWorker, WorkerRun, WorkerTemplate } from './data-workers.ts';
import { monotonicMs } from './data-path.ts';
import { DROP_UDP_SEND_FAILED, DropCounters, UNATTRIBUTED } from './drop-counters.ts';
import {
  DatagramRing,
  HANDSHAKE_RING,
  RELAY_RING,
  UNDER_LOAD_RING_DEPTH,
} from './datagram-ring.ts';
import { EngineEvents } from './engine-events.ts';
import { checkedPeers, compilePeerTables, sameBytes, sameEndpointConfig } from './peer-config.ts';
import type { EnginePeer, PeerEntry } from './peer-config.ts';
import { emptyDrops, formatEndpointText } from './engine-status.ts';
import type {
  EngineDropReason,
  EnginePeerStatus,
  EngineStatus,
  EngineUnattributedDropReason,
} from './engine-status.ts';
import type { PeerActivity } from './peer-idle.ts';
import type { EngineEvent } from './engine-events.ts';
import { RouteMissRing } from './route-miss.ts';
import { openEngineSockets } from './udp-sockets.ts';
import { judgeWorkerDeath, WORKER_RESTART_WINDOW_MS } from './worker-restarts.ts';
import { CONTROL_CONFIG_EPOCH, CONTROL_STOP, CONTROL_WORDS } from './worker-protocol.ts';
import type { PeerTables, WorkerIo } from './worker-protocol.ts';

export interface EngineOptions {
  interfaceName: string;
  /** Copied on start (the engine wipes its copy when it stops or fails to start); the caller's buffer stays the caller's. */
  privateKey: Uint8Array;
  /** 0 or absent: a random port. */
  listenPort?: number;
  /** SO_MARK on every socket (IPv4 and IPv6), so policy routing keeps tunnel traffic out of the tunnel. */
  fwmark?: number;
  mtu: number;
  /** TUN queues and data workers; default: one per CPU, at most 4. */
  queues?: number;
  /** TUN checksum/TSO/USO offloads with GSO split and GRO coalescing (default true). */
  offloads?: boolean;
  crypto?: 'auto' | CryptoProviderName;
  logger?: Logger;
  /** Called on the control thread; what it throws is counted (event-handler-error) and logged. */
  onEvent?: (event: EngineEvent) => void;
  /**
   * The engine failed for good after start: a data worker died more often
   * than it may be restarted. Its status then carries the error; stop it.
   */
  onFailed?: (error: Error) => void;
  /** At most one prefix per family whose addresses' last packets `idleMs` answers for (the DNS stub's proxy ranges). */
  watchedRanges?: readonly string[];
}

/** In-memory devices instead of the kernel's, for tests: queue i of `tun` pairs with `sockets[i]`. */
export interface EngineMemoryDevices {
  tun: MemoryTunQueues;
  network: MemoryUdpNetwork;
  sockets: MemoryUdpSocket[];
  /** Sees every data worker as it is started (restarts too), e.g. to make one die. */
  observeWorker?: (queue: number, worker: Worker) => void;
}

/** pollTimeout() cannot see stamps workers write later: look again at least this often. */
const MAX_TIMER_MS = 1_000;

export class Engine {
  readonly interfaceName: string;
  readonly listenPort: number;
  readonly cryptoProvider: string;

  readonly #device: WireGuardDevice;
  readonly #logger: Logger;
  readonly #workers: DataWorker[];
  readonly #control: Int32Array;
  readonly #doorbell: Doorbell;
  readonly #peerSlots: PeerSlots;
  readonly #drops: DropCounters;
  readonly #activity: AddressActivity;
  readonly #peers = new Map<string, PeerEntry>();
  readonly #send = new DatagramBatch(1, 2048);
  readonly #closeDevices: () => void;
  /** The kernel TUN interface's name; undefined over memory devices. */
  readonly #kernelTun: string | undefined;
  #kernelTunDropsUnreadable = false;
  readonly #template: WorkerTemplate;
  readonly #observeWorker: ((queue: number, worker: Worker) => void) | undefined;
  /** Set once the engine is built: a failure while it is built is start's error instead. */
  #onFailed: (error: Error) => void = () => {};
  /** The tables workers have (a restarted worker starts with them). */
  #tables: PeerTables;
  #workerDeathsMs: number[] = [];
  #workerRestarts = 0;
  #failure: string | undefined;
  #handlerErrors = 0;
  #relayUnclaimed = 0;
  readonly #events: EngineEvents;
  #timer: NodeJS.Timeout | undefined;
  #stopping: Promise<void> | undefined;

  private constructor(init: {
    options: EngineOptions;
    device: WireGuardDevice;
    cryptoProvider: string;
    workers: DataWorker[];
    control: Int32Array;
    drops: DropCounters;
    activity: AddressActivity;
    listenPort: number;
    closeDevices: () => void;
    kernelTun: string | undefined;
    template: WorkerTemplate;
    tables: PeerTables;
    observeWorker: ((queue: number, worker: Worker) => void) | undefined;
  }) {
    this.interfaceName = init.options.interfaceName;
    this.listenPort = init.listenPort;
    this.cryptoProvider = init.cryptoProvider;
    this.#device = init.device;
    this.#logger = init.options.logger ?? silentLogger;
    this.#events = new EngineEvents(init.options.onEvent ?? (() => {}), (message) =>
      this.#logger.error(`${this.interfaceName}: ${message}`),
    );
    this.#workers = init.workers;
    this.#control = init.control;
    this.#doorbell = new Doorbell(init.device.sharedMemory);
    this.#peerSlots = new PeerSlots(init.device.sharedMemory);
    this.#drops = init.drops;
    this.#activity = init.activity;
    this.#closeDevices = init.closeDevices;
    this.#kernelTun = init.kernelTun;
    this.#template = init.template;
    this.#tables = init.tables;
    this.#observeWorker = init.observeWorker;
    for (const worker of this.#workers) this.#supervise(worker);
    this.#onFailed = init.options.onFailed ?? (() => {});
  }

  /** Opens the TUN device (exclusively), the sockets and the workers, then adds `peers`. */
  static async start(options: EngineOptions, peers: EnginePeer[]): Promise<Engine> {
    return withOwnKey(options, (options) => {
      const queues = options.queues ?? Math.min(4, availableParallelism());
      const tun = openTunQueues({
        name: options.interfaceName,
        queues,
        mtu: options.mtu,
        offload: options.offloads ?? true,
      });
      let sockets: DualStackSocket[];
      try {
        sockets = openEngineSockets(
          {
            queues,
            ...(options.listenPort === undefined ? {} : { listenPort: options.listenPort }),
            ...(options.fwmark === undefined ? {} : { fwmark: options.fwmark }),
          },
          (level, message) => options.logger?.[level](`${options.interfaceName}: ${message}`),
        );
      } catch (error) {
        closeTunQueueFds(tun.fds);
        throw error;
      }
      return Engine.#start(options, peers, sockets, tun, (queue, socket) => {
        const { v4, v6 } = socket as DualStackSocket;
        return {
          kind: 'linux',
          tunFd: tun.fds[queue]!,
          mtu: tun.mtu,
          offloads: tun.offloads,
          udp: v4.share(),
          ...(v6 === undefined ? {} : { udp6: v6.share() }),
        };
      });
    });
  }

  /** As `start`, over in-memory devices (tests). */
  static async startWithMemoryDevices(
    options: EngineOptions,
    peers: EnginePeer[],
    devices: EngineMemoryDevices,
  ): Promise<Engine> {
    return withOwnKey(options, (options) => {
      if (devices.sockets.length !== devices.tun.queueCount) {
        throw new RangeError('one socket per TUN queue');
      }
      return Engine.#start(
        options,
        peers,
        devices.sockets,
        undefined,
        (queue, socket) => ({
          kind: 'memory',
          tun: devices.tun.shared,
          queue,
          network: devices.network.shared,
          socket: (socket as MemoryUdpSocket).index,
        }),
        devices.observeWorker,
      );
    });
  }

  static async #start(
    options: EngineOptions,
    peers: EnginePeer[],
    sockets: DatagramSocket[],
    tun: OpenedTunQueues | undefined,
    workerIo: (queue: number, socket: DatagramSocket) => WorkerIo,
    observeWorker?: (queue: number, worker: Worker) => void,
  ): Promise<Engine> {
    const logger = options.logger ?? silentLogger;
    const workers: DataWorker[] = [];
    const closeDevices = (): void => {
      for (const socket of sockets) socket.close();
      if (tun !== undefined) closeTunQueueFds(tun.fds);
    };
    try {
      const selection = await selectCryptoProvider(options.crypto ?? 'auto');
      logger.info(`crypto provider ${selection.reason}`);
      const device = new WireGuardDevice({
        privateKey: options.privateKey,
        crypto: selection.provider,
        mtu: options.mtu,
        underLoadQueueDepth: UNDER_LOAD_RING_DEPTH,
      });
      const drops = new DropCounters(device.sharedMemory.peerSlots);
      const tables = compilePeerTables([], device.sharedMemory.peerSlots);
      const control = new Int32Array(new SharedArrayBuffer(CONTROL_WORDS * 4));
      const activity = AddressActivity.create(options.watchedRanges ?? [], monotonicMs());
      const template: WorkerTemplate = {
        transport: device.sharedMemory,
        crypto: selection.provider.name,
        dropCounters: drops.buffer,
        activity: activity.shared,
        mac1Key: mac1Key(device.publicKey),
        control: control.buffer as SharedArrayBuffer,
      };
      for (let queue = 0; queue < sockets.length; queue++) {
        const io = workerIo(queue, sockets[queue]!);
        const ring = new DatagramRing(device.sharedMemory, HANDSHAKE_RING);
        const relay = new DatagramRing(device.sharedMemory, RELAY_RING);
        const routeMisses = new RouteMissRing(device.sharedMemory);
        const rings = { ring, relay, routeMisses };
        const run = spawnWorker(template, queue, io, rings, tables, observeWorker);
        workers.push({ queue, io, socket: sockets[queue]!, ...rings, run });
      }
      await Promise.all(workers.map((w) => watchWorker(w.queue, w.run, logger)));
      const engine = new Engine({
        options,
        device,
        cryptoProvider: selection.provider.name,
        workers,
        control,
        drops,
        activity,
        listenPort: sockets[0]!.localPort,
        closeDevices,
        kernelTun: tun?.name,
        template,
        tables,
        observeWorker,
      });
      if (engine.#failure !== undefined) throw new Error(engine.#failure);
      const families =
        sockets[0] instanceof DualStackSocket && sockets[0].v6 ? 'IPv4+IPv6' : 'IPv4';
      logger.info(
        `${options.interfaceName}: ${workers.length} data worker(s), port ${engine.listenPort} (${families}), ` +
          `UDP GSO ${sockets[0]!.gso ? 'on' : 'off'}` +
          (tun === undefined ? '' : `, offloads ${JSON.stringify(tun.offloads)}`),
      );
      engine.setPeers(peers);
      void engine.#watchDoorbell();
      engine.#schedule();
      return engine;
    } catch (error) {
      await Promise.all(workers.map((w) => w.run.worker.terminate()));
      closeDevices();
      throw error;
    }
  }

  /**
   * Adds, removes and updates peers by public key; the AllowedIPs table is
   * rebuilt and published. Only a new preshared key replaces a peer's
   * session; endpoint, keepalive and AllowedIPs change under it. A bad
   * peer (prefix, policy rule, endpoint, keepalive) is refused before
   * anything changes.
   */
  setPeers(peers: EnginePeer[]): void {
    const wanted = checkedPeers(peers);
    const now = this.#now();
    const removed: Uint8Array[] = [];
    for (const [name, entry] of this.#peers) {
      const next = wanted.get(name);
      if (next === undefined || !sameBytes(entry.config.presharedKey, next.presharedKey)) {
        removed.push(entry.config.publicKey);
        this.#peers.delete(name);
      }
    }
    if (removed.length > 0) {
      // Workers get a table without the removed peers before their slots can be reused.
      this.#publish(this.#compileTables());
      for (const publicKey of removed) this.#device.removePeer(publicKey);
    }

    const added: EnginePeer[] = [];
    for (const [name, peer] of wanted) {
      const entry = this.#peers.get(name);
      if (entry !== undefined) {
        // Endpoint and keepalive change in place: the session survives roaming and ICE.
        this.#device.updatePeer({
          publicKey: peer.publicKey,
          ...(peer.endpoint === undefined || sameEndpointConfig(entry.config, peer)
            ? {}
            : { endpoint: { ...peer.endpoint } }),
          ...(peer.persistentKeepaliveSeconds === undefined
            ? {}
            : { persistentKeepaliveSeconds: peer.persistentKeepaliveSeconds }),
        });
        entry.config = peer;
        continue;
      }
      this.#device.addPeer({
        publicKey: peer.publicKey,
        ...(peer.presharedKey === undefined ? {} : { presharedKey: peer.presharedKey }),
        ...(peer.endpoint === undefined ? {} : { endpoint: { ...peer.endpoint } }),
        ...(peer.persistentKeepaliveSeconds === undefined
          ? {}
          : { persistentKeepaliveSeconds: peer.persistentKeepaliveSeconds }),
      });
      const slot = this.#device.peerSlot(peer.publicKey);
      this.#drops.reset(slot);
      this.#peers.set(name, { config: peer, slot, addedMs: now.monotonicMs });
      added.push(peer);
    }
    this.#publish(this.#compileTables());
    for (const peer of added) {
      if (peer.endpoint !== undefined) this.#device.initiateHandshake(peer.publicKey, now);
    }
    this.#flushTransmits();
  }

  /** Milliseconds since a packet to or from `address` (in a watched range) passed the data path; Infinity for never. */
  idleMs(address: string): number {
    return this.#activity.idleMs(address, monotonicMs());
  }

  status(): EngineStatus {
    const address = new Uint8Array(16);
    const peers = [...this.#peers.values()].map(({ config, slot }): EnginePeerStatus => {
      const stats = this.#device.peerStats(config.publicKey);
      const drops = emptyDrops();
      for (const [reason, count] of Object.entries(stats.drops)) {
        drops[reason as EngineDropReason] += count;
      }
      for (const [reason, count] of Object.entries(this.#drops.read(slot))) {
        drops[reason as EngineDropReason] += count;
      }
      const endpoint = this.#peerSlots.readEndpoint(slot, address);
      return {
        publicKey: encodeKey(config.publicKey),
        endpoint:
          endpoint === 0
            ? null
            : formatEndpointText(
                address.subarray(0, endpointAddressLength(endpoint)),
                endpointPort(endpoint),
              ),
        allowedIps: [...config.allowedIps],
        rxBytes: stats.rxBytes,
        txBytes: stats.txBytes,
        rxPackets: stats.rxPackets,
        txPackets: stats.txPackets,
        lastHandshake: stats.lastHandshakeWallClockMs ?? null,
        persistentKeepalive: config.persistentKeepaliveSeconds || null,
        drops,
      };
    });
    const kernel = this.#kernelTunDrops();
    const unattributed: Record<EngineUnattributedDropReason, number> = {
      ...emptyDrops(),
      'handshake-ring-full': 0,
      'handshake-handler-error': this.#handlerErrors,
      'kernel-tun-tx-dropped': kernel?.txDropped ?? 0,
      'kernel-tun-rx-dropped': kernel?.rxDropped ?? 0,
      'relay-ring-full': 0,
      'relay-unclaimed': this.#relayUnclaimed,
      'route-miss-unreported': 0,
      'event-handler-error': this.#events.handlerErrors,
    };
    for (const [reason, count] of Object.entries(this.#device.deviceDrops())) {
      unattributed[reason as EngineDropReason] += count;
    }
    for (const [reason, count] of Object.entries(this.#drops.read(UNATTRIBUTED))) {
      unattributed[reason as EngineDropReason] += count;
    }
    for (const worker of this.#workers) {
      unattributed['handshake-ring-full'] += worker.ring.dropped;
      unattributed['relay-ring-full'] += worker.relay.dropped;
      unattributed['route-miss-unreported'] += worker.routeMisses.dropped;
    }
    return {
      interfaceName: this.interfaceName,
      listenPort: this.listenPort,
      cryptoProvider: this.cryptoProvider,
      peers,
      noRoute: this.#drops.noRoute(),
      workerRestarts: this.#workerRestarts,
      failure: this.#failure ?? null,
      unattributedDrops: unattributed,
    };
  }

  /** The kernel's drop counters of our TUN interface; undefined over memory devices. */
  #kernelTunDrops(): TunKernelDrops | undefined {
    if (this.#kernelTun === undefined) return undefined;
    const drops = readTunKernelDrops(this.#kernelTun);
    if (drops === undefined && !this.#kernelTunDropsUnreadable) {
      this.#kernelTunDropsUnreadable = true;
      this.#logger.warn(`${this.#kernelTun}: the kernel's drop counters cannot be read from sysfs`);
    }
    return drops;
  }

  /** Stops the workers (woken through their eventfds, terminated after 1 s) and closes TUN and sockets. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    clearTimeout(this.#timer);
    Atomics.store(this.#control, CONTROL_STOP, 1);
    for (const worker of this.#workers) worker.socket.wake();
    this.#doorbell.ring();
    await Promise.all(this.#workers.map((worker) => stopWorker(worker)));
    for (const worker of this.#workers) worker.run.port.close();
    this.#closeDevices();
    this.#device.close();
    this.#peers.clear();
  }

  /**
   * A worker that exits while the engine runs has died: start it again, or
   * fail the engine. One that became ready and died while another was
   * still starting is handled now.
   */
  #supervise(data: DataWorker): void {
    const { run } = data;
    if (run.exitCode === undefined) run.worker.once('exit', () => this.#workerDied(data, run));
    else this.#workerDied(data, run);
  }

  #workerDied(data: DataWorker, run: WorkerRun): void {
    if (this.#stopping !== undefined || this.#failure !== undefined) return;
    const cause = run.lastError ?? `exited with code ${run.exitCode}`;
    const verdict = judgeWorkerDeath(this.#workerDeathsMs, monotonicMs());
    this.#workerDeathsMs = verdict.recentDeathsMs;
    if (!verdict.restart) {
      this.#fail(
        `data worker ${data.queue} died ${verdict.recentDeathsMs.length} times within ` +
          `${WORKER_RESTART_WINDOW_MS / 1000} s (last: ${cause})`,
      );
      return;
    }
    this.#workerRestarts++;
    this.#logger.error(
      `${this.interfaceName}: data worker ${data.queue} died (${cause}); restarting it`,
    );
    void this.#restart(data);
  }

  async #restart(data: DataWorker): Promise<void> {
    data.run.port.close();
    const run = spawnWorker(
      this.#template,
      data.queue,
      data.io,
      data,
      this.#tables,
      this.#observeWorker,
    );
    data.run = run;
    this.#supervise(data);
    try {
      await watchWorker(data.queue, run, this.#logger);
      this.#logger.info(`${this.interfaceName}: data worker ${data.queue} restarted`);
    } catch {
      // A worker that never got ready is ended; its exit counts as another death.
      await run.worker.terminate();
    }
  }

  #fail(message: string): void {
    this.#failure = message;
    this.#logger.error(`${this.interfaceName}: the engine failed: ${message}`);
    this.#onFailed(new Error(message));
  }

  #compileTables(): PeerTables {
    return compilePeerTables(this.#peers.values(), this.#device.sharedMemory.peerSlots);
  }

  #publish(tables: PeerTables): void {
    this.#tables = tables;
    for (const worker of this.#workers) worker.run.port.postMessage(tables);
    Atomics.add(this.#control, CONTROL_CONFIG_EPOCH, 1);
    for (const worker of this.#workers) worker.socket.wake();
  }

  async #watchDoorbell(): Promise<void> {
    while (this.#stopping === undefined) {
      const seen = this.#doorbell.rings;
      this.#service();
      await this.#doorbell.rungSince(seen);
    }
  }

  /** Everything the control thread does: handshakes in, signals and timers, datagrams out. */
  #service(): void {
    if (this.#stopping !== undefined) return;
    const now = this.#now();
    for (const worker of this.#workers) {
      this.#device.noteHandshakeQueueDepth(worker.ring.waiting, now);
      worker.ring.drain((message, from) => this.#handleHandshake(message, from, now));
      // The STUN/TURN client will take these; until then they are counted.
      worker.relay.drain(() => this.#relayUnclaimed++);
      worker.routeMisses.drain((family, bytes, offset) =>
        this.#events.routeMiss(family, formatAddress(family, bytes, offset), now.monotonicMs),
      );
    }
    this.#device.handleTimeout(now);
    this.#flushTransmits();
    for (let event = this.#device.pollEvent(); event; event = this.#device.pollEvent()) {
      if (event.type === 'handshake-complete') {
        this.#logger.debug(`handshake with ${event.peer} complete`);
        // Workers may hold packets for this session; they look when woken.
        for (const worker of this.#workers) worker.socket.wake();
        this.#events.emit({ type: 'handshake-completed', peer: event.peer });
      } else if (event.type === 'handshake-gave-up') {
        this.#logger.info(`handshake with ${event.peer} gave up`);
        this.#events.emit({
          type: 'handshake-failed',
          peer: event.peer,
          droppedPackets: event.droppedPackets,
        });
      }
    }
    this.#events.checkIdle(() => this.#peerActivity(now.monotonicMs), now.monotonicMs);
    this.#schedule();
  }

  #peerActivity(nowMs: number): PeerActivity[] {
    return [...this.#peers].map(([peer, entry]) => ({
      peer,
      lastActivityMs: this.#device.lastActivityMs(entry.config.publicKey, nowMs) ?? entry.addedMs,
    }));
  }

  /**
   * The control thread's input boundary: a handshake message whose handling
   * throws costs that message. Workers checked MAC1 before the ring.
   */
  #handleHandshake(message: Uint8Array, from: Endpoint, now: Instant): void {
    try {
      this.#device.handleScreenedHandshake(message, from, now);
    } catch (error) {
      this.#handlerErrors++;
      // A hostile stream of such datagrams must not flood the log: the first, then every 1000th.
      if (this.#handlerErrors % 1000 === 1) {
        this.#logger.error(
          `${this.interfaceName}: handling a handshake message from ${from.address} failed (${this.#handlerErrors} so far): ${(error as Error).message}`,
        );
      }
    }
  }

  #schedule(): void {
    if (this.#stopping !== undefined) return;
    clearTimeout(this.#timer);
    const deadline = this.#device.pollTimeout();
    const delay =
      deadline === undefined ? MAX_TIMER_MS : Math.min(MAX_TIMER_MS, deadline - monotonicMs());
    this.#timer = setTimeout(() => this.#service(), Math.max(0, Math.ceil(delay)));
  }

  #flushTransmits(): void {
    const socket = this.#workers[0]!.socket;
    for (let t = this.#device.pollTransmit(); t; t = this.#device.pollTransmit()) {
      if (!canSend(socket, t.to.family)) {
        this.#logger.warn(`no IPv${t.to.family} socket for ${formatEndpoint(t.to)}`);
        this.#drops.add(UNATTRIBUTED, DROP_UDP_SEND_FAILED);
        continue;
      }
      this.#send.setEndpoint(0, t.to);
      this.#send.data.set(t.datagram, 0);
      this.#send.lengths[0] = t.datagram.length;
      this.#send.tos[0] = 0;
      if (socket.sendBatch(this.#send, 1) < 1) {
        this.#drops.add(UNATTRIBUTED, DROP_UDP_SEND_FAILED);
      }
    }
  }

  #now(): Instant {
    return { monotonicMs: monotonicMs(), wallClockMs: Date.now() };
  }
}

/**
 * Runs a start with the engine's own copy of the private key, which the
 * device keeps and wipes when it closes; a failed start wipes it. The
 * caller may start again with the same options.
 */
async function withOwnKey(
  options: EngineOptions,
  start: (options: EngineOptions) => Promise<Engine>,
): Promise<Engine> {
  const privateKey = new Uint8Array(options.privateKey);
  try {
    return await start({ ...options, privateKey });
  } catch (error) {
    privateKey.fill(0);
    throw error;
  }
}

/** Whether `socket` reaches endpoints of `family` (a dual-stack socket routes each datagram by it). */
function canSend(socket: DatagramSocket, family: AddressFamily): boolean {
  return socket instanceof DualStackSocket ? socket.has(family) : socket.family === family;
}
