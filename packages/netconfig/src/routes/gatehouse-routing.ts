/**
 * Applies routing-plan.ts through iproute2: `ip -json` to read, one
 * `ip -batch -` per family to write (hundreds of routes in one process and
 * one netlink socket; the first failing line stops the batch and is named in
 * the error).
 */
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';

import type {
  AddressJson,
  Family,
  RouteJson,
  RoutingIdentity,
  RoutingOptions,
  RuleJson,
} from './routing-plan.ts';
import {
  DEFAULT_FWMARK,
  DEFAULT_ROUTE_PROTOCOL,
  DEFAULT_RULE_PRIORITY,
  DEFAULT_TABLE,
  planAddresses,
  planFlush,
  planRouting,
} from './routing-plan.ts';

/** Runs `ip ARGS` (stdin optional) and returns stdout; rejects with ip's error text. */
export type IpCommand = (args: readonly string[], input?: string) => Promise<string>;

export interface GatehouseRoutingOptions {
  interfaceName: string;
  mark?: number;
  table?: number;
  priority?: number;
  protocol?: number;
  /** iproute2 by default; tests pass one that adds `-n NAMESPACE`. */
  ip?: IpCommand;
}

export interface InterfaceSettings {
  /**
   * Addresses with their prefixes as written (`10.8.0.2/24` also gives the
   * kernel's connected route for 10.8.0.0/24, as wg-quick does; a bare
   * address means /32 or /128), e.g. the tunnel addresses.
   */
  addresses: readonly string[];
  /** Addresses to listen on, added so that source selection avoids them, e.g. the DNS sentinels (see planAddresses). */
  listenOnlyAddresses?: readonly string[];
  mtu: number;
}

const FAMILIES: readonly Family[] = [4, 6];

export class GatehouseRouting {
  readonly identity: RoutingIdentity;
  readonly #ip: IpCommand;

  constructor(options: GatehouseRoutingOptions) {
    this.identity = {
      interfaceName: options.interfaceName,
      mark: options.mark ?? DEFAULT_FWMARK,
      table: options.table ?? DEFAULT_TABLE,
      priority: options.priority ?? DEFAULT_RULE_PRIORITY,
      protocol: options.protocol ?? DEFAULT_ROUTE_PROTOCOL,
    };
    this.#ip = options.ip ?? runIp;
  }

  /** Removes exactly Gatehouse's rules and routes, in every table; at start-up and at stop. */
  async flush(): Promise<void> {
    for (const family of FAMILIES) {
      const rules = await this.#json<RuleJson>(family, ['rule', 'show']);
      const routes = await this.#json<RouteJson>(family, [
        'route',
        'show',
        'table',
        'all',
        'proto',
        String(this.identity.protocol),
      ]);
      await this.#batch(family, planFlush(this.identity, family, rules, routes));
    }
  }

  async configureInterface(settings: InterfaceSettings): Promise<void> {
    const name = this.identity.interfaceName;
    await this.#ip(['link', 'set', 'dev', name, 'mtu', String(settings.mtu), 'up']);
    for (const family of FAMILIES) {
      const [link] = await this.#json<{ addr_info?: AddressJson[] }>(family, [
        'address',
        'show',
        'dev',
        name,
      ]);
      await this.#batch(
        family,
        planAddresses(
          this.identity,
          family,
          link?.addr_info ?? [],
          settings.addresses,
          settings.listenOnlyAddresses,
        ),
      );
    }
  }

  /**
   * Makes Gatehouse's table hold exactly `prefixes`; a /0 of a family turns on full-tunnel mode
   * for it, with the LAN outside the tunnel unless `options.lanBypass` is false.
   */
  async setRoutes(prefixes: readonly string[], options: RoutingOptions = {}): Promise<void> {
    for (const family of FAMILIES) {
      const rules = await this.#json<RuleJson>(family, ['rule', 'show']);
      const routes = await this.#json<RouteJson>(family, [
        'route',
        'show',
        'table',
        String(this.identity.table),
        'proto',
        String(this.identity.protocol),
      ]).catch((error: unknown) => {
        // The kernel creates a table with its first route.
        if (error instanceof Error && /table does not exist/.test(error.message)) return [];
        throw error;
      });
      await this.#batch(
        family,
        planRouting(this.identity, family, { rules, routes }, prefixes, options),
      );
    }
  }

  async #json<T>(family: Family, args: readonly string[]): Promise<T[]> {
    const output = await this.#ip([`-${family}`, '-json', ...args]);
    return output.trim() === '' ? [] : (JSON.parse(output) as T[]);
  }

  async #batch(family: Family, lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return;
    await this.#ip([`-${family}`, '-batch', '-'], `${lines.join('\n')}\n`);
  }
}

/**
 * Where distributions install iproute2's ip. It runs as root, so it is never
 * looked up on PATH, which whoever starts the service chooses.
 */
export const IP_EXECUTABLE_PATHS: readonly string[] = [
  '/usr/sbin/ip',
  '/sbin/ip',
  '/usr/bin/ip',
  '/bin/ip',
];

let ipExecutable: string | undefined;

/** The first of `candidates` that is executable; throws naming them all when none is. */
export function findIpExecutable(candidates: readonly string[] = IP_EXECUTABLE_PATHS): string {
  const found = candidates.find(isExecutable);
  if (found === undefined) {
    throw new Error(
      `iproute2's ip is not installed (looked for ${candidates.join(', ')}): apt-get install iproute2`,
    );
  }
  return found;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function runIp(args: readonly string[], input?: string): Promise<string> {
  let executable: string;
  try {
    ipExecutable ??= findIpExecutable();
    executable = ipExecutable;
  } catch (error) {
    return Promise.reject(error as Error);
  }
  return new Promise((resolve, reject) => {
    const child = execFile(
      executable,
      args,
      { timeout: 30_000, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error)
          reject(new Error(`ip ${args.join(' ')} failed: ${stderr.trim() || error.message}`));
        else resolve(stdout);
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}
