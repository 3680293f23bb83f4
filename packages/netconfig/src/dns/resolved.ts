/**
 * The systemd-resolved mode: Gatehouse's resolvers become the DNS servers of
 * its own link (as wg-quick's DNS= does through resolvconf), with the `~.`
 * routing domain and the default-route flag so that every query goes there,
 * plus the search domains. RevertLink gives everything back; resolved drops
 * a link's settings by itself when the link disappears, so a crash leaves
 * nothing behind once tun-gatehouse is gone.
 *
 * The bus is driven through `busctl` (part of systemd, so present wherever
 * systemd-resolved is) behind the `ResolvedManager` seam.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { isIPv4, isIPv6 } from 'node:net';

import type { DnsSettings } from './dns-settings.ts';

export interface ResolvedDomain {
  domain: string;
  /** `~domain`: used to route queries, not to complete names. `.` with routingOnly is `~.`. */
  routingOnly: boolean;
}

export interface ResolvedLinkSettings {
  servers: string[];
  domains: ResolvedDomain[];
  defaultRoute: boolean;
}

/** org.freedesktop.resolve1.Manager, as much of it as Gatehouse uses. */
export interface ResolvedManager {
  setLinkDns(ifindex: number, servers: readonly string[]): Promise<void>;
  setLinkDomains(ifindex: number, domains: readonly ResolvedDomain[]): Promise<void>;
  setLinkDefaultRoute(ifindex: number, defaultRoute: boolean): Promise<void>;
  flushCaches(): Promise<void>;
  revertLink(ifindex: number): Promise<void>;
  linkSettings(ifindex: number): Promise<ResolvedLinkSettings>;
}

/**
 * `routeAllQueries` (the default): `~.` and default route, so the stub sees
 * every query; otherwise only names under the search domains go to the link.
 */
export function resolvedLinkSettings(
  settings: DnsSettings,
  routeAllQueries: boolean,
): ResolvedLinkSettings {
  const domains = settings.searchDomains.map((domain) => ({ domain, routingOnly: false }));
  if (routeAllQueries) domains.push({ domain: '.', routingOnly: true });
  return { servers: settings.servers, domains, defaultRoute: routeAllQueries };
}

export function sameLinkSettings(a: ResolvedLinkSettings, b: ResolvedLinkSettings): boolean {
  const servers = (settings: ResolvedLinkSettings) =>
    settings.servers.map(canonicalAddress).sort().join(' ');
  const domains = (settings: ResolvedLinkSettings) =>
    settings.domains
      .map(
        ({ domain, routingOnly }) =>
          `${routingOnly ? '~' : ''}${domain.replace(/(.)\.$/, '$1').toLowerCase()}`,
      )
      .sort()
      .join(' ');
  return (
    servers(a) === servers(b) && domains(a) === domains(b) && a.defaultRoute === b.defaultRoute
  );
}

export interface ResolvedDnsControlOptions {
  interfaceName: string;
  manager: ResolvedManager;
  routeAllQueries?: boolean;
  /** Injected for tests; reads /sys/class/net/<name>/ifindex by default. */
  interfaceIndex?: (interfaceName: string) => Promise<number>;
}

export class ResolvedDnsControl {
  readonly #interfaceName: string;
  readonly #manager: ResolvedManager;
  readonly #routeAllQueries: boolean;
  readonly #interfaceIndex: (interfaceName: string) => Promise<number>;

  constructor(options: ResolvedDnsControlOptions) {
    this.#interfaceName = options.interfaceName;
    this.#manager = options.manager;
    this.#routeAllQueries = options.routeAllQueries ?? true;
    this.#interfaceIndex = options.interfaceIndex ?? interfaceIndexFromSysfs;
  }

  async apply(settings: DnsSettings): Promise<void> {
    const ifindex = await this.#interfaceIndex(this.#interfaceName);
    const wanted = resolvedLinkSettings(settings, this.#routeAllQueries);
    await this.#manager.setLinkDns(ifindex, wanted.servers);
    await this.#manager.setLinkDomains(ifindex, wanted.domains);
    await this.#manager.setLinkDefaultRoute(ifindex, wanted.defaultRoute);
    await this.#manager.flushCaches();
  }

  async isTrampled(settings: DnsSettings): Promise<boolean> {
    const ifindex = await this.#interfaceIndex(this.#interfaceName);
    const current = await this.#manager.linkSettings(ifindex);
    return !sameLinkSettings(current, resolvedLinkSettings(settings, this.#routeAllQueries));
  }

  async restore(): Promise<void> {
    let ifindex: number;
    try {
      ifindex = await this.#interfaceIndex(this.#interfaceName);
    } catch {
      return; // the link is gone, and resolved forgot its settings with it
    }
    await this.#manager.revertLink(ifindex);
    await this.#manager.flushCaches();
  }
}

export async function interfaceIndexFromSysfs(interfaceName: string): Promise<number> {
  const text = await readFile(`/sys/class/net/${interfaceName}/ifindex`, 'utf8');
  return Number(text.trim());
}

const RESOLVE1 = 'org.freedesktop.resolve1';
const RESOLVE1_PATH = '/org/freedesktop/resolve1';
const MANAGER = 'org.freedesktop.resolve1.Manager';
const LINK = 'org.freedesktop.resolve1.Link';
const AF_INET = 2;
const AF_INET6 = 10;

export interface BusctlOptions {
  /** A D-Bus address such as `unix:path=/run/dbus/system_bus_socket`; the system bus by default. */
  busAddress?: string;
  busctlPath?: string;
  timeoutMs?: number;
}

export class BusctlResolvedManager implements ResolvedManager {
  readonly #options: BusctlOptions;

  constructor(options: BusctlOptions = {}) {
    this.#options = options;
  }

  async setLinkDns(ifindex: number, servers: readonly string[]): Promise<void> {
    const entries = servers.flatMap((server) => {
      const bytes = addressBytes(server);
      return [
        String(bytes.length === 4 ? AF_INET : AF_INET6),
        String(bytes.length),
        ...bytes.map(String),
      ];
    });
    await this.#call('SetLinkDNS', 'ia(iay)', [
      String(ifindex),
      String(servers.length),
      ...entries,
    ]);
  }

  async setLinkDomains(ifindex: number, domains: readonly ResolvedDomain[]): Promise<void> {
    const entries = domains.flatMap(({ domain, routingOnly }) => [domain, String(routingOnly)]);
    await this.#call('SetLinkDomains', 'ia(sb)', [
      String(ifindex),
      String(domains.length),
      ...entries,
    ]);
  }

  async setLinkDefaultRoute(ifindex: number, defaultRoute: boolean): Promise<void> {
    await this.#call('SetLinkDefaultRoute', 'ib', [String(ifindex), String(defaultRoute)]);
  }

  async flushCaches(): Promise<void> {
    await this.#call('FlushCaches', '', []);
  }

  async revertLink(ifindex: number): Promise<void> {
    await this.#call('RevertLink', 'i', [String(ifindex)]);
  }

  async linkSettings(ifindex: number): Promise<ResolvedLinkSettings> {
    const linkPath = (
      JSON.parse(await this.#call('GetLink', 'i', [String(ifindex)])) as { data: [string] }
    ).data[0];
    const property = async <T>(name: string): Promise<T> =>
      (
        JSON.parse(await this.#busctl(['get-property', RESOLVE1, linkPath, LINK, name])) as {
          data: T;
        }
      ).data;
    const dns = await property<Array<[number, number[]]>>('DNS');
    const domains = await property<Array<[string, boolean]>>('Domains');
    const defaultRoute = await property<boolean>('DefaultRoute');
    return {
      servers: dns.map(([, bytes]) => addressFromBytes(bytes)),
      domains: domains.map(([domain, routingOnly]) => ({ domain, routingOnly })),
      defaultRoute,
    };
  }

  #call(method: string, signature: string, args: readonly string[]): Promise<string> {
    const typed = signature === '' ? [] : [signature, ...args];
    return this.#busctl(['call', RESOLVE1, RESOLVE1_PATH, MANAGER, method, ...typed]);
  }

  #busctl(args: readonly string[]): Promise<string> {
    const addressArgs =
      this.#options.busAddress === undefined
        ? ['--system']
        : [`--address=${this.#options.busAddress}`];
    const argv = [...addressArgs, '--json=short', '--', ...args];
    return new Promise((resolvePromise, reject) => {
      execFile(
        this.#options.busctlPath ?? 'busctl',
        argv,
        { timeout: this.#options.timeoutMs ?? 5000 },
        (error, stdout, stderr) => {
          if (error)
            reject(
              new Error(
                `busctl ${args.slice(0, 5).join(' ')} failed: ${stderr.trim() || error.message}`,
              ),
            );
          else resolvePromise(stdout.trim());
        },
      );
    });
  }
}

/** Whether `name` has an owner on the bus (e.g. org.freedesktop.resolve1); false when the bus is unreachable. */
export function busNameHasOwner(name: string, options: BusctlOptions = {}): Promise<boolean> {
  const addressArgs =
    options.busAddress === undefined ? ['--system'] : [`--address=${options.busAddress}`];
  const argv = [
    ...addressArgs,
    '--json=short',
    'call',
    'org.freedesktop.DBus',
    '/org/freedesktop/DBus',
    'org.freedesktop.DBus',
    'NameHasOwner',
    's',
    name,
  ];
  return new Promise((resolvePromise) => {
    execFile(
      options.busctlPath ?? 'busctl',
      argv,
      { timeout: options.timeoutMs ?? 2000 },
      (error, stdout) => {
        if (error) return resolvePromise(false);
        try {
          resolvePromise((JSON.parse(stdout) as { data: [boolean] }).data[0] === true);
        } catch {
          resolvePromise(false);
        }
      },
    );
  });
}

function addressBytes(address: string): number[] {
  if (isIPv4(address)) return address.split('.').map(Number);
  if (!isIPv6(address) || address.includes('.'))
    throw new Error(`not a plain IPv4 or IPv6 address: ${address}`);
  const [left = '', right] = address.split('::');
  const leftGroups = left === '' ? [] : left.split(':');
  const rightGroups = right === undefined || right === '' ? [] : right.split(':');
  const zeros = right === undefined ? 0 : 8 - leftGroups.length - rightGroups.length;
  const groups = [...leftGroups, ...Array<string>(zeros).fill('0'), ...rightGroups].map((group) =>
    parseInt(group, 16),
  );
  return groups.flatMap((group) => [group >> 8, group & 0xff]);
}

function addressFromBytes(bytes: readonly number[]): string {
  if (bytes.length === 4) return bytes.join('.');
  const groups: string[] = [];
  for (let index = 0; index < bytes.length; index += 2) {
    groups.push((((bytes[index] ?? 0) << 8) | (bytes[index + 1] ?? 0)).toString(16));
  }
  return canonicalAddress(groups.join(':'));
}

/** The WHATWG URL host serializer prints IPv6 in its compressed canonical form. */
function canonicalAddress(address: string): string {
  return isIPv6(address) ? new URL(`http://[${address}]/`).hostname.slice(1, -1) : address;
}
