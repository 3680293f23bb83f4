/**
 * What the operator CLI does, over a storage: tokens for service accounts and gateways,
 * revocation, and the listings. cli.ts parses arguments and prints; this does the work and
 * returns values, so it is tested without a process.
 */
import { printableText } from '@gatehouse/logging';
import type { Account, Actor, Device, Millis, PortalStorage, Site, Token } from './db/storage.ts';
import { issueToken } from './tokens.ts';

/** A refusal an operator can act on; `exitCode` 2 for usage, 1 otherwise. */
export class OperatorError extends Error {
  readonly exitCode: 1 | 2;
  constructor(message: string, exitCode: 1 | 2 = 1) {
    super(message);
    this.name = 'OperatorError';
    this.exitCode = exitCode;
  }
}

/** The account named by `slug`, or the only account when there is one and no slug is given. */
export function resolveAccount(storage: PortalStorage, slug: string | undefined): Account {
  if (slug !== undefined) {
    const account = storage.findAccountBySlug(slug);
    if (account === undefined) throw new OperatorError(`no account ${JSON.stringify(slug)}`);
    return account;
  }
  const accounts = storage.listAccounts();
  if (accounts.length === 1) return accounts[0] as Account;
  if (accounts.length === 0) {
    throw new OperatorError('there are no accounts yet (create them with `apply FILE`)');
  }
  throw new OperatorError(
    `there are ${accounts.length} accounts (${accounts.map((a) => a.slug).join(', ')}): name one with --account SLUG`,
    2,
  );
}

const DURATION = /^([1-9][0-9]{0,6})(s|m|h|d)$/;
const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** `90d`, `12h`, `30m`, `45s` → milliseconds; throws a usage error otherwise. */
export function parseDuration(option: string, text: string): number {
  const match = DURATION.exec(text);
  if (match === null) {
    throw new OperatorError(`${option} ${text}: expected a number and s, m, h or d (e.g. 90d)`, 2);
  }
  return Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
}

export interface CreatedToken {
  /** The token text: shown once, stored nowhere. */
  text: string;
  token: Token;
  account: Account;
  /** The service account, or the gateway's site. */
  owner: Actor | Site;
}

export function createServiceAccountToken(
  storage: PortalStorage,
  input: { account?: string; name: string; now: Millis; expiresAt: Millis | null },
): CreatedToken {
  return storage.transaction(() => {
    const account = resolveAccount(storage, input.account);
    const actor = storage.findActorByName(account.id, input.name);
    if (actor === undefined || actor.kind !== 'service_account') {
      throw new OperatorError(
        `no service account ${JSON.stringify(input.name)} in account ${account.slug}`,
      );
    }
    if (actor.disabledAt !== null) {
      throw new OperatorError(`service account ${account.slug}/${actor.name} is disabled`);
    }
    const issued = issueToken(storage, {
      accountId: account.id,
      kind: 'service_account',
      actorId: actor.id,
      now: input.now,
      expiresAt: input.expiresAt,
    });
    return { text: issued.text, token: issued.token, account, owner: actor };
  });
}

export function createGatewayToken(
  storage: PortalStorage,
  input: { account?: string; site: string; now: Millis; expiresAt: Millis | null },
): CreatedToken {
  return storage.transaction(() => {
    const account = resolveAccount(storage, input.account);
    const site = storage.findSiteByName(account.id, input.site);
    if (site === undefined) {
      throw new OperatorError(`no site ${JSON.stringify(input.site)} in account ${account.slug}`);
    }
    const issued = issueToken(storage, {
      accountId: account.id,
      kind: 'gateway',
      siteId: site.id,
      now: input.now,
      expiresAt: input.expiresAt,
    });
    return { text: issued.text, token: issued.token, account, owner: site };
  });
}

export type RevokeOutcome = 'revoked' | 'already_revoked';

export function revokeTokenById(storage: PortalStorage, id: string, now: Millis): RevokeOutcome {
  return storage.transaction(() => {
    const token = storage.findToken(id);
    if (token === undefined) throw new OperatorError(`no token ${JSON.stringify(id)}`);
    return storage.revokeToken(id, now) ? 'revoked' : 'already_revoked';
  });
}

export type Cell = string | number | null;
export type Table = { columns: string[]; rows: Cell[][] };

function time(ms: Millis | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

function accountsFor(storage: PortalStorage, slug: string | undefined): Account[] {
  if (slug === undefined) return storage.listAccounts();
  const account = storage.findAccountBySlug(slug);
  if (account === undefined) throw new OperatorError(`no account ${JSON.stringify(slug)}`);
  return [account];
}

export function usersTable(storage: PortalStorage, slug?: string): Table {
  const rows: Cell[][] = [];
  for (const account of accountsFor(storage, slug)) {
    const groupNames = new Map(storage.listGroups(account.id).map((g) => [g.id, g.name]));
    const groupsOf = new Map<string, string[]>();
    for (const m of storage.listMemberships({ accountId: account.id })) {
      const list = groupsOf.get(m.actorId) ?? [];
      list.push(groupNames.get(m.groupId) ?? m.groupId);
      groupsOf.set(m.actorId, list);
    }
    for (const actor of storage.listActors(account.id)) {
      rows.push([
        account.slug,
        actor.kind === 'user' ? 'user' : 'service',
        actor.name,
        actor.email,
        storage.findPasswordIdentity(actor.id) !== undefined ? 'yes' : 'no',
        actor.disabledAt === null ? 'no' : 'yes',
        (groupsOf.get(actor.id) ?? []).sort().join(','),
      ]);
    }
  }
  return {
    columns: ['ACCOUNT', 'KIND', 'NAME', 'EMAIL', 'PASSWORD', 'DISABLED', 'GROUPS'],
    rows,
  };
}

export function devicesTable(storage: PortalStorage, slug?: string): Table {
  const rows: Cell[][] = [];
  for (const account of accountsFor(storage, slug)) {
    const actors = new Map(storage.listActors(account.id).map((a) => [a.id, a.name]));
    for (const device of storage.listDevices(account.id)) {
      rows.push(deviceRow(account, actors, device));
    }
  }
  return {
    columns: ['ACCOUNT', 'ACTOR', 'NAME', 'ID', 'IPV4', 'IPV6', 'PUBLIC KEY', 'LAST SEEN'],
    rows,
  };
}

function deviceRow(account: Account, actors: Map<string, string>, device: Device): Cell[] {
  return [
    account.slug,
    actors.get(device.actorId) ?? device.actorId,
    device.name,
    device.id,
    device.ipv4,
    device.ipv6,
    device.publicKey,
    time(device.lastSeenAt),
  ];
}

export function tokensTable(storage: PortalStorage, slug?: string): Table {
  const rows: Cell[][] = [];
  for (const account of accountsFor(storage, slug)) {
    const actors = new Map(storage.listActors(account.id).map((a) => [a.id, a.name]));
    const sites = new Map(storage.listSites(account.id).map((s) => [s.id, s.name]));
    for (const token of storage.listTokens({ accountId: account.id })) {
      const owner =
        token.actorId !== null
          ? (actors.get(token.actorId) ?? token.actorId)
          : `site ${token.siteId === null ? '?' : (sites.get(token.siteId) ?? token.siteId)}`;
      rows.push([
        account.slug,
        token.id,
        token.kind,
        owner,
        time(token.createdAt),
        time(token.expiresAt),
        time(token.revokedAt),
        time(token.lastUsedAt),
      ]);
    }
  }
  return {
    columns: ['ACCOUNT', 'ID', 'KIND', 'FOR', 'CREATED', 'EXPIRES', 'REVOKED', 'LAST USED'],
    rows,
  };
}

/** Columns aligned with two spaces; null as "-". */
export function formatTable(table: Table): string {
  const cells = [
    table.columns,
    ...table.rows.map((row) =>
      row.map((c) => printableText(c === null ? '-' : String(c), Infinity)),
    ),
  ];
  const widths = table.columns.map((_, i) =>
    Math.max(...cells.map((row) => (row[i] ?? '').length)),
  );
  return cells
    .map((row) =>
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** Rows as objects keyed by lower-case column names, for --json. */
export function tableJson(table: Table): Record<string, Cell>[] {
  const keys = table.columns.map((c) => c.toLowerCase().replace(/ /g, '_'));
  return table.rows.map((row) => Object.fromEntries(keys.map((key, i) => [key, row[i] ?? null])));
}
