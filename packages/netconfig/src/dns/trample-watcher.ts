/**
 * Notices when something else (NetworkManager, a DHCP client, a user)
 * overwrites Gatehouse's DNS settings, and applies them again. A file watch
 * (debounced: writers often touch the file several times) gives quick
 * notice in the resolv.conf mode; a periodic check covers what no watch
 * sees, such as resolved's link settings. Checks never overlap.
 */
import type { FSWatcher } from 'node:fs';
import { watch } from 'node:fs';
import { basename, dirname } from 'node:path';

export interface TrampleWatcherOptions {
  isTrampled: () => Promise<boolean>;
  reapply: () => Promise<void>;
  /** Watched through its directory, since writers replace the file by rename. */
  watchFile?: string;
  debounceMs?: number;
  intervalMs?: number;
  onEvent?: (event: TrampleEvent) => void;
}

export type TrampleEvent = { kind: 'reapplied' } | { kind: 'error'; error: unknown };

export interface TrampleWatcher {
  /** Runs one check now (also what the watch and the interval trigger). */
  check(): Promise<void>;
  stop(): void;
}

export const DEFAULT_TRAMPLE_DEBOUNCE_MS = 250;
export const DEFAULT_TRAMPLE_INTERVAL_MS = 10_000;

export function startTrampleWatcher(options: TrampleWatcherOptions): TrampleWatcher {
  const debounceMs = options.debounceMs ?? DEFAULT_TRAMPLE_DEBOUNCE_MS;
  let debounce: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;

  const runCheck = async (): Promise<void> => {
    try {
      if (await options.isTrampled()) {
        await options.reapply();
        options.onEvent?.({ kind: 'reapplied' });
      }
    } catch (error) {
      options.onEvent?.({ kind: 'error', error });
    }
  };

  const check = (): Promise<void> => {
    if (stopped) return Promise.resolve();
    if (running !== undefined) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await runCheck();
      } while (again && !stopped);
      running = undefined;
    })();
    return running;
  };

  let watcher: FSWatcher | undefined;
  if (options.watchFile !== undefined) {
    const name = basename(options.watchFile);
    watcher = watch(dirname(options.watchFile), { persistent: false }, (_event, changed) => {
      if (changed !== null && changed !== name) return;
      clearTimeout(debounce);
      debounce = setTimeout(() => void check(), debounceMs);
    });
    watcher.on('error', (error) => options.onEvent?.({ kind: 'error', error }));
  }
  const interval = setInterval(
    () => void check(),
    options.intervalMs ?? DEFAULT_TRAMPLE_INTERVAL_MS,
  );
  interval.unref();

  return {
    check,
    stop: () => {
      stopped = true;
      clearTimeout(debounce);
      clearInterval(interval);
      watcher?.close();
    },
  };
}
