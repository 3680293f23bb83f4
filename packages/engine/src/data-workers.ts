/**
 * Data workers, one per TUN queue: starting one over its queue's IO and
 * rings, watching it come up, and stopping it (terminated when it does not
 * stop in time). The engine supervises them and restarts one that died.
 */
import { MessageChannel } from 'node:worker_threads';
import type { MessagePort, Worker } from 'node:worker_threads';

import type { Logger } from '@gatehouse/logging';
import type { DatagramSocket } from '@gatehouse/udp';

import type { DatagramRing } from './datagram-ring.ts';
import type { RouteMissRing } from './route-miss.ts';
import { startStrippedWorker } from './stripped-worker.ts';
import type { PeerTables, WorkerIo, WorkerReport, WorkerSetup } from './worker-protocol.ts';

const WORKER_YOUNG_GENERATION_MB = 4;
const WORKER_START_TIMEOUT_MS = 10_000;
const WORKER_STOP_TIMEOUT_MS = 1_000;

/** What every data worker starts with but its own IO, rings and port and the current peer tables. */
export type WorkerTemplate = Omit<
  WorkerSetup,
  'io' | 'tables' | 'handshakes' | 'relay' | 'routeMisses' | 'port'
>;

/**
 * One TUN queue's data worker. The control thread owns the queue's fd and
 * sockets (workers never close them), so a worker that died can be started
 * again over the same ones.
 */
export interface DataWorker {
  queue: number;
  io: WorkerIo;
  socket: DatagramSocket;
  ring: DatagramRing;
  relay: DatagramRing;
  routeMisses: RouteMissRing;
  /** The current start's worker. */
  run: WorkerRun;
}

/** One start of a data worker. */
export interface WorkerRun {
  worker: Worker;
  port: MessagePort;
  /** Recorded from the spawn on, so a death before anyone supervises the worker is not lost; undefined while it runs. */
  exitCode: number | undefined;
  /** The last failure the worker reported, for the log and the engine's error. */
  lastError: string | undefined;
}

/** Starts queue `queue`'s data worker over `io` (the same fds and sockets on every start). */
export function spawnWorker(
  template: WorkerTemplate,
  queue: number,
  io: WorkerIo,
  rings: { ring: DatagramRing; relay: DatagramRing; routeMisses: RouteMissRing },
  tables: PeerTables,
  observe: ((queue: number, worker: Worker) => void) | undefined,
): WorkerRun {
  const channel = new MessageChannel();
  const setup: WorkerSetup = {
    ...template,
    io,
    tables,
    handshakes: rings.ring.buffer,
    relay: rings.relay.buffer,
    routeMisses: rings.routeMisses.buffer,
    port: channel.port2,
  };
  const worker = startStrippedWorker(new URL('./engine-worker.ts', import.meta.url), {
    workerData: setup,
    transferList: [channel.port2],
    // The data path allocates nothing per packet: a small nursery keeps RSS down.
    resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB },
  });
  const run: WorkerRun = { worker, port: channel.port1, exitCode: undefined, lastError: undefined };
  worker.once('exit', (code) => {
    run.exitCode = code;
  });
  observe?.(queue, worker);
  return run;
}

/**
 * Resolves when the worker reports ready; rejects when it fails or exits
 * first. What it reports failing (then or later) is kept as its last error.
 */
export function watchWorker(queue: number, run: WorkerRun, logger: Logger): Promise<void> {
  const { worker } = run;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`data worker ${queue} did not start`)),
      WORKER_START_TIMEOUT_MS,
    );
    worker.on('message', (message: WorkerReport) => {
      if ('ready' in message) {
        clearTimeout(timer);
        resolve();
      } else {
        run.lastError = message.failed;
        logger.error(`data worker ${queue} failed: ${message.failed}`);
        clearTimeout(timer);
        reject(new Error(`data worker ${queue} failed: ${message.failed}`));
      }
    });
    worker.on('error', (error) => {
      run.lastError = error.message;
      logger.error(`data worker ${queue}: ${error.message}`);
      clearTimeout(timer);
      reject(error);
    });
    worker.on('exit', () => {
      clearTimeout(timer);
      reject(new Error(`data worker ${queue} exited`));
    });
  });
}

export async function stopWorker({ run }: DataWorker): Promise<void> {
  if (run.exitCode !== undefined) return;
  const exited = new Promise<void>((resolve) => run.worker.once('exit', () => resolve()));
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), WORKER_STOP_TIMEOUT_MS);
  });
  if ((await Promise.race([exited, late])) === 'late') await run.worker.terminate();
  clearTimeout(timer);
}
