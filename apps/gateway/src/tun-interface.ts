/**
 * The gateway's TUN interface as the kernel sees it: MTU and link state, its
 * tunnel addresses (the init's ipv4/32 and ipv6/128, nothing else) and the
 * routes of the account's tunnel ranges into it (so replies to clients go
 * back through the tunnel), tagged with their own `proto` so that only they
 * are ever changed. The engine opens the device; this only configures it
 * through iproute2, and deletes a leftover of the same name at start.
 *
 * planAddresses and planRoutes are pure over parsed `ip -json` output.
 */
import { readFileSync } from 'node:fs';

import { formatAddress, normalizePrefix, parseAddress } from '@gatehouse/addresses';

import type { SystemCommand } from './system-commands.ts';

/** The `proto` tag on the gateway's routes ("G"); the same number the client's routes carry. */
export const ROUTE_PROTOCOL = 71;

/** What a Linux interface name may be (nft and ip get it quoted or as one argument). */
const INTERFACE_NAME = /^[A-Za-z0-9_=+.-]{1,15}$/;

/** Why `name` cannot be an interface name, or undefined. */
export function interfaceNameProblem(name: string): string | undefined {
  if (INTERFACE_NAME.test(name) && name !== '.' && name !== '..') return undefined;
  return `${JSON.stringify(name)} is not an interface name: 1 to 15 of A-Z a-z 0-9 _ = + . -`;
}

/** Whether a new interface gets IPv6 here (the host has it and does not turn it off for new links). */
export function newInterfacesHaveIpv6(procSys = '/proc/sys'): boolean {
  try {
    return readFileSync(`${procSys}/net/ipv6/conf/default/disable_ipv6`, 'utf8').trim() !== '1';
  } catch {
    return false;
  }
}

export interface TunnelAddresses {
  ipv4: string;
  ipv6: string;
}

/** One `addr_info` entry of `ip -json address show`. */
export interface AddressJson {
  family?: string;
  local?: string;
  prefixlen?: number;
  scope?: string;
}

/** One entry of `ip -json route show`. */
export interface RouteJson {
  dst?: string;
}

/** `ip` argument lists that make the interface's global addresses exactly `wanted` (host prefixes). */
export function planAddresses(
  interfaceName: string,
  current: readonly AddressJson[],
  wanted: readonly string[],
): string[][] {
  const want = new Set(wanted.map(hostPrefix));
  const have = new Set<string>();
  const commands: string[][] = [];
  for (const entry of current) {
    if (entry.scope !== undefined && entry.scope !== 'global') continue;
    if (entry.local === undefined || entry.prefixlen === undefined) continue;
    const text = `${canonical(entry.local)}/${entry.prefixlen}`;
    have.add(text);
    if (!want.has(text)) commands.push(['address', 'del', text, 'dev', interfaceName]);
  }
  for (const text of want) {
    if (have.has(text)) continue;
    const v6 = text.includes(':');
    commands.push(['address', 'add', text, 'dev', interfaceName, ...(v6 ? ['nodad'] : [])]);
  }
  return commands;
}

/** `ip` argument lists that make the interface's tagged routes exactly `wanted`. */
export function planRoutes(
  interfaceName: string,
  current: readonly RouteJson[],
  wanted: readonly string[],
): string[][] {
  const want = new Set(wanted.map((prefix) => normalizePrefix(prefix)));
  const have = new Set<string>();
  const commands: string[][] = [];
  const tag = ['proto', String(ROUTE_PROTOCOL)];
  for (const route of current) {
    if (route.dst === undefined) continue;
    const text = normalizePrefix(route.dst === 'default' ? '0.0.0.0/0' : route.dst);
    have.add(text);
    if (!want.has(text)) commands.push(['route', 'del', text, 'dev', interfaceName, ...tag]);
  }
  for (const text of want) {
    if (!have.has(text)) commands.push(['route', 'replace', text, 'dev', interfaceName, ...tag]);
  }
  return commands;
}

export class TunInterface {
  readonly interfaceName: string;
  readonly #ip: SystemCommand;
  readonly #ipv6: boolean;

  /** `ipv6: false` when the host has IPv6 off: only IPv4 addresses and routes are set. */
  constructor(options: { interfaceName: string; ip: SystemCommand; ipv6: boolean }) {
    const problem = interfaceNameProblem(options.interfaceName);
    if (problem !== undefined) throw new RangeError(problem);
    this.interfaceName = options.interfaceName;
    this.#ip = options.ip;
    this.#ipv6 = options.ipv6;
  }

  /** Its kind (`tun`, `wireguard`, '' for none), or undefined when there is no such interface. */
  async kind(): Promise<string | undefined> {
    let output: string;
    try {
      output = await this.#ip(['-json', '-details', 'link', 'show', 'dev', this.interfaceName]);
    } catch (error) {
      if (/does not exist|Cannot find device/i.test((error as Error).message)) return undefined;
      throw error;
    }
    const [link] = JSON.parse(output) as { linkinfo?: { info_kind?: string } }[];
    if (link === undefined) return undefined;
    return link.linkinfo?.info_kind ?? '';
  }

  /**
   * Deletes a TUN interface of this name left by an earlier run; true when
   * there was one. Throws when the name belongs to an interface of another kind.
   */
  async removeLeftover(): Promise<boolean> {
    const kind = await this.kind();
    if (kind === undefined) return false;
    if (kind !== 'tun') {
      throw new Error(
        `interface ${this.interfaceName} exists and is not a TUN device (${kind || 'no kind'}): ` +
          'pick another name with --interface',
      );
    }
    await this.remove();
    return true;
  }

  /**
   * MTU and link up, with no IPv6 link-local address and multicast off: the
   * kernel's router solicitations and MLD reports would only be dropped by
   * the engine (no client has those addresses) and counted as no-route.
   */
  async bringUp(mtu: number): Promise<void> {
    if (this.#ipv6)
      await this.#ip(['link', 'set', 'dev', this.interfaceName, 'addrgenmode', 'none']);
    await this.#ip([
      'link',
      'set',
      'dev',
      this.interfaceName,
      'mtu',
      String(mtu),
      'multicast',
      'off',
      'up',
    ]);
  }

  /** Makes the interface's addresses exactly ipv4/32 and ipv6/128. */
  async setAddresses(addresses: TunnelAddresses): Promise<void> {
    for (const family of this.#families()) {
      const wanted = family === 4 ? [addresses.ipv4] : [addresses.ipv6];
      const output = await this.#ip([
        `-${family}`,
        '-json',
        'address',
        'show',
        'dev',
        this.interfaceName,
      ]);
      const [link] = parseJson<{ addr_info?: AddressJson[] }>(output);
      await this.#run(family, planAddresses(this.interfaceName, link?.addr_info ?? [], wanted));
    }
  }

  /** Makes the routes into the interface exactly the tunnel ranges (none when undefined). */
  async setRoutes(ranges: TunnelAddresses | undefined): Promise<void> {
    for (const family of this.#families()) {
      const wanted = ranges === undefined ? [] : [family === 4 ? ranges.ipv4 : ranges.ipv6];
      const output = await this.#ip([
        `-${family}`,
        '-json',
        'route',
        'show',
        'dev',
        this.interfaceName,
        'proto',
        String(ROUTE_PROTOCOL),
      ]);
      await this.#run(family, planRoutes(this.interfaceName, parseJson<RouteJson>(output), wanted));
    }
  }

  /** Deletes the interface; nothing happens when it is already gone. */
  async remove(): Promise<void> {
    try {
      await this.#ip(['link', 'delete', 'dev', this.interfaceName]);
    } catch (error) {
      if (/does not exist|Cannot find device/i.test((error as Error).message)) return;
      throw error;
    }
  }

  #families(): (4 | 6)[] {
    return this.#ipv6 ? [4, 6] : [4];
  }

  async #run(family: 4 | 6, commands: string[][]): Promise<void> {
    for (const command of commands) await this.#ip([`-${family}`, ...command]);
  }
}

function parseJson<T>(output: string): T[] {
  return output.trim() === '' ? [] : (JSON.parse(output) as T[]);
}

function canonical(text: string): string {
  const { family, address } = parseAddress(text);
  return formatAddress(family, address);
}

/** `100.64.0.1` → `100.64.0.1/32`, `fd00::1` → `fd00::1/128` (an address with a prefix is refused). */
function hostPrefix(text: string): string {
  if (text.includes('/')) throw new RangeError(`a tunnel address has no prefix: ${text}`);
  const { family } = parseAddress(text);
  return `${canonical(text)}/${family === 4 ? 32 : 128}`;
}
