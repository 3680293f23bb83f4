/**
 * How often dead data workers are restarted: a worker that dies is started
 * again with the same TUN queue and sockets, at most MAX_WORKER_RESTARTS
 * times within WORKER_RESTART_WINDOW_MS across the engine; the next death in
 * that window fails the engine, since a data plane that keeps dying would
 * otherwise swallow traffic in a loop.
 */

export const MAX_WORKER_RESTARTS = 3;
export const WORKER_RESTART_WINDOW_MS = 60_000;

export interface WorkerDeathVerdict {
  /** The deaths inside the window, the new one included, oldest first: the next call's input. */
  recentDeathsMs: number[];
  restart: boolean;
}

/** What to do about a worker that died at `nowMs`, given the earlier deaths' monotonic times. */
export function judgeWorkerDeath(
  earlierDeathsMs: readonly number[],
  nowMs: number,
): WorkerDeathVerdict {
  const recentDeathsMs = [
    ...earlierDeathsMs.filter((deathMs) => nowMs - deathMs < WORKER_RESTART_WINDOW_MS),
    nowMs,
  ];
  return { recentDeathsMs, restart: recentDeathsMs.length <= MAX_WORKER_RESTARTS };
}
