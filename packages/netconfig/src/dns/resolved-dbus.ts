/**
 * org.freedesktop.resolve1 over D-Bus with dbus-next. Every operation opens
 * its own connection and closes it: nothing holds the event loop once DNS is
 * given back, and a restarted dbus-daemon or resolved needs no reconnection
 * logic. Calls are plain method calls with explicit signatures (no
 * introspection round trip).
 */
import { formatAddress, isAddress, parseAddress } from '@gatehouse/addresses';
import { DBusError, Message, sessionBus } from 'dbus-next';

import type {
  ResolvedDomain,
  ResolvedLinkSettings,
  ResolvedManager,
  ResolvedServer,
} from './resolved.ts';

const RESOLVE1 = 'org.freedesktop.resolve1';
const RESOLVE1_PATH = '/org/freedesktop/resolve1';
const MANAGER = 'org.freedesktop.resolve1.Manager';
const LINK = 'org.freedesktop.resolve1.Link';
const PROPERTIES = 'org.freedesktop.DBus.Properties';
const AF_INET = 2;
const AF_INET6 = 10;
const DEFAULT_SYSTEM_BUS_ADDRESS = 'unix:path=/run/dbus/system_bus_socket';

export interface ResolvedBusOptions {
  /** A D-Bus address; `DBUS_SYSTEM_BUS_ADDRESS`, then the standard system bus socket, by default. */
  busAddress?: string;
  timeoutMs?: number;
}

function systemBusAddress(options: ResolvedBusOptions = {}): string {
  return options.busAddress ?? process.env['DBUS_SYSTEM_BUS_ADDRESS'] ?? DEFAULT_SYSTEM_BUS_ADDRESS;
}

type Call = (
  destination: string,
  path: string,
  iface: string,
  member: string,
  signature?: string,
  body?: unknown[],
) => Promise<unknown[]>;

export class DbusResolvedManager implements ResolvedManager {
  readonly #options: ResolvedBusOptions;

  constructor(options: ResolvedBusOptions = {}) {
    this.#options = options;
  }

  setLinkDns(ifindex: number, servers: readonly string[]): Promise<void> {
    const entries = servers.map((server) => {
      const bytes = addressBytes(server);
      return [bytes.length === 4 ? AF_INET : AF_INET6, bytes];
    });
    return this.#manager(`SetLinkDNS on link ${ifindex}`, 'SetLinkDNS', 'ia(iay)', [
      ifindex,
      entries,
    ]);
  }

  setLinkDomains(ifindex: number, domains: readonly ResolvedDomain[]): Promise<void> {
    const entries = domains.map(({ domain, routingOnly }) => [domain, routingOnly]);
    return this.#manager(`SetLinkDomains on link ${ifindex}`, 'SetLinkDomains', 'ia(sb)', [
      ifindex,
      entries,
    ]);
  }

  setLinkDefaultRoute(ifindex: number, defaultRoute: boolean): Promise<void> {
    return this.#manager(`SetLinkDefaultRoute on link ${ifindex}`, 'SetLinkDefaultRoute', 'ib', [
      ifindex,
      defaultRoute,
    ]);
  }

  flushCaches(): Promise<void> {
    return this.#manager('FlushCaches', 'FlushCaches');
  }

  revertLink(ifindex: number): Promise<void> {
    return this.#manager(`RevertLink on link ${ifindex}`, 'RevertLink', 'i', [ifindex]);
  }

  linkSettings(ifindex: number): Promise<ResolvedLinkSettings> {
    return withBus(this.#options, `reading link ${ifindex}`, async (call) => {
      const [linkPath] = await call(RESOLVE1, RESOLVE1_PATH, MANAGER, 'GetLink', 'i', [ifindex]);
      const [properties] = (await call(RESOLVE1, linkPath as string, PROPERTIES, 'GetAll', 's', [
        LINK,
      ])) as [Record<string, { value: unknown }>];
      const value = <T>(name: string): T => properties[name]?.value as T;
      return {
        servers: value<Array<[number, Buffer]>>('DNS').map(([, bytes]) => addressFromBytes(bytes)),
        domains: value<Array<[string, boolean]>>('Domains').map(([domain, routingOnly]) => ({
          domain,
          routingOnly,
        })),
        defaultRoute: value<boolean>('DefaultRoute'),
      };
    });
  }

  dnsServers(): Promise<ResolvedServer[]> {
    return withBus(this.#options, 'reading the DNS servers', async (call) => {
      const [dns] = (await call(RESOLVE1, RESOLVE1_PATH, PROPERTIES, 'Get', 'ss', [
        MANAGER,
        'DNS',
      ])) as [{ value: Array<[number, number, Buffer]> }];
      return dns.value.map(([ifindex, , bytes]) => ({ ifindex, address: addressFromBytes(bytes) }));
    });
  }

  async #manager(
    what: string,
    member: string,
    signature?: string,
    body?: unknown[],
  ): Promise<void> {
    await withBus(this.#options, what, (call) =>
      call(RESOLVE1, RESOLVE1_PATH, MANAGER, member, signature, body),
    );
  }
}

/** Whether `name` has an owner on the bus (e.g. org.freedesktop.resolve1); false when the bus is unreachable. */
export async function busNameHasOwner(
  name: string,
  options: ResolvedBusOptions = {},
): Promise<boolean> {
  try {
    return await withBus({ timeoutMs: 2000, ...options }, `NameHasOwner ${name}`, async (call) => {
      const [owned] = await call(
        'org.freedesktop.DBus',
        '/org/freedesktop/DBus',
        'org.freedesktop.DBus',
        'NameHasOwner',
        's',
        [name],
      );
      return owned === true;
    });
  } catch {
    return false;
  }
}

async function withBus<T>(
  options: ResolvedBusOptions,
  what: string,
  use: (call: Call) => Promise<T>,
): Promise<T> {
  const address = systemBusAddress(options);
  const timeoutMs = options.timeoutMs ?? 5000;
  // sessionBus() is dbus-next's constructor for any address; systemBus() takes none.
  const bus = sessionBus({ busAddress: address });
  let timer: NodeJS.Timeout | undefined;
  const failure = new Promise<never>((_, reject) => {
    bus.on('error', reject);
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  const call: Call = async (destination, path, iface, member, signature, body) => {
    const reply = await bus.call(
      new Message({ destination, path, interface: iface, member, signature, body }),
    );
    return reply?.body ?? [];
  };
  try {
    return await Promise.race([use(call), failure]);
  } catch (error) {
    throw resolvedError(error, what, address);
  } finally {
    clearTimeout(timer);
    bus.disconnect();
  }
}

/** A D-Bus failure as a message that says what to do about it. */
export function resolvedError(error: unknown, what: string, busAddress: string): Error {
  if (!(error instanceof DBusError)) {
    return new Error(
      `systemd-resolved ${what}: cannot talk to the system bus at ${busAddress}: ${(error as Error)?.message ?? String(error)}`,
      { cause: error },
    );
  }
  const detail = `${error.type}: ${error.text}`;
  switch (error.type) {
    case 'org.freedesktop.DBus.Error.ServiceUnknown':
    case 'org.freedesktop.DBus.Error.NameHasNoOwner':
      return new Error(
        `systemd-resolved is not running: nothing owns ${RESOLVE1} on the system bus at ${busAddress} (${detail})`,
        { cause: error },
      );
    case 'org.freedesktop.DBus.Error.AccessDenied':
    case 'org.freedesktop.DBus.Error.InteractiveAuthorizationRequired':
      return new Error(
        `systemd-resolved ${what}: access denied; changing link DNS needs root or CAP_NET_ADMIN (${detail})`,
        { cause: error },
      );
    case 'org.freedesktop.resolve1.NoSuchLink':
      return new Error(`systemd-resolved ${what}: resolved does not know this link (${detail})`, {
        cause: error,
      });
    case 'org.freedesktop.resolve1.LinkBusy':
      return new Error(
        `systemd-resolved ${what}: the link is managed by systemd-networkd, which owns its DNS (${detail})`,
        { cause: error },
      );
    default:
      return new Error(`systemd-resolved ${what} failed (${detail})`, { cause: error });
  }
}

function addressBytes(address: string): number[] {
  if (!isAddress(address)) throw new Error(`not a plain IPv4 or IPv6 address: ${address}`);
  return [...parseAddress(address).address];
}

function addressFromBytes(bytes: Uint8Array): string {
  return formatAddress(bytes.length === 4 ? 4 : 6, bytes);
}
