import { Worker } from 'node:worker_threads';
import { addressOf, libc } from './libc.ts';
import { EFD_CLOEXEC, EFD_NONBLOCK } from './linux-constants.ts';
import { closeFds, openTunDevice } from './open-device.ts';
import type { TunOffloads } from './open-device.ts';
import { STOP_WORD, createQueueLayout, queueControlBase } from './queue-layout.ts';
import { QueueRings } from './queue-rings.ts';
import type { QueueWorkerData, QueueWorkerMessage } from './queue-worker.ts';
import { RingTunDevice } from './ring-tun-device.ts';
import type { TunDevice } from './tun-device.ts';

export interface TunOptions {
  /** Interface name; must not exist yet. */
  readonly name: string;
  /** Queues, each with its own thread. Default 2; 1 opens a single-queue device. */
  readonly queues?: number;
  /** Default 1280. */
  readonly mtu?: number;
  /** Default 5000 (the kernel's default for TUN is 500). */
  readonly txQueueLength?: number;
  /** Ask for the virtio-net header with checksum/TSO/USO offloads. Default false. */
  readonly offload?: boolean;
  /** Slots per ring and direction, a power of two. Default 256. */
  readonly ringSlots?: number;
  /** Packets per worker read/write step. Default TUN_BATCH_SIZE; for benchmarks. */
  readonly workerBatchSize?: number;
}

export const DEFAULT_QUEUES = 2;
export const DEFAULT_MTU = 1280;
export const DEFAULT_TX_QUEUE_LENGTH = 5000;
export const DEFAULT_RING_SLOTS = 256;
/** How long close() waits for a worker to leave poll() before terminating it. */
const WORKER_STOP_TIMEOUT_MS = 1000;

/** Creates the device, opens its queues and resolves once one worker per queue is in its loop. */
export async function openTun(options: TunOptions): Promise<TunDevice> {
  const queues = options.queues ?? DEFAULT_QUEUES;
  const mtu = options.mtu ?? DEFAULT_MTU;
  const device = openTunDevice({
    name: options.name,
    queues,
    mtu,
    txQueueLength: options.txQueueLength ?? DEFAULT_TX_QUEUE_LENGTH,
    offload: options.offload ?? false,
  });
  const c = libc();
  const wakeFds: number[] = [];
  const workers: Worker[] = [];
  try {
    const layout = createQueueLayout(
      queues,
      options.ringSlots ?? DEFAULT_RING_SLOTS,
      mtu,
      device.offloads.virtioHeader,
    );
    for (let queue = 0; queue < queues; queue++) {
      const wakeFd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (wakeFd < 0) throw new Error(`TUN: eventfd failed: ${c.strerror(c.errno())}`);
      wakeFds.push(wakeFd);
    }
    const started: Promise<void>[] = [];
    for (let queue = 0; queue < queues; queue++) {
      const workerData: QueueWorkerData = {
        layout,
        queue,
        fd: device.fds[queue]!,
        wakeFd: wakeFds[queue]!,
        offloads: device.offloads,
        ...(options.workerBatchSize === undefined ? {} : { batchSize: options.workerBatchSize }),
      };
      const worker = new Worker(new URL('./queue-worker.ts', import.meta.url), { workerData });
      workers.push(worker);
      started.push(
        new Promise((resolve, reject) => {
          worker.once('message', (message: QueueWorkerMessage) => {
            if ('ready' in message) resolve();
            else reject(new Error(`TUN: queue worker ${queue}: ${message.failed}`));
          });
          worker.once('error', reject);
          worker.once('exit', (code) =>
            reject(new Error(`TUN: queue worker ${queue} exited (${code}) before it was ready`)),
          );
        }),
      );
    }
    await Promise.all(started);
    return new LinuxTun(device.name, mtu, device.offloads, layout, device.fds, wakeFds, workers);
  } catch (error) {
    await Promise.all(workers.map((worker) => worker.terminate()));
    closeFds(wakeFds);
    closeFds(device.fds);
    throw error;
  }
}

class LinuxTun extends RingTunDevice {
  readonly name: string;
  readonly mtu: number;
  readonly queueCount: number;
  readonly offloads: TunOffloads;
  /** The first failure a worker reported; the device is closed after one. */
  failure: string | undefined;
  private readonly fds: readonly number[];
  private readonly wakeFds: readonly number[];
  private readonly workers: readonly Worker[];
  private readonly exited: Promise<void>[];
  private readonly wakeValue = new BigUint64Array([1n]);
  private readonly wakeValueAddress: number;
  private closing: Promise<void> | undefined;

  constructor(
    name: string,
    mtu: number,
    offloads: TunOffloads,
    layout: ReturnType<typeof createQueueLayout>,
    fds: readonly number[],
    wakeFds: readonly number[],
    workers: readonly Worker[],
  ) {
    super(new QueueRings(layout, (queue) => this.wake(queue)));
    this.name = name;
    this.mtu = mtu;
    this.queueCount = fds.length;
    this.offloads = offloads;
    this.fds = fds;
    this.wakeFds = wakeFds;
    this.workers = workers;
    this.wakeValueAddress = addressOf(this.wakeValue.buffer);
    this.exited = workers.map(
      (worker) =>
        new Promise<void>((resolve) => {
          worker.once('exit', () => resolve());
          worker.on('message', (message: QueueWorkerMessage) => {
            if ('ready' in message) return;
            this.failure ??= `queue worker: ${message.failed}`;
            void this.close();
          });
        }),
    );
  }

  close(): Promise<void> {
    this.closing ??= this.stop();
    return this.closing;
  }

  private async stop(): Promise<void> {
    this.rings.markClosed();
    const control = new Int32Array(this.rings.layout.control);
    for (let queue = 0; queue < this.queueCount; queue++) {
      Atomics.store(control, queueControlBase(queue) + STOP_WORD, 1);
      this.wake(queue);
    }
    await Promise.all(
      this.workers.map((worker, queue) => {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<void>((resolve) => {
          timer = setTimeout(
            () => void worker.terminate().then(() => resolve()),
            WORKER_STOP_TIMEOUT_MS,
          );
        });
        return Promise.race([this.exited[queue]!, timeout]).finally(() => clearTimeout(timer));
      }),
    );
    closeFds(this.wakeFds);
    closeFds(this.fds);
  }

  private wake(queue: number): void {
    libc().write(this.wakeFds[queue]!, this.wakeValueAddress, 8);
  }
}
