/**
 * A data worker: serves TUN queue i and UDP socket i (IPv4, plus IPv6 when
 * the host has it; the control thread owns and closes their fds) and runs a
 * DataPath over them until the control thread sets the stop word. It sleeps
 * only in poll() on the TUN and UDP fds plus the IPv4 socket's eventfd
 * (Linux), so a stop request always gets through; configuration changes
 * arrive on a MessagePort that the loop reads synchronously when the control
 * word's epoch moves.
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';

import { MemoryTunQueues, TunQueue } from '@gatehouse/tun';
import type { TunQueueIo } from '@gatehouse/tun';
import { DualStackSocket, FdPoller, LinuxUdpSocket, MemoryUdpNetwork, Waker } from '@gatehouse/udp';
import type { DatagramSocket } from '@gatehouse/udp';
import { selectCryptoProvider } from '@gatehouse/wireguard';

import { DataPath } from './data-path.ts';
import { RouteMissRing } from './route-miss.ts';
import { DatagramRing, HANDSHAKE_RING, RELAY_RING } from './datagram-ring.ts';
import { CONTROL_CONFIG_EPOCH, CONTROL_STOP } from './worker-protocol.ts';
import type { PeerTables, WorkerIo, WorkerReport, WorkerSetup } from './worker-protocol.ts';

const SWEEP_INTERVAL_MS = 1000;

interface Readiness {
  /** Called before looking for work, so a wake-up in between is not lost. */
  arm(): void;
  wait(): void;
}

if (parentPort !== null) {
  const report = (message: WorkerReport): void => parentPort!.postMessage(message);
  const setup = workerData as WorkerSetup;
  try {
    const { provider } = await selectCryptoProvider(setup.crypto);
    const io = openIo(setup.io);
    const dataPath = new DataPath({
      transport: setup.transport,
      crypto: provider,
      allowedIps: setup.tables.allowedIps,
      policy: setup.tables.policy,
      dropCounters: setup.dropCounters,
      activity: setup.activity,
      tun: io.tun,
      udp: io.udp,
      handshakes: new DatagramRing(setup.transport, HANDSHAKE_RING, setup.handshakes),
      relay: new DatagramRing(setup.transport, RELAY_RING, setup.relay),
      routeMisses: new RouteMissRing(setup.transport, setup.routeMisses),
      mac1Key: setup.mac1Key,
    });
    report({ ready: true });
    run(dataPath, io.readiness, new Int32Array(setup.control), setup.port);
    dataPath.destroy();
  } catch (error) {
    report({ failed: error instanceof Error ? (error.stack ?? error.message) : String(error) });
  } finally {
    // The TUN fd and the sockets stay open: the control thread owns them (a restarted worker uses them).
    setup.port.close();
  }
}

function run(
  dataPath: DataPath,
  readiness: Readiness,
  control: Int32Array,
  port: MessagePort,
): void {
  let epoch = 0;
  let lastSweep = performance.now();
  while (Atomics.load(control, CONTROL_STOP) === 0) {
    const seenEpoch = Atomics.load(control, CONTROL_CONFIG_EPOCH);
    if (seenEpoch !== epoch) {
      epoch = seenEpoch;
      for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
        dataPath.setTables(m.message as PeerTables);
      }
    }
    readiness.arm();
    const moved = dataPath.flushHeld() + dataPath.outbound() + dataPath.inbound();
    if (moved === 0) readiness.wait();
    const now = performance.now();
    if (now - lastSweep >= SWEEP_INTERVAL_MS) {
      lastSweep = now;
      dataPath.sweep();
    }
  }
}

function openIo(io: WorkerIo): { tun: TunQueueIo; udp: DatagramSocket; readiness: Readiness } {
  if (io.kind === 'linux') {
    const tun = new TunQueue(io.tunFd, io.mtu, io.offloads);
    const udp = new DualStackSocket(
      LinuxUdpSocket.adopt(io.udp),
      io.udp6 === undefined ? undefined : LinuxUdpSocket.adopt(io.udp6),
    );
    const poller = new FdPoller([io.tunFd, ...udp.fds], Waker.fromFd(udp.wakeFd));
    return {
      tun,
      udp,
      readiness: { arm: () => {}, wait: () => void poller.wait(SWEEP_INTERVAL_MS) },
    };
  }
  const tun = new MemoryTunQueues(io.tun).queue(io.queue);
  const udp = MemoryUdpNetwork.attach(io.network).socket(io.socket);
  let seen = 0;
  return {
    tun,
    udp,
    readiness: {
      arm: () => {
        seen = udp.doorbell.current();
      },
      // The fake TUN rings nothing: look at it again after a millisecond.
      wait: () => udp.doorbell.wait(seen, 1),
    },
  };
}
