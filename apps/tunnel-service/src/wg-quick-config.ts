/**
 * Parses WireGuard configuration files in wg-quick's format into a checked
 * configuration, or into the full list of problems with their line numbers.
 * Pure: no file access, no name resolution, nothing applied.
 */

import { formatAddress, isAddress, parseAddress, parsePrefix } from '@gatehouse/addresses';
import type { Address } from '@gatehouse/addresses';
import { DEFAULT_IPV4_PROXY_RANGE, DEFAULT_IPV6_PROXY_RANGE } from '@gatehouse/dns-stub';
import { decodeKey } from '@gatehouse/wireguard';
import {
  prefixText,
  type DnsSettings,
  type InterfaceAddress,
  type IpNetwork,
  type PeerEndpoint,
  type PeerSpec,
  type TunnelSpec,
} from './tunnel-spec.ts';

export interface WgQuickConfig {
  interface: InterfaceSection;
  peers: PeerSpec[];
}

export interface InterfaceSection {
  privateKey: Uint8Array;
  /** Each address with its prefix as written (host bits kept), as wg-quick assigns them. */
  addresses: InterfaceAddress[];
  /** Undefined: let the kernel pick a port. */
  listenPort: number | undefined;
  mtu: number;
  dns: DnsSettings;
  /** Undefined when absent, `off` or 0. */
  fwMark: number | undefined;
}

/** wg-quick's meaning as a tunnel spec: every peer's AllowedIPs are routed; no DNS resources. */
export function tunnelSpecFromWgQuick(config: WgQuickConfig, interfaceName: string): TunnelSpec {
  const { interface: section, peers } = config;
  return {
    interfaceName,
    privateKey: section.privateKey,
    listenPort: section.listenPort,
    fwMark: section.fwMark,
    addresses: section.addresses,
    mtu: section.mtu,
    peers,
    routes: [...new Set(peers.flatMap((peer) => peer.allowedIps.map(prefixText)))],
    dns: section.dns,
    dnsResources: [],
    proxyRanges: { ipv4: DEFAULT_IPV4_PROXY_RANGE, ipv6: DEFAULT_IPV6_PROXY_RANGE },
    lanBypass: true,
  };
}

export interface ConfigProblem {
  /** 1-based line number in the file. */
  line: number;
  message: string;
}

export type ConfigParseResult =
  { ok: true; config: WgQuickConfig } | { ok: false; problems: ConfigProblem[] };

/** wg-quick's default when the file sets none. */
export const DEFAULT_MTU = 1420;

export function parseWgQuickConfig(text: string): ConfigParseResult {
  const parser = new ConfigParser();
  const lines = text.replace(/^\uFEFF/, '').split('\n');
  lines.forEach((rawLine, index) => parser.line(index + 1, rawLine));
  return parser.finish();
}

/** One problem per line, `file:line: message`, capped so a hostile file cannot flood a terminal. */
export function formatConfigProblems(fileName: string, problems: ConfigProblem[]): string {
  const shown = problems
    .slice(0, MAX_PROBLEMS_SHOWN)
    .map((p) => `${fileName}:${p.line}: ${p.message}`);
  const hidden = problems.length - shown.length;
  if (hidden > 0) shown.push(`${fileName}: … and ${hidden} more problem${hidden === 1 ? '' : 's'}`);
  return shown.join('\n');
}

const MAX_PROBLEMS_SHOWN = 50;
const MAX_LINE_LENGTH = 4096;

const INTERFACE_KEYS: Record<string, string> = {
  privatekey: 'PrivateKey',
  address: 'Address',
  listenport: 'ListenPort',
  mtu: 'MTU',
  dns: 'DNS',
  fwmark: 'FwMark',
};

const PEER_KEYS: Record<string, string> = {
  publickey: 'PublicKey',
  presharedkey: 'PresharedKey',
  endpoint: 'Endpoint',
  allowedips: 'AllowedIPs',
  persistentkeepalive: 'PersistentKeepalive',
};

const REFUSED_KEYS: Record<string, string> = {
  preup:
    'gatehouse-tunnel never runs shell commands from a configuration file (they would run as root)',
  postup:
    'gatehouse-tunnel never runs shell commands from a configuration file (they would run as root)',
  predown:
    'gatehouse-tunnel never runs shell commands from a configuration file (they would run as root)',
  postdown:
    'gatehouse-tunnel never runs shell commands from a configuration file (they would run as root)',
  table: 'gatehouse-tunnel manages its own routing table',
  saveconfig: 'gatehouse-tunnel never writes the configuration file back',
};

/**
 * Problems name a key only by its canonical name: the text of a line whose
 * role is unknown (no "=", an unknown key or section, before any section)
 * is never quoted, since it may be a private key written in the wrong place.
 */
const KNOWN_KEY_NAMES = new Map<string, string>(
  Object.entries({
    ...INTERFACE_KEYS,
    ...PEER_KEYS,
    preup: 'PreUp',
    postup: 'PostUp',
    predown: 'PreDown',
    postdown: 'PostDown',
    table: 'Table',
    saveconfig: 'SaveConfig',
  }),
);

type SectionKind = 'interface' | 'peer';

interface Entry {
  key: string;
  value: string;
  line: number;
}

interface Section {
  kind: SectionKind;
  line: number;
  entries: Entry[];
}

class ConfigParser {
  readonly #problems: ConfigProblem[] = [];
  readonly #sections: Section[] = [];
  #current: Section | undefined;
  #sawUnknownSection = false;

  line(number: number, rawLine: string): void {
    if (rawLine.length > MAX_LINE_LENGTH) {
      this.#problem(number, `line is longer than ${MAX_LINE_LENGTH} characters`);
      return;
    }
    // Like wg-quick, everything from the first '#' on is a comment.
    const text = (rawLine.split('#', 1)[0] ?? '').trim();
    if (text === '') return;
    if (hasControlCharacters(text)) {
      this.#problem(number, 'line contains control characters');
      return;
    }
    if (text.startsWith('[')) {
      this.#sectionHeader(number, text);
      return;
    }
    const equals = text.indexOf('=');
    if (equals === -1) {
      this.#problem(number, 'expected "Key = Value" or a section header');
      return;
    }
    const key = text.slice(0, equals).trim();
    const value = text.slice(equals + 1).trim();
    if (this.#current === undefined) {
      if (!this.#sawUnknownSection) {
        const known = KNOWN_KEY_NAMES.get(key.toLowerCase());
        const what = known === undefined ? 'a key' : `"${known}"`;
        this.#problem(number, `${what} appears before any [Interface] or [Peer] section`);
      }
      return;
    }
    this.#current.entries.push({ key, value, line: number });
  }

  finish(): ConfigParseResult {
    const interfaces = this.#sections.filter((s) => s.kind === 'interface');
    const [first, ...extra] = interfaces;
    for (const section of extra) {
      this.#problem(
        section.line,
        `a second [Interface] section (the first is on line ${first?.line})`,
      );
    }
    if (first === undefined) this.#problem(1, 'the file has no [Interface] section');

    const iface = first === undefined ? undefined : this.#interfaceSection(first);
    const peers: PeerSpec[] = [];
    const peerLines = new Map<string, number>();
    for (const section of this.#sections.filter((s) => s.kind === 'peer')) {
      const peer = this.#peerSection(section);
      if (peer === undefined) continue;
      const key = Buffer.from(peer.publicKey).toString('base64');
      const earlier = peerLines.get(key);
      if (earlier !== undefined) {
        this.#problem(
          section.line,
          `this [Peer] has the same PublicKey as the [Peer] on line ${earlier}`,
        );
        continue;
      }
      peerLines.set(key, section.line);
      peers.push(peer);
    }

    if (
      iface !== undefined &&
      iface.mtu < IPV6_MIN_MTU &&
      iface.addresses.some((a) => a.family === 6)
    ) {
      const mtuLine =
        first?.entries.find((e) => e.key.toLowerCase() === 'mtu')?.line ?? first?.line ?? 1;
      this.#problem(
        mtuLine,
        `MTU ${iface.mtu} is below ${IPV6_MIN_MTU}, the minimum for an IPv6 Address`,
      );
    }

    if (this.#problems.length > 0 || iface === undefined) {
      return { ok: false, problems: [...this.#problems].sort((a, b) => a.line - b.line) };
    }
    return { ok: true, config: { interface: iface, peers } };
  }

  #sectionHeader(number: number, text: string): void {
    const match = /^\[\s*([A-Za-z]+)\s*\]$/.exec(text);
    const name = match?.[1]?.toLowerCase();
    if (name === 'interface' || name === 'peer') {
      this.#current = { kind: name, line: number, entries: [] };
      this.#sections.push(this.#current);
      this.#sawUnknownSection = false;
      return;
    }
    this.#problem(number, 'unknown section (expected [Interface] or [Peer])');
    this.#current = undefined;
    this.#sawUnknownSection = true;
  }

  #interfaceSection(section: Section): InterfaceSection | undefined {
    const fields = this.#fields(section, INTERFACE_KEYS);
    const privateKey = this.#single(fields, 'privatekey', (v) => decodeKey(v));
    if (!fields.has('privatekey')) this.#problem(section.line, '[Interface] has no PrivateKey');
    const addresses = this.#list(fields, 'address', parseInterfaceAddress);
    const listenPort = this.#single(fields, 'listenport', (v) =>
      parseInteger(v, 0, 65535, 'ListenPort'),
    );
    const mtu = this.#single(fields, 'mtu', (v) => parseInteger(v, MIN_MTU, MAX_MTU, 'MTU'));
    const fwMark = this.#single(fields, 'fwmark', parseFwMark);
    const dnsEntries = this.#list(fields, 'dns', parseDnsEntry);
    if (privateKey === undefined) return undefined;
    return {
      privateKey,
      addresses,
      listenPort: listenPort === 0 ? undefined : listenPort,
      mtu: mtu ?? DEFAULT_MTU,
      dns: {
        servers: dnsEntries.filter((e) => e.kind === 'server').map((e) => e.value),
        searchDomains: dnsEntries.filter((e) => e.kind === 'search').map((e) => e.value),
      },
      fwMark,
    };
  }

  #peerSection(section: Section): PeerSpec | undefined {
    const fields = this.#fields(section, PEER_KEYS);
    const publicKey = this.#single(fields, 'publickey', (v) => decodeKey(v));
    if (!fields.has('publickey')) this.#problem(section.line, '[Peer] has no PublicKey');
    const presharedKey = this.#single(fields, 'presharedkey', (v) => decodeKey(v));
    const endpoint = this.#single(fields, 'endpoint', parseEndpoint);
    const allowedIps = dedupeNetworks(this.#list(fields, 'allowedips', parseNetwork));
    const keepalive = this.#single(fields, 'persistentkeepalive', (v) =>
      v.toLowerCase() === 'off' ? 0 : parseInteger(v, 0, 65535, 'PersistentKeepalive'),
    );
    if (publicKey === undefined) return undefined;
    return {
      publicKey,
      presharedKey,
      endpoint,
      allowedIps,
      persistentKeepalive: keepalive === 0 ? undefined : keepalive,
    };
  }

  /** Groups a section's entries by lower-cased key, refusing unknown and unsupported keys. */
  #fields(section: Section, known: Record<string, string>): Map<string, Entry[]> {
    const where = section.kind === 'interface' ? '[Interface]' : '[Peer]';
    const fields = new Map<string, Entry[]>();
    for (const entry of section.entries) {
      const lower = entry.key.toLowerCase();
      const refusal = REFUSED_KEYS[lower];
      if (refusal !== undefined) {
        this.#problem(entry.line, `${entry.key} is not supported: ${refusal}`);
      } else if (Object.hasOwn(known, lower)) {
        const list = fields.get(lower) ?? [];
        list.push({ ...entry, key: known[lower] ?? entry.key });
        fields.set(lower, list);
      } else {
        const allowed = Object.values(known).join(', ');
        this.#problem(entry.line, `unknown key in ${where} (allowed: ${allowed})`);
      }
    }
    return fields;
  }

  #single<T>(
    fields: Map<string, Entry[]>,
    key: string,
    parse: (value: string) => T,
  ): T | undefined {
    const entries = fields.get(key);
    if (entries === undefined) return undefined;
    const [first, ...repeats] = entries;
    for (const repeat of repeats) {
      this.#problem(repeat.line, `${repeat.key} is set twice (first on line ${first?.line})`);
    }
    if (first === undefined) return undefined;
    if (first.value === '') {
      this.#problem(first.line, `${first.key} has no value`);
      return undefined;
    }
    return this.#attempt(first, parse);
  }

  /** Comma-separated values; repeated lines add to the list, as in wg-quick. */
  #list<T>(fields: Map<string, Entry[]>, key: string, parse: (value: string) => T): T[] {
    const values: T[] = [];
    for (const entry of fields.get(key) ?? []) {
      for (const item of entry.value.split(',')) {
        const trimmed = item.trim();
        if (trimmed === '') {
          if (entry.value.trim() !== '')
            this.#problem(entry.line, `${entry.key} has an empty item`);
          continue;
        }
        const parsed = this.#attempt(entry, () => parse(trimmed));
        if (parsed !== undefined) values.push(parsed);
      }
    }
    return values;
  }

  #attempt<T>(entry: Entry, parse: (value: string) => T): T | undefined {
    try {
      return parse(entry.value);
    } catch (error) {
      this.#problem(
        entry.line,
        `${entry.key}: ${error instanceof Error ? error.message : String(error)}`,
      );
      return undefined;
    }
  }

  #problem(line: number, message: string): void {
    this.#problems.push({ line, message });
  }
}

const MIN_MTU = 576;
const MAX_MTU = 65535;
const IPV6_MIN_MTU = 1280;

function parseInteger(text: string, min: number, max: number, what: string): number {
  if (!/^[0-9]{1,10}$/.test(text)) throw new Error(`${quoted(text)} is not a whole number`);
  const value = Number(text);
  if (value < min || value > max)
    throw new Error(`${what} must be between ${min} and ${max}, got ${value}`);
  return value;
}

function parseFwMark(text: string): number | undefined {
  if (text.toLowerCase() === 'off') return undefined;
  const hex = /^0x([0-9a-f]{1,8})$/i.exec(text);
  const value =
    hex?.[1] !== undefined ? parseInt(hex[1], 16) : parseInteger(text, 0, 0xffffffff, 'FwMark');
  return value === 0 ? undefined : value;
}

function parseInterfaceAddress(text: string): InterfaceAddress {
  const { family, address, prefixLength } = parseAddressAndPrefix(text);
  return { family, address: formatAddress(family, address), prefixLength };
}

function parseNetwork(text: string): IpNetwork {
  const { family, prefixLength } = parseAddressAndPrefix(text);
  const network = parsePrefix(`${text.split('/')[0]}/${prefixLength}`);
  return { family, address: formatAddress(family, network.address), prefixLength };
}

/** The address and prefix length, with the messages a wg-quick file's author reads. */
function parseAddressAndPrefix(text: string): Address & { prefixLength: number } {
  const [address = '', prefix, ...rest] = text.split('/');
  if (address.includes('%'))
    throw new Error(`${quoted(address)}: zone indexes are not allowed here`);
  if (!isAddress(address)) throw new Error(`${quoted(address)} is not an IP address`);
  if (rest.length > 0) throw new Error(`${quoted(text)} has more than one "/"`);
  const parsed = parseAddress(address);
  const maxPrefix = parsed.family === 4 ? 32 : 128;
  if (prefix === undefined) return { ...parsed, prefixLength: maxPrefix };
  if (!/^[0-9]{1,3}$/.test(prefix) || Number(prefix) > maxPrefix) {
    throw new Error(
      `${quoted(`/${prefix}`)} is not a prefix length for IPv${parsed.family} (0–${maxPrefix})`,
    );
  }
  return { ...parsed, prefixLength: Number(prefix) };
}

function dedupeNetworks(networks: IpNetwork[]): IpNetwork[] {
  const seen = new Set<string>();
  return networks.filter((n) => {
    const key = `${n.address}/${n.prefixLength}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function parseEndpoint(text: string): PeerEndpoint {
  const bracketed = /^\[([^\]]*)\]:([^:]*)$/.exec(text);
  if (bracketed !== null) {
    const host = bracketed[1] ?? '';
    if (!host.includes(':') || !isAddress(host))
      throw new Error(`${quoted(`[${host}]`)} is not an IPv6 address`);
    return { host, port: parseEndpointPort(bracketed[2] ?? '') };
  }
  const colon = text.lastIndexOf(':');
  if (colon === -1)
    throw new Error(`${quoted(text)} has no port (expected host:port or [IPv6]:port)`);
  const host = text.slice(0, colon);
  if (host.includes(':')) {
    throw new Error(`${quoted(text)}: an IPv6 endpoint needs brackets, as in [2001:db8::1]:51820`);
  }
  if (!isAddress(host) && !isHostname(host)) {
    throw new Error(`${quoted(host)} is neither an IPv4 address nor a hostname`);
  }
  return { host, port: parseEndpointPort(text.slice(colon + 1)) };
}

function parseEndpointPort(text: string): number {
  return parseInteger(text, 1, 65535, 'the endpoint port');
}

function isHostname(text: string): boolean {
  if (text.length === 0 || text.length > 253) return false;
  const labels = text.replace(/\.$/, '').split('.');
  // An all-numeric name is a malformed IPv4 address, not a hostname.
  if (labels.every((label) => /^[0-9]+$/.test(label))) return false;
  return labels.every((label) => /^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/.test(label));
}

interface DnsEntry {
  kind: 'server' | 'search';
  value: string;
}

/** As wg-quick: an IP address is a server, anything else a search domain. */
function parseDnsEntry(text: string): DnsEntry {
  if (isAddress(text)) return { kind: 'server', value: text };
  if (isHostname(text)) return { kind: 'search', value: text };
  throw new Error(`${quoted(text)} is neither an IP address nor a search domain`);
}

/** Tabs are whitespace; every other C0 control and DEL is refused. */
function hasControlCharacters(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if ((code < 0x20 && code !== 0x09) || code === 0x7f) return true;
  }
  return false;
}

/**
 * A value from the file, quoted for a message: shortened so a hostile line
 * cannot flood it, and withheld when it holds a run of base64 or base64url
 * characters as long as a good part of a key, spaces ignored (a key pasted
 * into the wrong field, broken up, or two lines run together), since
 * messages reach terminals and logs.
 */
function quoted(text: string): string {
  if (KEY_MATERIAL.test(text.replace(/\s+/g, ''))) {
    return 'the value (not shown: it may hold key material)';
  }
  return `"${text.length > 40 ? `${text.slice(0, 40)}…` : text}"`;
}

const KEY_MATERIAL = /[A-Za-z0-9+/_=-]{16,}/;
