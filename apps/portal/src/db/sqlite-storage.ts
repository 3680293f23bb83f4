/**
 * PortalStorage over SQLite: Node 22's built-in node:sqlite (DatabaseSync, synchronous).
 *
 * Opening sets WAL (a file database), foreign keys on and a busy timeout, then applies the
 * migrations in apps/portal/migrations (`NNNN-name.sql`, in order, each in its own IMMEDIATE
 * transaction together with its row in schema_migrations); reopening applies only the new
 * ones. A database recorded at a version newer than this code knows is refused.
 *
 * Every query is a prepared statement with bound parameters (cached per SQL text); no value
 * is ever spliced into SQL.
 */
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import { normalizePrefix, type AddressFamily } from '@gatehouse/addresses';
import { addressAt, checkRanges, parseRange } from './address-range.ts';
import {
  DEFAULT_ACCOUNT_RANGES,
  StorageError,
  TOKEN_KINDS,
  type Account,
  type AccountRanges,
  type Actor,
  type ActorKind,
  type CreateAccountInput,
  type CreateActorInput,
  type CreatePolicyInput,
  type CreateResourceInput,
  type CreateTokenInput,
  type Device,
  type Flow,
  type FlowDomain,
  type FlowFilter,
  type Gateway,
  type Group,
  type Id,
  type Membership,
  type Millis,
  type PasswordIdentity,
  type Policy,
  type PortalStorage,
  type Resource,
  type ResourceFilter,
  type SaveFlowInput,
  type ResourceType,
  type Site,
  type Token,
  type TokenFilter,
  type TokenKind,
  type UpdateAccountInput,
  type UpdateActorInput,
  type UpdateResourceInput,
  type UpsertDeviceInput,
  type UpsertGatewayInput,
} from './storage.ts';

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));

const MIGRATION_FILE = /^(\d{4})-([a-z0-9][a-z0-9-]*)\.sql$/;

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** The migrations in `dir`, in order; their versions must run 1, 2, 3, … without a gap. */
export function loadMigrations(dir: string = MIGRATIONS_DIR): Migration[] {
  const migrations: Migration[] = [];
  for (const file of readdirSync(dir).sort()) {
    if (!file.endsWith('.sql')) continue;
    const match = MIGRATION_FILE.exec(file);
    if (match === null) {
      throw new Error(`migrations: ${file} is not named NNNN-name.sql`);
    }
    migrations.push({
      version: Number(match[1]),
      name: file,
      sql: readFileSync(`${dir}/${file}`, 'utf8'),
    });
  }
  migrations.forEach((migration, index) => {
    if (migration.version !== index + 1) {
      throw new Error(`migrations: expected version ${index + 1}, found ${migration.name}`);
    }
  });
  return migrations;
}

export interface SqliteStorageOptions {
  /** Milliseconds a write waits for another process's lock (default 5000). */
  busyTimeoutMs?: number;
  /** Where the migrations are (default apps/portal/migrations). */
  migrationsDir?: string;
  /** The clock for schema_migrations.applied_at only (default Date.now). */
  now?: () => Millis;
}

type Cell = SQLInputValue | undefined;
type Row = Record<string, Cell>;

const SLUG = /^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

function str(value: Cell): string {
  return String(value);
}
function strOrNull(value: Cell): string | null {
  return value === null || value === undefined ? null : String(value);
}
function num(value: Cell): number {
  return Number(value);
}
function numOrNull(value: Cell): number | null {
  return value === null || value === undefined ? null : Number(value);
}

/** The SQLite error behind a failed statement, as a StorageError when it is a rule broken. */
function translate(error: unknown, what: string): unknown {
  if (!(error instanceof Error)) return error;
  const errcode = (error as { errcode?: number }).errcode;
  switch (errcode) {
    case 2067: // SQLITE_CONSTRAINT_UNIQUE
    case 1555: // SQLITE_CONSTRAINT_PRIMARYKEY
      return new StorageError('conflict', `${what}: already exists (${error.message})`, {
        cause: error,
      });
    case 787: // SQLITE_CONSTRAINT_FOREIGNKEY
      return new StorageError('not_found', `${what}: refers to a row that does not exist`, {
        cause: error,
      });
    case 275: // SQLITE_CONSTRAINT_CHECK
    case 1299: // SQLITE_CONSTRAINT_NOTNULL
      return new StorageError('invalid', `${what}: ${error.message}`, { cause: error });
    default:
      return error;
  }
}

function accountFrom(row: Row): Account {
  return {
    id: str(row.id),
    slug: str(row.slug),
    name: str(row.name),
    ranges: {
      tunnelIpv4: str(row.tunnel_ipv4),
      tunnelIpv6: str(row.tunnel_ipv6),
      proxyIpv4: str(row.proxy_ipv4),
      proxyIpv6: str(row.proxy_ipv6),
    },
    createdAt: num(row.created_at),
    updatedAt: num(row.updated_at),
  };
}

function actorFrom(row: Row): Actor {
  return {
    id: str(row.id),
    accountId: str(row.account_id),
    kind: str(row.kind) as ActorKind,
    name: str(row.name),
    email: strOrNull(row.email),
    disabledAt: numOrNull(row.disabled_at),
    createdAt: num(row.created_at),
    updatedAt: num(row.updated_at),
  };
}

function tokenFrom(row: Row): Token {
  return {
    id: str(row.id),
    accountId: str(row.account_id),
    kind: str(row.kind) as TokenKind,
    actorId: strOrNull(row.actor_id),
    siteId: strOrNull(row.site_id),
    hash: str(row.hash),
    createdAt: num(row.created_at),
    expiresAt: numOrNull(row.expires_at),
    revokedAt: numOrNull(row.revoked_at),
    lastUsedAt: numOrNull(row.last_used_at),
  };
}

function deviceFrom(row: Row): Device {
  return {
    id: str(row.id),
    accountId: str(row.account_id),
    actorId: str(row.actor_id),
    externalId: str(row.external_id),
    name: str(row.name),
    publicKey: str(row.public_key),
    ipv4: str(row.ipv4),
    ipv6: str(row.ipv6),
    createdAt: num(row.created_at),
    updatedAt: num(row.updated_at),
    lastSeenAt: numOrNull(row.last_seen_at),
    lastSeenRemoteAddress: strOrNull(row.last_seen_remote_address),
  };
}

function gatewayFrom(row: Row): Gateway {
  return {
    id: str(row.id),
    accountId: str(row.account_id),
    siteId: str(row.site_id),
    externalId: str(row.external_id),
    name: str(row.name),
    publicKey: str(row.public_key),
    endpoint: strOrNull(row.endpoint),
    ipv4: str(row.ipv4),
    ipv6: str(row.ipv6),
    createdAt: num(row.created_at),
    updatedAt: num(row.updated_at),
    lastSeenAt: numOrNull(row.last_seen_at),
  };
}

function flowFrom(row: Row): Flow {
  let domain: FlowDomain | null = null;
  if (row.domain !== null && row.domain !== undefined) {
    const wire = JSON.parse(str(row.domain)) as { name: string; proxy_ips: string[] };
    domain = { name: wire.name, proxyIps: [...wire.proxy_ips] };
  }
  return {
    accountId: str(row.account_id),
    gatewayId: str(row.gateway_id),
    deviceId: str(row.device_id),
    resourceId: str(row.resource_id),
    tokenId: str(row.token_id),
    clientPublicKey: str(row.client_public_key),
    presharedKey: str(row.preshared_key),
    domain,
    expiresAt: numOrNull(row.expires_at),
    createdAt: num(row.created_at),
    device: {
      actorId: str(row.actor_id),
      publicKey: str(row.device_public_key),
      ipv4: str(row.ipv4),
      ipv6: str(row.ipv6),
    },
  };
}

/** A flow's domain as one key: the name in lower case, without a trailing dot. */
function domainKey(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function siteFrom(row: Row): Site {
  return {
    id: str(row.id),
    accountId: str(row.account_id),
    name: str(row.name),
    createdAt: num(row.created_at),
    updatedAt: num(row.updated_at),
  };
}

function groupFrom(row: Row): Group {
  return siteFrom(row);
}

function resourceFrom(row: Row): Resource {
  return {
    id: str(row.id),
    accountId: str(row.account_id),
    siteId: str(row.site_id),
    type: str(row.type) as ResourceType,
    name: str(row.name),
    address: strOrNull(row.address),
    filters: JSON.parse(str(row.filters)) as ResourceFilter[],
    createdAt: num(row.created_at),
    updatedAt: num(row.updated_at),
  };
}

function membershipFrom(row: Row): Membership {
  return {
    groupId: str(row.group_id),
    actorId: str(row.actor_id),
    createdAt: num(row.created_at),
  };
}

function policyFrom(row: Row): Policy {
  return {
    id: str(row.id),
    accountId: str(row.account_id),
    groupId: str(row.group_id),
    resourceId: str(row.resource_id),
    description: strOrNull(row.description),
    createdAt: num(row.created_at),
    updatedAt: num(row.updated_at),
  };
}

/** Filters in a canonical form: protocol order as given, ports sorted, icmp without ports. */
function checkedFilters(filters: ResourceFilter[] | undefined): ResourceFilter[] {
  const out: ResourceFilter[] = [];
  for (const filter of filters ?? []) {
    if (!['tcp', 'udp', 'icmp'].includes(filter.protocol)) {
      throw new StorageError('invalid', `filter protocol must be tcp, udp or icmp`);
    }
    const ports = filter.ports ?? [];
    if (filter.protocol === 'icmp' && ports.length > 0) {
      throw new StorageError('invalid', 'an icmp filter has no ports');
    }
    for (const range of ports) {
      const ok =
        Number.isInteger(range.from) &&
        Number.isInteger(range.to) &&
        range.from >= 1 &&
        range.to <= 65535 &&
        range.from <= range.to;
      if (!ok) throw new StorageError('invalid', `bad port range ${JSON.stringify(range)}`);
    }
    const entry: ResourceFilter = { protocol: filter.protocol };
    if (ports.length > 0) {
      entry.ports = ports
        .map((r) => ({ from: r.from, to: r.to }))
        .sort((a, b) => a.from - b.from || a.to - b.to);
    }
    out.push(entry);
  }
  return out;
}

function checkResourceAddress(type: ResourceType, address: string | null): string | null {
  if (type === 'internet') {
    if (address !== null) throw new StorageError('invalid', 'an internet resource has no address');
    return null;
  }
  if (address === null || address === '') {
    throw new StorageError('invalid', `a ${type} resource needs an address`);
  }
  if (type === 'cidr') {
    try {
      return normalizePrefix(address);
    } catch {
      throw new StorageError('invalid', `not an IP prefix: ${JSON.stringify(address)}`);
    }
  }
  return address;
}

const DEVICE_SELECT = `
  SELECT d.*, a4.address AS ipv4, a6.address AS ipv6 FROM devices d
  JOIN tunnel_addresses a4 ON a4.device_id = d.id AND a4.family = 4
  JOIN tunnel_addresses a6 ON a6.device_id = d.id AND a6.family = 6`;

const GATEWAY_SELECT = `
  SELECT g.*, a4.address AS ipv4, a6.address AS ipv6 FROM gateways g
  JOIN tunnel_addresses a4 ON a4.gateway_id = g.id AND a4.family = 4
  JOIN tunnel_addresses a6 ON a6.gateway_id = g.id AND a6.family = 6`;

class SqliteStorage implements PortalStorage {
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, StatementSync>();
  #depth = 0;
  #closed = false;

  constructor(db: DatabaseSync) {
    this.#db = db;
  }

  #q(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (statement === undefined) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  // node:sqlite binds text as C strings: a NUL would cut it short, so a lookup for `acme\0x`
  // would find `acme`. No value with a NUL matches anything, and none is stored.
  #get(sql: string, ...params: SQLInputValue[]): Row | undefined {
    if (params.some(hasNul)) return undefined;
    return this.#q(sql).get(...params) as Row | undefined;
  }

  #all(sql: string, ...params: SQLInputValue[]): Row[] {
    if (params.some(hasNul)) return [];
    return this.#q(sql).all(...params) as Row[];
  }

  #run(what: string, sql: string, ...params: SQLInputValue[]): number {
    if (params.some(hasNul)) {
      throw new StorageError('invalid', `${what}: text with a NUL character`);
    }
    try {
      return Number(this.#q(sql).run(...params).changes);
    } catch (error) {
      throw translate(error, what);
    }
  }

  transaction<T>(fn: () => T): T {
    const depth = this.#depth;
    const savepoint = `sp${depth}`;
    this.#db.exec(depth === 0 ? 'BEGIN IMMEDIATE' : `SAVEPOINT ${savepoint}`);
    this.#depth = depth + 1;
    let result: T;
    try {
      result = fn();
      if (result instanceof Promise) {
        throw new StorageError('invalid', 'transaction: fn must be synchronous');
      }
    } catch (error) {
      this.#depth = depth;
      if (depth === 0) {
        this.#db.exec('ROLLBACK');
      } else {
        this.#db.exec(`ROLLBACK TO ${savepoint}`);
        this.#db.exec(`RELEASE ${savepoint}`);
      }
      throw error;
    }
    this.#depth = depth;
    this.#db.exec(depth === 0 ? 'COMMIT' : `RELEASE ${savepoint}`);
    return result;
  }

  dataVersion(): number {
    return num((this.#get('PRAGMA data_version') as Row).data_version);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#statements.clear();
    this.#db.close();
  }

  // --- accounts -------------------------------------------------------------------------------

  #ranges(given: Partial<AccountRanges> | undefined, base: AccountRanges): AccountRanges {
    const ranges: AccountRanges = { ...base, ...stripUndefined(given ?? {}) };
    checkRanges(ranges);
    return {
      tunnelIpv4: normalizePrefix(ranges.tunnelIpv4),
      tunnelIpv6: normalizePrefix(ranges.tunnelIpv6),
      proxyIpv4: normalizePrefix(ranges.proxyIpv4),
      proxyIpv6: normalizePrefix(ranges.proxyIpv6),
    };
  }

  createAccount(input: CreateAccountInput): Account {
    if (!SLUG.test(input.slug)) {
      throw new StorageError(
        'invalid',
        `account slug ${JSON.stringify(input.slug)}: 1 to 100 of A-Z a-z 0-9 _ -, not starting with _ or -`,
      );
    }
    const ranges = this.#ranges(input.ranges, DEFAULT_ACCOUNT_RANGES);
    const id = randomUUID();
    this.#run(
      `account ${input.slug}`,
      `INSERT INTO accounts (id, slug, name, tunnel_ipv4, tunnel_ipv6, proxy_ipv4, proxy_ipv6,
         created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      id,
      input.slug,
      input.name,
      ranges.tunnelIpv4,
      ranges.tunnelIpv6,
      ranges.proxyIpv4,
      ranges.proxyIpv6,
      input.now,
      input.now,
    );
    return this.findAccount(id) as Account;
  }

  updateAccount(id: Id, input: UpdateAccountInput): Account {
    return this.transaction(() => {
      const account = this.#mustAccount(id);
      const ranges = this.#ranges(input.ranges, account.ranges);
      this.#run(
        `account ${account.slug}`,
        `UPDATE accounts SET name = ?, tunnel_ipv4 = ?, tunnel_ipv6 = ?, proxy_ipv4 = ?,
           proxy_ipv6 = ?, updated_at = ? WHERE id = ?`,
        input.name ?? account.name,
        ranges.tunnelIpv4,
        ranges.tunnelIpv6,
        ranges.proxyIpv4,
        ranges.proxyIpv6,
        input.now,
        id,
      );
      if (ranges.tunnelIpv4 !== account.ranges.tunnelIpv4) this.#renumber(id, 4);
      if (ranges.tunnelIpv6 !== account.ranges.tunnelIpv6) this.#renumber(id, 6);
      return this.findAccount(id) as Account;
    });
  }

  deleteAccount(id: Id): boolean {
    return this.#run('account', 'DELETE FROM accounts WHERE id = ?', id) > 0;
  }

  findAccount(id: Id): Account | undefined {
    const row = this.#get('SELECT * FROM accounts WHERE id = ?', id);
    return row && accountFrom(row);
  }

  findAccountBySlug(slug: string): Account | undefined {
    const row = this.#get('SELECT * FROM accounts WHERE slug = ?', slug);
    return row && accountFrom(row);
  }

  listAccounts(): Account[] {
    return this.#all('SELECT * FROM accounts ORDER BY slug').map(accountFrom);
  }

  #mustAccount(id: Id): Account {
    const account = this.findAccount(id);
    if (account === undefined) throw new StorageError('not_found', `no account ${id}`);
    return account;
  }

  // --- tunnel addresses -----------------------------------------------------------------------

  /** The lowest free host index at or after the highest one, else the first gap; or throws. */
  #allocate(accountId: Id, family: AddressFamily, owner: { device?: Id; gateway?: Id }): void {
    const account = this.#mustAccount(accountId);
    const text = family === 4 ? account.ranges.tunnelIpv4 : account.ranges.tunnelIpv6;
    const range = parseRange(family === 4 ? 'tunnelIpv4' : 'tunnelIpv6', text, family);
    const highest = this.#get(
      'SELECT max(host_index) AS m FROM tunnel_addresses WHERE account_id = ? AND family = ?',
      accountId,
      family,
    ) as Row;
    let index: number | undefined;
    const max = numOrNull(highest.m);
    if (max === null) index = 1;
    else if (max < range.maxIndex) index = max + 1;
    else {
      const first = this.#get(
        'SELECT 1 AS taken FROM tunnel_addresses WHERE account_id = ? AND family = ? AND host_index = 1',
        accountId,
        family,
      );
      if (first === undefined) index = 1;
      else {
        const gap = this.#get(
          `SELECT t.host_index + 1 AS free FROM tunnel_addresses t
           WHERE t.account_id = ? AND t.family = ? AND t.host_index < ?
             AND NOT EXISTS (SELECT 1 FROM tunnel_addresses u WHERE u.account_id = t.account_id
               AND u.family = t.family AND u.host_index = t.host_index + 1)
           ORDER BY t.host_index LIMIT 1`,
          accountId,
          family,
          range.maxIndex,
        );
        if (gap !== undefined) index = num(gap.free);
      }
    }
    if (index === undefined) {
      throw new StorageError(
        'range_exhausted',
        `account ${account.slug}: no free address left in ${text}`,
      );
    }
    this.#run(
      'tunnel address',
      `INSERT INTO tunnel_addresses (account_id, family, host_index, address, device_id, gateway_id)
       VALUES (?, ?, ?, ?, ?, ?)`,
      accountId,
      family,
      index,
      addressAt(range, index),
      owner.device ?? null,
      owner.gateway ?? null,
    );
  }

  /** Every device and gateway of the account anew from the (changed) range, oldest first. */
  #renumber(accountId: Id, family: AddressFamily): void {
    const owners = this.#all(
      `SELECT id, 'device' AS kind, created_at FROM devices WHERE account_id = ?
       UNION ALL SELECT id, 'gateway' AS kind, created_at FROM gateways WHERE account_id = ?
       ORDER BY created_at, id`,
      accountId,
      accountId,
    );
    this.#run(
      'tunnel addresses',
      'DELETE FROM tunnel_addresses WHERE account_id = ? AND family = ?',
      accountId,
      family,
    );
    for (const owner of owners) {
      const id = str(owner.id);
      this.#allocate(accountId, family, owner.kind === 'device' ? { device: id } : { gateway: id });
    }
  }

  // --- actors ---------------------------------------------------------------------------------

  createActor(input: CreateActorInput): Actor {
    const email = input.kind === 'user' ? (input.email ?? null) : null;
    if (input.kind === 'service_account' && input.email) {
      throw new StorageError('invalid', 'a service account has no email');
    }
    const id = randomUUID();
    this.#run(
      `actor ${input.name}`,
      `INSERT INTO actors (id, account_id, kind, name, email, disabled_at, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, NULL, ?, ?)`,
      id,
      input.accountId,
      input.kind,
      input.name,
      email,
      input.now,
      input.now,
    );
    return this.findActor(id) as Actor;
  }

  updateActor(id: Id, input: UpdateActorInput): Actor {
    const actor = this.findActor(id);
    if (actor === undefined) throw new StorageError('not_found', `no actor ${id}`);
    const email = input.email === undefined ? actor.email : input.email;
    if (actor.kind === 'service_account' && email !== null) {
      throw new StorageError('invalid', 'a service account has no email');
    }
    let disabledAt = actor.disabledAt;
    if (input.disabled === true && disabledAt === null) disabledAt = input.now;
    if (input.disabled === false) disabledAt = null;
    this.#run(
      `actor ${input.name ?? actor.name}`,
      'UPDATE actors SET name = ?, email = ?, disabled_at = ?, updated_at = ? WHERE id = ?',
      input.name ?? actor.name,
      email,
      disabledAt,
      input.now,
      id,
    );
    return this.findActor(id) as Actor;
  }

  deleteActor(id: Id): boolean {
    return this.#run('actor', 'DELETE FROM actors WHERE id = ?', id) > 0;
  }

  findActor(id: Id): Actor | undefined {
    const row = this.#get('SELECT * FROM actors WHERE id = ?', id);
    return row && actorFrom(row);
  }

  findActorByName(accountId: Id, name: string): Actor | undefined {
    const row = this.#get(
      'SELECT * FROM actors WHERE account_id = ? AND name = ?',
      accountId,
      name,
    );
    return row && actorFrom(row);
  }

  findActorByEmail(accountId: Id, email: string): Actor | undefined {
    const row = this.#get(
      'SELECT * FROM actors WHERE account_id = ? AND email = ?',
      accountId,
      email,
    );
    return row && actorFrom(row);
  }

  listActors(accountId?: Id, kind?: ActorKind): Actor[] {
    return this.#all(
      `SELECT * FROM actors WHERE (?1 IS NULL OR account_id = ?1) AND (?2 IS NULL OR kind = ?2)
       ORDER BY account_id, name`,
      accountId ?? null,
      kind ?? null,
    ).map(actorFrom);
  }

  // --- password identities --------------------------------------------------------------------

  setPasswordIdentity(actorId: Id, passwordHash: string, now: Millis): PasswordIdentity {
    const actor = this.findActor(actorId);
    if (actor === undefined) throw new StorageError('not_found', `no actor ${actorId}`);
    if (actor.kind !== 'user') {
      throw new StorageError('invalid', 'only users have password identities');
    }
    this.#run(
      'password identity',
      `INSERT INTO password_identities (actor_id, password_hash, created_at, updated_at)
       VALUES (?, ?, ?, ?)
       ON CONFLICT (actor_id) DO UPDATE SET password_hash = excluded.password_hash,
         updated_at = excluded.updated_at`,
      actorId,
      passwordHash,
      now,
      now,
    );
    return this.findPasswordIdentity(actorId) as PasswordIdentity;
  }

  findPasswordIdentity(actorId: Id): PasswordIdentity | undefined {
    const row = this.#get('SELECT * FROM password_identities WHERE actor_id = ?', actorId);
    return (
      row && {
        actorId: str(row.actor_id),
        passwordHash: str(row.password_hash),
        createdAt: num(row.created_at),
        updatedAt: num(row.updated_at),
      }
    );
  }

  deletePasswordIdentity(actorId: Id): boolean {
    return (
      this.#run(
        'password identity',
        'DELETE FROM password_identities WHERE actor_id = ?',
        actorId,
      ) > 0
    );
  }

  // --- tokens ---------------------------------------------------------------------------------

  createToken(input: CreateTokenInput): Token {
    if (!TOKEN_KINDS.includes(input.kind)) {
      throw new StorageError('invalid', `token kind ${JSON.stringify(input.kind)}`);
    }
    if (!SHA256_HEX.test(input.hash)) {
      throw new StorageError('invalid', 'token hash: 64 lowercase hex digits (SHA-256)');
    }
    const actorId = input.actorId ?? null;
    const siteId = input.siteId ?? null;
    if (
      input.kind === 'gateway'
        ? siteId === null || actorId !== null
        : actorId === null || siteId !== null
    ) {
      throw new StorageError(
        'invalid',
        input.kind === 'gateway'
          ? 'a gateway token names a site and no actor'
          : `a ${input.kind} token names an actor and no site`,
      );
    }
    this.#run(
      'token',
      `INSERT INTO tokens (id, account_id, kind, actor_id, site_id, hash, created_at, expires_at,
         revoked_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)`,
      input.id,
      input.accountId,
      input.kind,
      actorId,
      siteId,
      input.hash,
      input.now,
      input.expiresAt,
    );
    return this.findToken(input.id) as Token;
  }

  findToken(id: string): Token | undefined {
    const row = this.#get('SELECT * FROM tokens WHERE id = ?', id);
    return row && tokenFrom(row);
  }

  revokeToken(id: string, now: Millis): boolean {
    return (
      this.#run(
        'token',
        'UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL',
        now,
        id,
      ) > 0
    );
  }

  markTokenUsed(id: string, now: Millis): void {
    this.#run('token', 'UPDATE tokens SET last_used_at = ? WHERE id = ?', now, id);
  }

  bindTokenDevice(id: string, externalId: string): string {
    this.#run(
      'token',
      'UPDATE tokens SET device_external_id = ? WHERE id = ? AND device_external_id IS NULL',
      externalId,
      id,
    );
    const row = this.#get('SELECT device_external_id FROM tokens WHERE id = ?', id);
    const bound = row?.device_external_id;
    return typeof bound === 'string' ? bound : externalId;
  }

  listTokens(filter: TokenFilter = {}): Token[] {
    const active = filter.activeOnly === true;
    return this.#all(
      `SELECT * FROM tokens WHERE (?1 IS NULL OR account_id = ?1) AND (?2 IS NULL OR actor_id = ?2)
         AND (?3 IS NULL OR site_id = ?3) AND (?4 IS NULL OR kind = ?4)
         AND (?5 = 0 OR (revoked_at IS NULL AND (expires_at IS NULL OR ?6 IS NULL OR expires_at > ?6)))
       ORDER BY created_at, id`,
      filter.accountId ?? null,
      filter.actorId ?? null,
      filter.siteId ?? null,
      filter.kind ?? null,
      active ? 1 : 0,
      filter.now ?? null,
    ).map(tokenFrom);
  }

  // --- devices --------------------------------------------------------------------------------

  upsertDevice(input: UpsertDeviceInput): Device {
    return this.transaction(() => {
      const existing = this.findDeviceByExternalId(
        input.accountId,
        input.actorId,
        input.externalId,
      );
      if (existing !== undefined) {
        if (existing.publicKey !== input.publicKey) {
          this.#run('flows', 'DELETE FROM flows WHERE device_id = ?', existing.id);
        }
        this.#run(
          'device',
          `UPDATE devices SET name = ?, public_key = ?, updated_at = ?, last_seen_at = ?,
             last_seen_remote_address = coalesce(?, last_seen_remote_address) WHERE id = ?`,
          input.name,
          input.publicKey,
          input.now,
          input.now,
          input.remoteAddress ?? null,
          existing.id,
        );
        return this.findDevice(existing.id) as Device;
      }
      const id = randomUUID();
      this.#run(
        'device',
        `INSERT INTO devices (id, account_id, actor_id, external_id, name, public_key, created_at,
           updated_at, last_seen_at, last_seen_remote_address) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        id,
        input.accountId,
        input.actorId,
        input.externalId,
        input.name,
        input.publicKey,
        input.now,
        input.now,
        input.now,
        input.remoteAddress ?? null,
      );
      this.#allocate(input.accountId, 4, { device: id });
      this.#allocate(input.accountId, 6, { device: id });
      return this.findDevice(id) as Device;
    });
  }

  findDevice(id: Id): Device | undefined {
    const row = this.#get(`${DEVICE_SELECT} WHERE d.id = ?`, id);
    return row && deviceFrom(row);
  }

  findDeviceByExternalId(accountId: Id, actorId: Id, externalId: string): Device | undefined {
    const row = this.#get(
      `${DEVICE_SELECT} WHERE d.account_id = ? AND d.actor_id = ? AND d.external_id = ?`,
      accountId,
      actorId,
      externalId,
    );
    return row && deviceFrom(row);
  }

  findDevicesByPublicKey(accountId: Id, publicKey: string): Device[] {
    return this.#all(
      `${DEVICE_SELECT} WHERE d.account_id = ? AND d.public_key = ?`,
      accountId,
      publicKey,
    ).map(deviceFrom);
  }

  touchDevice(id: Id, now: Millis, remoteAddress?: string | null): void {
    this.#run(
      'device',
      `UPDATE devices SET last_seen_at = ?,
         last_seen_remote_address = coalesce(?, last_seen_remote_address) WHERE id = ?`,
      now,
      remoteAddress ?? null,
      id,
    );
  }

  deleteDevice(id: Id): boolean {
    return this.#run('device', 'DELETE FROM devices WHERE id = ?', id) > 0;
  }

  listDevices(accountId?: Id, actorId?: Id): Device[] {
    // One statement per filter, so a person's devices come from the devices_actor index (a
    // join checks them) instead of a scan of every device behind `?2 IS NULL OR ...`.
    const order = 'ORDER BY d.account_id, d.created_at, d.id';
    if (actorId !== undefined) {
      return this.#all(
        `${DEVICE_SELECT} WHERE d.actor_id = ?1 AND (?2 IS NULL OR d.account_id = ?2) ${order}`,
        actorId,
        accountId ?? null,
      ).map(deviceFrom);
    }
    return this.#all(
      `${DEVICE_SELECT} WHERE (?1 IS NULL OR d.account_id = ?1) ${order}`,
      accountId ?? null,
    ).map(deviceFrom);
  }

  countDevices(accountId: Id, actorId: Id): number {
    const row = this.#get(
      'SELECT count(*) AS n FROM devices WHERE actor_id = ? AND account_id = ?',
      actorId,
      accountId,
    );
    return num(row?.n ?? 0);
  }

  // --- sites ----------------------------------------------------------------------------------

  createSite(accountId: Id, name: string, now: Millis): Site {
    const id = randomUUID();
    this.#run(
      `site ${name}`,
      'INSERT INTO sites (id, account_id, name, created_at, updated_at) VALUES (?, ?, ?, ?, ?)',
      id,
      accountId,
      name,
      now,
      now,
    );
    return this.findSite(id) as Site;
  }

  renameSite(id: Id, name: string, now: Millis): Site {
    if (
      this.#run(
        `site ${name}`,
        'UPDATE sites SET name = ?, updated_at = ? WHERE id = ?',
        name,
        now,
        id,
      ) === 0
    ) {
      throw new StorageError('not_found', `no site ${id}`);
    }
    return this.findSite(id) as Site;
  }

  deleteSite(id: Id): boolean {
    return this.#run('site', 'DELETE FROM sites WHERE id = ?', id) > 0;
  }

  findSite(id: Id): Site | undefined {
    const row = this.#get('SELECT * FROM sites WHERE id = ?', id);
    return row && siteFrom(row);
  }

  findSiteByName(accountId: Id, name: string): Site | undefined {
    const row = this.#get('SELECT * FROM sites WHERE account_id = ? AND name = ?', accountId, name);
    return row && siteFrom(row);
  }

  listSites(accountId?: Id): Site[] {
    return this.#all(
      'SELECT * FROM sites WHERE (?1 IS NULL OR account_id = ?1) ORDER BY account_id, name',
      accountId ?? null,
    ).map(siteFrom);
  }

  // --- gateways -------------------------------------------------------------------------------

  upsertGateway(input: UpsertGatewayInput): Gateway {
    return this.transaction(() => {
      const site = this.findSite(input.siteId);
      if (site === undefined) throw new StorageError('not_found', `no site ${input.siteId}`);
      const existing = this.#get(
        'SELECT id FROM gateways WHERE site_id = ? AND external_id = ?',
        input.siteId,
        input.externalId,
      );
      if (existing !== undefined) {
        const id = str(existing.id);
        this.#run(
          'gateway',
          `UPDATE gateways SET name = ?, public_key = ?, endpoint = ?, updated_at = ?,
             last_seen_at = ? WHERE id = ?`,
          input.name,
          input.publicKey,
          input.endpoint ?? null,
          input.now,
          input.now,
          id,
        );
        return this.findGateway(id) as Gateway;
      }
      const id = randomUUID();
      this.#run(
        'gateway',
        `INSERT INTO gateways (id, account_id, site_id, external_id, name, public_key, endpoint,
           created_at, updated_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        id,
        site.accountId,
        site.id,
        input.externalId,
        input.name,
        input.publicKey,
        input.endpoint ?? null,
        input.now,
        input.now,
        input.now,
      );
      this.#allocate(site.accountId, 4, { gateway: id });
      this.#allocate(site.accountId, 6, { gateway: id });
      return this.findGateway(id) as Gateway;
    });
  }

  findGateway(id: Id): Gateway | undefined {
    const row = this.#get(`${GATEWAY_SELECT} WHERE g.id = ?`, id);
    return row && gatewayFrom(row);
  }

  touchGateway(id: Id, now: Millis): void {
    this.#run('gateway', 'UPDATE gateways SET last_seen_at = ? WHERE id = ?', now, id);
  }

  deleteGateway(id: Id): boolean {
    return this.#run('gateway', 'DELETE FROM gateways WHERE id = ?', id) > 0;
  }

  listGateways(accountId?: Id, siteId?: Id): Gateway[] {
    return this.#all(
      `${GATEWAY_SELECT} WHERE (?1 IS NULL OR g.account_id = ?1) AND (?2 IS NULL OR g.site_id = ?2)
       ORDER BY g.account_id, g.site_id, g.name, g.id`,
      accountId ?? null,
      siteId ?? null,
    ).map(gatewayFrom);
  }

  // --- flows ----------------------------------------------------------------------------------

  saveFlow(input: SaveFlowInput): void {
    this.transaction(() => {
      const gateway = this.#get('SELECT account_id FROM gateways WHERE id = ?', input.gatewayId);
      const device = this.#get('SELECT account_id FROM devices WHERE id = ?', input.deviceId);
      if (gateway === undefined || device === undefined) {
        throw new StorageError('not_found', 'flow: no such gateway or device');
      }
      if (str(gateway.account_id) !== str(device.account_id)) {
        throw new StorageError('invalid', 'flow: the gateway and the device are in two accounts');
      }
      this.#run(
        'flow',
        `DELETE FROM flows WHERE device_id = ? AND resource_id = ?
           AND (gateway_id <> ? OR preshared_key <> ? OR client_public_key <> ?)`,
        input.deviceId,
        input.resourceId,
        input.gatewayId,
        input.presharedKey,
        input.clientPublicKey,
      );
      this.#run(
        'flow',
        'UPDATE flows SET token_id = ?, expires_at = ? WHERE device_id = ? AND resource_id = ?',
        input.tokenId,
        input.expiresAt,
        input.deviceId,
        input.resourceId,
      );
      const domain =
        input.domain === null
          ? null
          : JSON.stringify({ name: input.domain.name, proxy_ips: input.domain.proxyIps });
      this.#run(
        'flow',
        `INSERT INTO flows (account_id, gateway_id, device_id, resource_id, token_id,
           client_public_key, preshared_key, domain_key, domain, expires_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (device_id, resource_id, domain_key) DO UPDATE SET domain = excluded.domain`,
        str(gateway.account_id),
        input.gatewayId,
        input.deviceId,
        input.resourceId,
        input.tokenId,
        input.clientPublicKey,
        input.presharedKey,
        input.domain === null ? '' : domainKey(input.domain.name),
        domain,
        input.expiresAt,
        input.now,
      );
    });
  }

  listFlows(gatewayId: Id): Flow[] {
    return this.#all(
      `SELECT f.*, d.actor_id, d.public_key AS device_public_key, a4.address AS ipv4,
         a6.address AS ipv6 FROM flows f
       JOIN devices d ON d.id = f.device_id
       JOIN tunnel_addresses a4 ON a4.device_id = d.id AND a4.family = 4
       JOIN tunnel_addresses a6 ON a6.device_id = d.id AND a6.family = 6
       WHERE f.gateway_id = ? ORDER BY f.device_id, f.resource_id, f.domain_key`,
      gatewayId,
    ).map(flowFrom);
  }

  deleteFlows(filter: FlowFilter): number {
    if ('deviceId' in filter) {
      return this.#run(
        'flow',
        `DELETE FROM flows WHERE device_id = ?1 AND (?2 IS NULL OR resource_id = ?2)
           AND (?3 IS NULL OR gateway_id = ?3)`,
        filter.deviceId,
        filter.resourceId ?? null,
        filter.gatewayId ?? null,
      );
    }
    return this.#run('flow', 'DELETE FROM flows WHERE gateway_id = ?', filter.gatewayId);
  }

  deleteExpiredFlows(now: Millis): number {
    return this.#run(
      'flow',
      'DELETE FROM flows WHERE expires_at IS NOT NULL AND expires_at <= ?',
      now,
    );
  }

  listFlowGateways(): Id[] {
    return this.#all('SELECT DISTINCT gateway_id FROM flows ORDER BY gateway_id').map((row) =>
      str(row.gateway_id),
    );
  }

  // --- resources ------------------------------------------------------------------------------

  createResource(input: CreateResourceInput): Resource {
    const address = checkResourceAddress(input.type, input.address);
    const filters = checkedFilters(input.filters);
    const id = randomUUID();
    this.#run(
      `resource ${input.name}`,
      `INSERT INTO resources (id, account_id, site_id, type, name, address, filters, created_at,
         updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      id,
      input.accountId,
      input.siteId,
      input.type,
      input.name,
      address,
      JSON.stringify(filters),
      input.now,
      input.now,
    );
    return this.findResource(id) as Resource;
  }

  updateResource(id: Id, input: UpdateResourceInput): Resource {
    const resource = this.findResource(id);
    if (resource === undefined) throw new StorageError('not_found', `no resource ${id}`);
    const type = input.type ?? resource.type;
    const address = checkResourceAddress(
      type,
      input.address === undefined ? resource.address : input.address,
    );
    const filters = checkedFilters(input.filters ?? resource.filters);
    this.#run(
      `resource ${input.name ?? resource.name}`,
      `UPDATE resources SET site_id = ?, type = ?, name = ?, address = ?, filters = ?,
         updated_at = ? WHERE id = ?`,
      input.siteId ?? resource.siteId,
      type,
      input.name ?? resource.name,
      address,
      JSON.stringify(filters),
      input.now,
      id,
    );
    return this.findResource(id) as Resource;
  }

  deleteResource(id: Id): boolean {
    return this.#run('resource', 'DELETE FROM resources WHERE id = ?', id) > 0;
  }

  findResource(id: Id): Resource | undefined {
    const row = this.#get('SELECT * FROM resources WHERE id = ?', id);
    return row && resourceFrom(row);
  }

  findResourceByName(accountId: Id, name: string): Resource | undefined {
    const row = this.#get(
      'SELECT * FROM resources WHERE account_id = ? AND name = ?',
      accountId,
      name,
    );
    return row && resourceFrom(row);
  }

  listResources(accountId?: Id, siteId?: Id): Resource[] {
    return this.#all(
      `SELECT * FROM resources WHERE (?1 IS NULL OR account_id = ?1) AND (?2 IS NULL OR site_id = ?2)
       ORDER BY account_id, name`,
      accountId ?? null,
      siteId ?? null,
    ).map(resourceFrom);
  }

  // --- groups and memberships -----------------------------------------------------------------

  createGroup(accountId: Id, name: string, now: Millis): Group {
    const id = randomUUID();
    this.#run(
      `group ${name}`,
      'INSERT INTO actor_groups (id, account_id, name, created_at, updated_at) VALUES (?, ?, ?, ?, ?)',
      id,
      accountId,
      name,
      now,
      now,
    );
    return this.findGroup(id) as Group;
  }

  renameGroup(id: Id, name: string, now: Millis): Group {
    if (
      this.#run(
        `group ${name}`,
        'UPDATE actor_groups SET name = ?, updated_at = ? WHERE id = ?',
        name,
        now,
        id,
      ) === 0
    ) {
      throw new StorageError('not_found', `no group ${id}`);
    }
    return this.findGroup(id) as Group;
  }

  deleteGroup(id: Id): boolean {
    return this.#run('group', 'DELETE FROM actor_groups WHERE id = ?', id) > 0;
  }

  findGroup(id: Id): Group | undefined {
    const row = this.#get('SELECT * FROM actor_groups WHERE id = ?', id);
    return row && groupFrom(row);
  }

  findGroupByName(accountId: Id, name: string): Group | undefined {
    const row = this.#get(
      'SELECT * FROM actor_groups WHERE account_id = ? AND name = ?',
      accountId,
      name,
    );
    return row && groupFrom(row);
  }

  listGroups(accountId?: Id): Group[] {
    return this.#all(
      'SELECT * FROM actor_groups WHERE (?1 IS NULL OR account_id = ?1) ORDER BY account_id, name',
      accountId ?? null,
    ).map(groupFrom);
  }

  addMembership(groupId: Id, actorId: Id, now: Millis): boolean {
    const group = this.findGroup(groupId);
    if (group === undefined) throw new StorageError('not_found', `no group ${groupId}`);
    return (
      this.#run(
        'membership',
        `INSERT INTO memberships (group_id, actor_id, account_id, created_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (group_id, actor_id) DO NOTHING`,
        groupId,
        actorId,
        group.accountId,
        now,
      ) > 0
    );
  }

  removeMembership(groupId: Id, actorId: Id): boolean {
    return (
      this.#run(
        'membership',
        'DELETE FROM memberships WHERE group_id = ? AND actor_id = ?',
        groupId,
        actorId,
      ) > 0
    );
  }

  listMemberships(filter: { accountId?: Id; groupId?: Id; actorId?: Id }): Membership[] {
    return this.#all(
      `SELECT * FROM memberships WHERE (?1 IS NULL OR account_id = ?1)
         AND (?2 IS NULL OR group_id = ?2) AND (?3 IS NULL OR actor_id = ?3)
       ORDER BY group_id, actor_id`,
      filter.accountId ?? null,
      filter.groupId ?? null,
      filter.actorId ?? null,
    ).map(membershipFrom);
  }

  // --- policies -------------------------------------------------------------------------------

  createPolicy(input: CreatePolicyInput): Policy {
    const group = this.findGroup(input.groupId);
    if (group === undefined) throw new StorageError('not_found', `no group ${input.groupId}`);
    const id = randomUUID();
    this.#run(
      'policy',
      `INSERT INTO policies (id, account_id, group_id, resource_id, description, created_at,
         updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
      id,
      group.accountId,
      input.groupId,
      input.resourceId,
      input.description ?? null,
      input.now,
      input.now,
    );
    return this.findPolicy(id) as Policy;
  }

  updatePolicyDescription(id: Id, description: string | null, now: Millis): Policy {
    if (
      this.#run(
        'policy',
        'UPDATE policies SET description = ?, updated_at = ? WHERE id = ?',
        description,
        now,
        id,
      ) === 0
    ) {
      throw new StorageError('not_found', `no policy ${id}`);
    }
    return this.findPolicy(id) as Policy;
  }

  deletePolicy(id: Id): boolean {
    return this.#run('policy', 'DELETE FROM policies WHERE id = ?', id) > 0;
  }

  findPolicy(id: Id): Policy | undefined {
    const row = this.#get('SELECT * FROM policies WHERE id = ?', id);
    return row && policyFrom(row);
  }

  findPolicyFor(groupId: Id, resourceId: Id): Policy | undefined {
    const row = this.#get(
      'SELECT * FROM policies WHERE group_id = ? AND resource_id = ?',
      groupId,
      resourceId,
    );
    return row && policyFrom(row);
  }

  listPolicies(accountId?: Id): Policy[] {
    return this.#all(
      `SELECT * FROM policies WHERE (?1 IS NULL OR account_id = ?1)
       ORDER BY account_id, group_id, resource_id`,
      accountId ?? null,
    ).map(policyFrom);
  }
}

function hasNul(value: SQLInputValue): boolean {
  return typeof value === 'string' && value.includes('\u0000');
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The schema version recorded in the database (0 for a new one). */
function recordedVersion(db: DatabaseSync): number {
  const row = db.prepare('SELECT max(version) AS v FROM schema_migrations').get() as Row;
  return numOrNull(row.v) ?? 0;
}

function migrate(db: DatabaseSync, migrations: Migration[], now: () => Millis): void {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`);
  const known = migrations.length;
  const recorded = recordedVersion(db);
  if (recorded > known) {
    throw new Error(
      `database schema is at version ${recorded}, newer than this portal's ${known}: upgrade the portal`,
    );
  }
  for (const migration of migrations) {
    // Checked again inside the lock: another process may have applied it meanwhile.
    db.exec('BEGIN IMMEDIATE');
    try {
      const applied = db
        .prepare('SELECT name FROM schema_migrations WHERE version = ?')
        .get(migration.version) as Row | undefined;
      if (applied === undefined) {
        db.exec(migration.sql);
        db.prepare(
          'INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)',
        ).run(migration.version, migration.name, now());
      } else if (str(applied.name) !== migration.name) {
        throw new Error(
          `migration ${migration.version} is recorded as ${str(applied.name)}, the repository has ${migration.name}`,
        );
      }
      db.exec('COMMIT');
    } catch (error) {
      db.exec('ROLLBACK');
      throw error;
    }
  }
}

/** Opens (creating if need be) the SQLite database at `path` (or ':memory:') and migrates it. */
export function openSqliteStorage(path: string, options: SqliteStorageOptions = {}): PortalStorage {
  const migrations = loadMigrations(options.migrationsDir);
  const db = new DatabaseSync(path);
  try {
    db.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? 5000))}`);
    db.exec('PRAGMA foreign_keys = ON');
    if (path !== ':memory:' && path !== '') db.exec('PRAGMA journal_mode = WAL');
    db.exec('PRAGMA synchronous = NORMAL');
    migrate(db, migrations, options.now ?? Date.now);
  } catch (error) {
    db.close();
    throw error;
  }
  return new SqliteStorage(db);
}

/** The versions recorded in a storage's database, for tests and `--help` diagnostics. */
export function appliedMigrations(path: string): { version: number; name: string }[] {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return (
      db.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all() as Row[]
    ).map((row) => ({ version: num(row.version), name: str(row.name) }));
  } finally {
    db.close();
  }
}
