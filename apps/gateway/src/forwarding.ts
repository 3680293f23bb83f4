/**
 * Kernel forwarding for the gateway: net.ipv4.ip_forward and
 * net.ipv6.conf.all.forwarding set to 1 while it runs, and put back as they
 * were when it stops. What they were is also written to a file in the state
 * directory before anything changes, so a run that follows a crash (the
 * values still 1) puts back the values from before the crashed run, not 1.
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const FORWARDING_SYSCTLS = {
  ipv4: 'net/ipv4/ip_forward',
  ipv6: 'net/ipv6/conf/all/forwarding',
} as const;

/** The file in the state directory that holds the values from before. */
export const FORWARDING_STATE_FILE = 'forwarding-before.json';

type Family = keyof typeof FORWARDING_SYSCTLS;
type Previous = Partial<Record<Family, string>>;

export interface ForwardingOptions {
  stateDir: string;
  /** /proc/sys unless told (tests). */
  procSys?: string;
}

export class KernelForwarding {
  readonly #procSys: string;
  readonly #stateFile: string;
  #previous: Previous | undefined;

  constructor(options: ForwardingOptions) {
    this.#procSys = options.procSys ?? '/proc/sys';
    this.#stateFile = join(options.stateDir, FORWARDING_STATE_FILE);
  }

  /** Whether the host has IPv6 (its forwarding sysctl exists). */
  get ipv6(): boolean {
    return existsSync(this.#path('ipv6'));
  }

  /** Turns forwarding on for both families (IPv6 when the host has it); returns what was there before. */
  enable(): Previous {
    const previous = this.#recorded() ?? this.#current();
    if (this.#recorded() === undefined) {
      const temporary = `${this.#stateFile}.tmp`;
      writeFileSync(temporary, `${JSON.stringify(previous)}\n`, { mode: 0o600 });
      renameSync(temporary, this.#stateFile);
    }
    this.#previous = previous;
    for (const family of Object.keys(previous) as Family[]) this.#write(family, '1');
    return previous;
  }

  /** Puts back what enable() found, then forgets it; nothing happens before enable(). */
  restore(): void {
    const previous = this.#previous ?? this.#recorded();
    if (previous === undefined) return;
    for (const [family, value] of Object.entries(previous) as [Family, string][]) {
      this.#write(family, value);
    }
    this.#previous = undefined;
    rmSync(this.#stateFile, { force: true });
  }

  #current(): Previous {
    const previous: Previous = {};
    for (const family of Object.keys(FORWARDING_SYSCTLS) as Family[]) {
      const path = this.#path(family);
      if (family === 'ipv6' && !existsSync(path)) continue;
      previous[family] = readFileSync(path, 'utf8').trim();
    }
    return previous;
  }

  /** What an earlier run recorded, if it did not get to restore it; a damaged record is ignored. */
  #recorded(): Previous | undefined {
    let text: string;
    try {
      text = readFileSync(this.#stateFile, 'utf8');
    } catch {
      return undefined;
    }
    try {
      const parsed = JSON.parse(text) as Record<string, unknown>;
      const previous: Previous = {};
      for (const family of Object.keys(FORWARDING_SYSCTLS) as Family[]) {
        const value = parsed[family];
        if (value === undefined) continue;
        if (value !== '0' && value !== '1') return undefined;
        previous[family] = value;
      }
      return previous.ipv4 === undefined ? undefined : previous;
    } catch {
      return undefined;
    }
  }

  #write(family: Family, value: string): void {
    writeFileSync(this.#path(family), `${value}\n`);
  }

  #path(family: Family): string {
    return join(this.#procSys, FORWARDING_SYSCTLS[family]);
  }
}
