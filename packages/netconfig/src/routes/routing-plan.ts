/**
 * What Gatehouse's rules and routes should be, and the iproute2 commands that
 * turn the current state into that: pure functions over parsed `ip -json`
 * output, so every case is a table row in a test.
 *
 * Per address family, with mark M, table T and priorities P, P+1, P+2:
 *
 *   P    not fwmark M lookup T suppress_prefixlength 0   resource routes (T's default route ignored)
 *   P+1  lookup main suppress_prefixlength 0             LAN and other specific routes (full tunnel
 *                                                        with the LAN bypass only)
 *   P+2  not fwmark M lookup T                           T's default route (full tunnel only)
 *
 * Gatehouse's own sockets carry mark M and so skip T; resource routes beat
 * the LAN's routes for the same addresses; in full-tunnel mode directly
 * connected subnets and any other non-default route of the main table still
 * win over the tunnel's default route — unless the LAN bypass is off, when
 * everything but Gatehouse's own sockets goes into the tunnel.
 */
import { formatAddress, isAddress, parseAddress } from '@gatehouse/addresses';

/** "GH" in ASCII. */
export const DEFAULT_FWMARK = 0x4748;
export const DEFAULT_TABLE = 0x4748;
/** The first of ten rule priorities reserved for Gatehouse (18240–18249), before main (32766). */
export const DEFAULT_RULE_PRIORITY = 18240;
export const RULE_PRIORITY_RANGE_SIZE = 10;
/** The `proto` tag on Gatehouse's routes and rules; unassigned in iproute2's rt_protos. */
export const DEFAULT_ROUTE_PROTOCOL = 71;

export type Family = 4 | 6;

export interface RoutingIdentity {
  interfaceName: string;
  mark: number;
  table: number;
  priority: number;
  protocol: number;
}

export interface RuleSpec {
  family: Family;
  priority: number;
  /** `not fwmark M`: everything except Gatehouse's own sockets. */
  unmarkedOnly: boolean;
  table: number | 'main';
  suppressPrefixLength: number | undefined;
}

/** One entry of `ip -json rule show`. */
export interface RuleJson {
  priority?: number;
  not?: null;
  fwmark?: string;
  table?: string;
  suppress_prefixlen?: number;
  protocol?: string;
}

/** One entry of `ip -json route show`. */
export interface RouteJson {
  dst?: string;
  table?: string;
  type?: string;
}

/** One `addr_info` entry of `ip -json address show`. */
export interface AddressJson {
  family?: string;
  local?: string;
  prefixlen?: number;
  scope?: string;
}

export function familyOf(cidr: string): Family {
  const address = cidr.split('/')[0] ?? '';
  if (!isAddress(address)) throw new Error(`not an IPv4 or IPv6 prefix: ${cidr}`);
  return parseAddress(address).family;
}

/**
 * `10.0.0.1` → `10.0.0.1/32`, `default` → `0.0.0.0/0`, the address in RFC 5952 text (as inet_ntop
 * writes it), host bits kept (an interface address has them): how `ip -json` prints them.
 */
export function normalizePrefix(prefix: string, family?: Family): string {
  if (prefix === 'default') {
    if (family === undefined) throw new Error('"default" needs a family');
    return family === 4 ? '0.0.0.0/0' : '::/0';
  }
  const [address = '', length] = prefix.split('/');
  const addressFamily = familyOf(address);
  const canonical = formatAddress(addressFamily, parseAddress(address).address);
  return `${canonical}/${length ?? (addressFamily === 4 ? 32 : 128)}`;
}

export function isDefaultRoute(prefix: string): boolean {
  return prefix.endsWith('/0');
}

export interface RoutingOptions {
  /** In full-tunnel mode the main table's specific routes (the LAN) stay outside the tunnel; default true. */
  lanBypass?: boolean;
}

export function desiredRules(
  identity: RoutingIdentity,
  family: Family,
  fullTunnel: boolean,
  options: RoutingOptions = {},
): RuleSpec[] {
  const rules: RuleSpec[] = [
    {
      family,
      priority: identity.priority,
      unmarkedOnly: true,
      table: identity.table,
      suppressPrefixLength: 0,
    },
  ];
  if (fullTunnel && options.lanBypass !== false) {
    rules.push({
      family,
      priority: identity.priority + 1,
      unmarkedOnly: false,
      table: 'main',
      suppressPrefixLength: 0,
    });
  }
  if (fullTunnel) {
    rules.push({
      family,
      priority: identity.priority + 2,
      unmarkedOnly: true,
      table: identity.table,
      suppressPrefixLength: undefined,
    });
  }
  return rules;
}

export function ruleArguments(identity: RoutingIdentity, rule: RuleSpec): string {
  const parts = [`priority ${rule.priority}`];
  if (rule.unmarkedOnly) parts.push(`not fwmark ${hex(identity.mark)}`);
  parts.push(`lookup ${rule.table}`);
  if (rule.suppressPrefixLength !== undefined)
    parts.push(`suppress_prefixlength ${rule.suppressPrefixLength}`);
  parts.push(`protocol ${identity.protocol}`);
  return parts.join(' ');
}

/** Whether a listed rule is Gatehouse's: its protocol tag and a priority in Gatehouse's range. */
export function isOwnRule(identity: RoutingIdentity, rule: RuleJson): boolean {
  const priority = rule.priority ?? -1;
  return (
    rule.protocol === String(identity.protocol) &&
    priority >= identity.priority &&
    priority < identity.priority + RULE_PRIORITY_RANGE_SIZE
  );
}

export function ruleFromJson(identity: RoutingIdentity, family: Family, rule: RuleJson): RuleSpec {
  const table = rule.table === 'main' ? 'main' : Number(rule.table);
  return {
    family,
    priority: rule.priority ?? 0,
    unmarkedOnly:
      rule.not === null && rule.fwmark !== undefined && Number(rule.fwmark) === identity.mark,
    table,
    suppressPrefixLength: rule.suppress_prefixlen,
  };
}

export interface FamilyState {
  rules: readonly RuleJson[];
  /** Routes of Gatehouse's table with Gatehouse's protocol. */
  routes: readonly RouteJson[];
}

/**
 * The `ip -batch` lines (one family) that make Gatehouse's table hold exactly
 * `prefixes` and its rules match the mode. Additions come before removals so
 * that a failure half-way leaves a route too many, never one too few.
 */
export function planRouting(
  identity: RoutingIdentity,
  family: Family,
  current: FamilyState,
  prefixes: readonly string[],
  options: RoutingOptions = {},
): string[] {
  const wanted = [
    ...new Set(
      prefixes
        .filter((prefix) => familyOf(prefix) === family)
        .map((prefix) => normalizePrefix(prefix)),
    ),
  ];
  const have = new Set(current.routes.map((route) => normalizePrefix(route.dst ?? '', family)));
  const fullTunnel = wanted.some(isDefaultRoute);

  const wantedRules = desiredRules(identity, family, fullTunnel, options);
  const haveRules = current.rules
    .filter((rule) => isOwnRule(identity, rule))
    .map((rule) => ruleFromJson(identity, family, rule));
  const key = (rule: RuleSpec) => ruleArguments(identity, rule);
  const haveRuleKeys = new Set(haveRules.map(key));
  const wantedRuleKeys = new Set(wantedRules.map(key));

  const lines: string[] = [];
  for (const prefix of wanted) {
    if (!have.has(prefix))
      lines.push(
        `route replace ${prefix} dev ${identity.interfaceName} ${routeSelector(identity)}`,
      );
  }
  for (const rule of wantedRules)
    if (!haveRuleKeys.has(key(rule))) lines.push(`rule add ${key(rule)}`);
  for (const rule of haveRules)
    if (!wantedRuleKeys.has(key(rule))) lines.push(`rule del ${key(rule)}`);
  for (const prefix of have) {
    if (!wanted.includes(prefix)) lines.push(`route del ${prefix} ${routeSelector(identity)}`);
  }
  return lines;
}

/** Every rule and route of Gatehouse's (one family): at start-up, after a crash, and at stop. */
export function planFlush(
  identity: RoutingIdentity,
  family: Family,
  rules: readonly RuleJson[],
  routes: readonly RouteJson[],
): string[] {
  const lines: string[] = [];
  for (const rule of rules) {
    if (isOwnRule(identity, rule))
      lines.push(`rule del priority ${rule.priority} protocol ${identity.protocol}`);
  }
  for (const route of routes) {
    const type = route.type !== undefined && route.type !== 'unicast' ? `${route.type} ` : '';
    lines.push(
      `route del ${type}${normalizePrefix(route.dst ?? '', family)} table ${route.table ?? 'main'} proto ${identity.protocol}`,
    );
  }
  return lines;
}

/**
 * The address lines (one family) that make the interface carry exactly
 * `addresses` and `listenOnly` (global scope). Listen-only addresses are
 * delivered locally but never picked as a source address: IPv4 ones get
 * `scope host`, which source selection skips for every non-local
 * destination; IPv6 ignores that scope, so they are deprecated
 * (`preferred_lft 0`), which loses to any preferred address (RFC 6724 rule
 * 3) but is still picked when no other global address is left.
 */
export function planAddresses(
  identity: RoutingIdentity,
  family: Family,
  current: readonly AddressJson[],
  addresses: readonly string[],
  listenOnly: readonly string[] = [],
): string[] {
  const familyName = family === 4 ? 'inet' : 'inet6';
  const have = current
    .filter(
      (entry) => entry.family === familyName && entry.scope !== 'link' && entry.local !== undefined,
    )
    .map((entry) => normalizePrefix(`${entry.local}/${entry.prefixlen}`));
  const ofFamily = (list: readonly string[]) =>
    list
      .filter((address) => familyOf(address) === family)
      .map((address) => normalizePrefix(address));
  const noDad = family === 6 ? ' nodad' : '';
  const flags = new Map([
    ...ofFamily(addresses).map((address) => [address, noDad] as const),
    ...ofFamily(listenOnly).map(
      (address) => [address, family === 4 ? ' scope host' : ' nodad preferred_lft 0'] as const,
    ),
  ]);
  return [
    ...[...flags]
      .filter(([address]) => !have.includes(address))
      .map(([address, flag]) => `address add ${address} dev ${identity.interfaceName}${flag}`),
    ...have
      .filter((address) => !flags.has(address))
      .map((address) => `address del ${address} dev ${identity.interfaceName}`),
  ];
}

function routeSelector(identity: RoutingIdentity): string {
  return `table ${identity.table} proto ${identity.protocol}`;
}

function hex(value: number): string {
  return `0x${value.toString(16)}`;
}
