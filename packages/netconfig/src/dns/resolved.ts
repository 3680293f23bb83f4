/**
 * The systemd-resolved mode: Gatehouse's resolvers become the DNS servers of
 * its own link (as wg-quick's DNS= does through resolvconf), with the `~.`
 * routing domain and the default-route flag so that every query goes there,
 * plus the search domains. RevertLink gives everything back; resolved drops
 * a link's settings by itself when the link disappears, so a crash leaves
 * nothing behind once tun-gatehouse is gone.
 *
 * The bus is reached behind the `ResolvedManager` seam (resolved-dbus.ts).
 */
import { readFile } from 'node:fs/promises';

import { formatAddress, isAddress, parseAddress } from '@gatehouse/addresses';

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

/** An entry of the Manager's `DNS` property; ifindex 0 is a global server. */
export interface ResolvedServer {
  ifindex: number;
  address: string;
}

/** org.freedesktop.resolve1.Manager, as much of it as Gatehouse uses. */
export interface ResolvedManager {
  setLinkDns(ifindex: number, servers: readonly string[]): Promise<void>;
  setLinkDomains(ifindex: number, domains: readonly ResolvedDomain[]): Promise<void>;
  setLinkDefaultRoute(ifindex: number, defaultRoute: boolean): Promise<void>;
  flushCaches(): Promise<void>;
  revertLink(ifindex: number): Promise<void>;
  linkSettings(ifindex: number): Promise<ResolvedLinkSettings>;
  dnsServers(): Promise<ResolvedServer[]>;
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

/**
 * The servers resolved sends a name to when no link's domain claims it: the
 * global ones and those of links with the default-route flag, other than
 * Gatehouse's own link. IPv6 link-local servers are left out: without their
 * link, the stub could not reach them.
 */
export function resolvedUpstreams(
  servers: readonly ResolvedServer[],
  defaultRouteLinks: ReadonlySet<number>,
  ownIfindex: number | undefined,
): string[] {
  const upstreams = servers
    .filter(
      ({ ifindex, address }) =>
        (ifindex === 0 || (ifindex !== ownIfindex && defaultRouteLinks.has(ifindex))) &&
        !/^fe[89ab]/i.test(address),
    )
    .map(({ address }) => canonicalAddress(address));
  return [...new Set(upstreams)];
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

  /** The system's own resolvers as resolved uses them (see resolvedUpstreams). */
  async systemResolvers(): Promise<string[]> {
    const ownIfindex = await this.#interfaceIndex(this.#interfaceName).catch(() => undefined);
    const servers = await this.#manager.dnsServers();
    const defaultRouteLinks = new Set<number>();
    for (const ifindex of new Set(servers.map((server) => server.ifindex))) {
      if (ifindex === 0 || ifindex === ownIfindex) continue;
      // A link that went away since the DNS property was read routes nothing.
      const settings = await this.#manager.linkSettings(ifindex).catch(() => undefined);
      if (settings?.defaultRoute === true) defaultRouteLinks.add(ifindex);
    }
    return resolvedUpstreams(servers, defaultRouteLinks, ownIfindex);
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

/** An address in RFC 5952 text, so the desired and the reported servers compare equal. */
export function canonicalAddress(address: string): string {
  if (!isAddress(address)) return address;
  const { family, address: bytes } = parseAddress(address);
  return formatAddress(family, bytes);
}
