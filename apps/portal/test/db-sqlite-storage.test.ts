import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, copyFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import {
  appliedMigrations,
  loadMigrations,
  MIGRATIONS_DIR,
  openSqliteStorage,
} from '../src/db/sqlite-storage.ts';
import { DEFAULT_ACCOUNT_RANGES, StorageError, type PortalStorage } from '../src/db/storage.ts';

const NOW = 1_800_000_000_000;
const KEY_A = 'A'.repeat(43) + '=';
const KEY_B = 'B'.repeat(43) + '=';
const HASH = (c: string) => c.repeat(64);

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-portal-db-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function memory(t: { after: (fn: () => void) => void }): PortalStorage {
  const storage = openSqliteStorage(':memory:');
  t.after(() => storage.close());
  return storage;
}

function code(error: unknown): string | undefined {
  return error instanceof StorageError ? error.code : undefined;
}

/** A small world: account, user, service account, site, resource, group, membership, policy. */
function world(storage: PortalStorage) {
  const account = storage.createAccount({ slug: 'acme', name: 'Acme', now: NOW });
  const user = storage.createActor({
    accountId: account.id,
    kind: 'user',
    name: 'alice',
    email: 'alice@example.com',
    now: NOW,
  });
  const robot = storage.createActor({
    accountId: account.id,
    kind: 'service_account',
    name: 'ci',
    now: NOW,
  });
  const site = storage.createSite(account.id, 'office', NOW);
  const resource = storage.createResource({
    accountId: account.id,
    siteId: site.id,
    type: 'cidr',
    name: 'lan',
    address: '10.0.0.0/24',
    filters: [{ protocol: 'tcp', ports: [{ from: 443, to: 443 }] }],
    now: NOW,
  });
  const group = storage.createGroup(account.id, 'staff', NOW);
  storage.addMembership(group.id, user.id, NOW);
  const policy = storage.createPolicy({ groupId: group.id, resourceId: resource.id, now: NOW });
  return { account, user, robot, site, resource, group, policy };
}

void test('migrations: applied once, in order, recorded; reopening applies nothing again', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'portal.sqlite');
  const migrations = loadMigrations();
  assert.ok(migrations.length >= 1);
  assert.equal(migrations[0]?.version, 1);

  const first = openSqliteStorage(path, { now: () => 111 });
  const { account } = world(first);
  first.close();
  const recorded = appliedMigrations(path);
  assert.deepEqual(
    recorded,
    migrations.map((m) => ({ version: m.version, name: m.name })),
  );

  const second = openSqliteStorage(path, { now: () => 222 });
  assert.equal(second.findAccount(account.id)?.slug, 'acme');
  second.close();
  const db = new DatabaseSync(path, { readOnly: true });
  const rows = db.prepare('SELECT version, applied_at FROM schema_migrations').all();
  const mode = db.prepare('PRAGMA journal_mode').get() as { journal_mode: string };
  db.close();
  assert.deepEqual(
    rows.map((r) => r.applied_at),
    migrations.map(() => 111),
    'the second open applied nothing',
  );
  assert.equal(mode.journal_mode, 'wal');
});

void test('migrations: a newer database is refused; a gap or a misnamed file is refused', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'portal.sqlite');
  openSqliteStorage(path).close();
  const db = new DatabaseSync(path);
  db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(
    99,
    '0099-future.sql',
    1,
  );
  db.close();
  assert.throws(() => openSqliteStorage(path), /newer than this portal/);

  const gap = join(dir, 'gap');
  mkdirSync(gap);
  copyFileSync(join(MIGRATIONS_DIR, '0001-initial.sql'), join(gap, '0001-initial.sql'));
  writeFileSync(join(gap, '0003-later.sql'), 'SELECT 1;');
  assert.throws(() => loadMigrations(gap), /expected version 2/);
  const bad = join(dir, 'bad');
  mkdirSync(bad);
  writeFileSync(join(bad, 'initial.sql'), 'SELECT 1;');
  assert.throws(() => loadMigrations(bad), /NNNN-name\.sql/);
});

void test('migrations: a failing migration leaves nothing of itself behind', (t) => {
  const dir = tempDir(t);
  const migrations = join(dir, 'migrations');
  mkdirSync(migrations);
  copyFileSync(join(MIGRATIONS_DIR, '0001-initial.sql'), join(migrations, '0001-initial.sql'));
  writeFileSync(
    join(migrations, '0002-broken.sql'),
    'CREATE TABLE half (x INTEGER);\nTHIS IS NOT SQL;',
  );
  const path = join(dir, 'portal.sqlite');
  assert.throws(() => openSqliteStorage(path, { migrationsDir: migrations }));
  const db = new DatabaseSync(path, { readOnly: true });
  const tables = db
    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'half'")
    .all();
  const versions = db.prepare('SELECT version FROM schema_migrations').all();
  db.close();
  assert.equal(tables.length, 0);
  assert.deepEqual(
    versions.map((v) => v.version),
    [1],
  );
});

void test('accounts: defaults, configured ranges, refusals, lookups', (t) => {
  const storage = memory(t);
  const a = storage.createAccount({ slug: 'acme', name: 'Acme', now: NOW });
  assert.deepEqual(a.ranges, DEFAULT_ACCOUNT_RANGES);
  assert.equal(a.createdAt, NOW);
  const b = storage.createAccount({
    slug: 'other',
    name: 'Other',
    ranges: { tunnelIpv4: '10.200.0.0/16', tunnelIpv6: 'FD12:3456::/64' },
    now: NOW,
  });
  assert.equal(b.ranges.tunnelIpv4, '10.200.0.0/16');
  assert.equal(b.ranges.tunnelIpv6, 'fd12:3456::/64', 'stored in canonical text');
  assert.equal(b.ranges.proxyIpv4, DEFAULT_ACCOUNT_RANGES.proxyIpv4);
  assert.equal(storage.findAccountBySlug('other')?.id, b.id);
  assert.equal(storage.findAccountBySlug('nobody'), undefined);
  assert.deepEqual(
    storage.listAccounts().map((x) => x.slug),
    ['acme', 'other'],
  );

  const refusals: [string, () => unknown, string][] = [
    ['dup slug', () => storage.createAccount({ slug: 'acme', name: 'x', now: NOW }), 'conflict'],
    ['bad slug', () => storage.createAccount({ slug: '-x', name: 'x', now: NOW }), 'invalid'],
    [
      'v6 as v4',
      () =>
        storage.createAccount({
          slug: 'c',
          name: 'c',
          ranges: { tunnelIpv4: 'fd00::/64' },
          now: NOW,
        }),
      'invalid',
    ],
    [
      'host bits',
      () =>
        storage.createAccount({
          slug: 'c',
          name: 'c',
          ranges: { tunnelIpv4: '10.0.0.1/24' },
          now: NOW,
        }),
      'invalid',
    ],
    [
      'overlap',
      () =>
        storage.createAccount({
          slug: 'c',
          name: 'c',
          ranges: { tunnelIpv4: '100.96.0.0/12' },
          now: NOW,
        }),
      'invalid',
    ],
    [
      'too small',
      () =>
        storage.createAccount({
          slug: 'c',
          name: 'c',
          ranges: { tunnelIpv4: '10.0.0.0/31' },
          now: NOW,
        }),
      'invalid',
    ],
  ];
  for (const [label, fn, expected] of refusals) {
    assert.throws(fn, (e: unknown) => code(e) === expected, label);
  }
  assert.equal(storage.listAccounts().length, 2, 'refusals changed nothing');

  const renamed = storage.updateAccount(a.id, { name: 'Acme Inc', now: NOW + 1 });
  assert.equal(renamed.name, 'Acme Inc');
  assert.equal(renamed.updatedAt, NOW + 1);
  assert.equal(storage.deleteAccount(b.id), true);
  assert.equal(storage.deleteAccount(b.id), false);
});

void test('actors and password identities', (t) => {
  const storage = memory(t);
  const { account, user, robot } = world(storage);
  assert.equal(storage.findActorByEmail(account.id, 'alice@example.com')?.id, user.id);
  assert.equal(storage.findActorByName(account.id, 'ci')?.id, robot.id);
  assert.equal(robot.email, null);
  assert.deepEqual(
    storage.listActors(account.id, 'user').map((a) => a.name),
    ['alice'],
  );
  assert.equal(storage.listActors().length, 2);
  assert.throws(
    () => storage.createActor({ accountId: account.id, kind: 'user', name: 'alice', now: NOW }),
    (e: unknown) => code(e) === 'conflict',
  );
  assert.throws(
    () =>
      storage.createActor({
        accountId: account.id,
        kind: 'user',
        name: 'alice2',
        email: 'alice@example.com',
        now: NOW,
      }),
    (e: unknown) => code(e) === 'conflict',
  );
  assert.throws(
    () => storage.createActor({ accountId: 'nope', kind: 'user', name: 'x', now: NOW }),
    (e: unknown) => code(e) === 'not_found',
  );
  assert.throws(
    () =>
      storage.createActor({
        accountId: account.id,
        kind: 'service_account',
        name: 'x',
        email: 'x@y',
        now: NOW,
      }),
    (e: unknown) => code(e) === 'invalid',
  );

  const disabled = storage.updateActor(user.id, { disabled: true, now: NOW + 5 });
  assert.equal(disabled.disabledAt, NOW + 5);
  assert.equal(storage.updateActor(user.id, { disabled: true, now: NOW + 9 }).disabledAt, NOW + 5);
  assert.equal(storage.updateActor(user.id, { disabled: false, now: NOW + 9 }).disabledAt, null);
  assert.equal(storage.updateActor(user.id, { email: null, now: NOW }).email, null);

  const identity = storage.setPasswordIdentity(user.id, 'scrypt$1$2$3$a$b', NOW);
  assert.equal(identity.passwordHash, 'scrypt$1$2$3$a$b');
  const replaced = storage.setPasswordIdentity(user.id, 'scrypt$x', NOW + 1);
  assert.equal(replaced.passwordHash, 'scrypt$x');
  assert.equal(replaced.createdAt, NOW);
  assert.equal(replaced.updatedAt, NOW + 1);
  assert.throws(
    () => storage.setPasswordIdentity(robot.id, 'scrypt$x', NOW),
    (e: unknown) => code(e) === 'invalid',
  );
  assert.equal(storage.deletePasswordIdentity(user.id), true);
  assert.equal(storage.findPasswordIdentity(user.id), undefined);
});

void test('tokens: create, find, revoke once, mark used, list, kind rules', (t) => {
  const storage = memory(t);
  const { account, user, robot, site } = world(storage);
  const client = storage.createToken({
    id: 'id-client',
    accountId: account.id,
    kind: 'browser_client',
    actorId: user.id,
    hash: HASH('a'),
    expiresAt: NOW + 1000,
    now: NOW,
  });
  assert.deepEqual(client, {
    id: 'id-client',
    accountId: account.id,
    kind: 'browser_client',
    actorId: user.id,
    siteId: null,
    hash: HASH('a'),
    createdAt: NOW,
    expiresAt: NOW + 1000,
    revokedAt: null,
    lastUsedAt: null,
  });
  storage.createToken({
    id: 'id-gw',
    accountId: account.id,
    kind: 'gateway',
    siteId: site.id,
    hash: HASH('b'),
    expiresAt: null,
    now: NOW + 1,
  });
  storage.createToken({
    id: 'id-sa',
    accountId: account.id,
    kind: 'service_account',
    actorId: robot.id,
    hash: HASH('c'),
    expiresAt: null,
    now: NOW + 2,
  });
  const bad: [string, () => unknown][] = [
    [
      'gateway with actor',
      () =>
        storage.createToken({
          id: 'x',
          accountId: account.id,
          kind: 'gateway',
          siteId: site.id,
          actorId: user.id,
          hash: HASH('d'),
          expiresAt: null,
          now: NOW,
        }),
    ],
    [
      'client without actor',
      () =>
        storage.createToken({
          id: 'x',
          accountId: account.id,
          kind: 'headless_client',
          hash: HASH('d'),
          expiresAt: null,
          now: NOW,
        }),
    ],
    [
      'bad hash',
      () =>
        storage.createToken({
          id: 'x',
          accountId: account.id,
          kind: 'headless_client',
          actorId: user.id,
          hash: 'xyz',
          expiresAt: null,
          now: NOW,
        }),
    ],
  ];
  for (const [label, fn] of bad) assert.throws(fn, (e: unknown) => code(e) === 'invalid', label);
  assert.throws(
    () =>
      storage.createToken({
        id: 'id-client',
        accountId: account.id,
        kind: 'headless_client',
        actorId: user.id,
        hash: HASH('e'),
        expiresAt: null,
        now: NOW,
      }),
    (e: unknown) => code(e) === 'conflict',
  );
  // An actor of another account cannot be named.
  const other = storage.createAccount({ slug: 'other', name: 'Other', now: NOW });
  assert.throws(
    () =>
      storage.createToken({
        id: 'x',
        accountId: other.id,
        kind: 'headless_client',
        actorId: user.id,
        hash: HASH('f'),
        expiresAt: null,
        now: NOW,
      }),
    (e: unknown) => code(e) === 'not_found',
  );

  storage.markTokenUsed('id-client', NOW + 7);
  assert.equal(storage.findToken('id-client')?.lastUsedAt, NOW + 7);
  assert.equal(storage.revokeToken('id-client', NOW + 8), true);
  assert.equal(storage.revokeToken('id-client', NOW + 9), false);
  assert.equal(storage.findToken('id-client')?.revokedAt, NOW + 8);
  assert.equal(storage.revokeToken('nope', NOW), false);
  assert.deepEqual(
    storage.listTokens().map((x) => x.id),
    ['id-client', 'id-gw', 'id-sa'],
  );
  assert.deepEqual(
    storage.listTokens({ activeOnly: true, now: NOW }).map((x) => x.id),
    ['id-gw', 'id-sa'],
  );
  assert.deepEqual(
    storage.listTokens({ siteId: site.id }).map((x) => x.id),
    ['id-gw'],
  );
  assert.deepEqual(
    storage.listTokens({ kind: 'service_account', actorId: robot.id }).map((x) => x.id),
    ['id-sa'],
  );
});

void test('devices: upsert on join keeps addresses, updates key and name; no two alike', (t) => {
  const storage = memory(t);
  const { account, user, robot } = world(storage);
  const d1 = storage.upsertDevice({
    accountId: account.id,
    actorId: user.id,
    externalId: 'laptop',
    name: 'Laptop',
    publicKey: KEY_A,
    now: NOW,
    remoteAddress: '192.0.2.1',
  });
  assert.equal(d1.ipv4, '100.64.0.1');
  assert.equal(d1.ipv6, 'fd00:2021:1111::1');
  assert.equal(d1.lastSeenAt, NOW);
  const again = storage.upsertDevice({
    accountId: account.id,
    actorId: user.id,
    externalId: 'laptop',
    name: 'Laptop 2',
    publicKey: KEY_B,
    now: NOW + 10,
  });
  assert.equal(again.id, d1.id);
  assert.equal(again.ipv4, d1.ipv4);
  assert.equal(again.publicKey, KEY_B);
  assert.equal(again.name, 'Laptop 2');
  assert.equal(again.lastSeenAt, NOW + 10);
  assert.equal(again.lastSeenRemoteAddress, '192.0.2.1');
  storage.touchDevice(d1.id, NOW + 20, '198.51.100.7');
  assert.equal(storage.findDevice(d1.id)?.lastSeenAt, NOW + 20);
  assert.equal(storage.findDevice(d1.id)?.lastSeenRemoteAddress, '198.51.100.7');
  const d2 = storage.upsertDevice({
    accountId: account.id,
    actorId: robot.id,
    externalId: 'laptop',
    name: 'CI',
    publicKey: KEY_A,
    now: NOW,
  });
  assert.notEqual(d2.id, d1.id);
  assert.equal(d2.ipv4, '100.64.0.2');
  assert.equal(storage.findDeviceByExternalId(account.id, robot.id, 'laptop')?.id, d2.id);
  assert.deepEqual(
    storage.listDevices(account.id, user.id).map((d) => d.id),
    [d1.id],
  );
  assert.equal(storage.listDevices().length, 2);
  assert.throws(
    () =>
      storage.upsertDevice({
        accountId: 'nope',
        actorId: user.id,
        externalId: 'x',
        name: 'x',
        publicKey: KEY_A,
        now: NOW,
      }),
    (e: unknown) => code(e) === 'not_found',
  );
  assert.equal(storage.listDevices().length, 2, 'a refused upsert leaves nothing');
});

void test('addresses: allocated without collisions, gaps reused when the range is full, exhaustion refused', (t) => {
  const storage = memory(t);
  // /29: host indexes 1..6 for IPv4 (no network, no broadcast); /125: 1..7 for IPv6.
  const account = storage.createAccount({
    slug: 'tiny',
    name: 'Tiny',
    ranges: { tunnelIpv4: '10.9.0.0/29', tunnelIpv6: 'fd00:9::/125' },
    now: NOW,
  });
  const actor = storage.createActor({ accountId: account.id, kind: 'user', name: 'u', now: NOW });
  const site = storage.createSite(account.id, 's', NOW);
  const gw = storage.upsertGateway({
    siteId: site.id,
    externalId: 'gw1',
    name: 'gw1',
    publicKey: KEY_A,
    endpoint: '203.0.113.1:51820',
    now: NOW,
  });
  assert.equal(gw.ipv4, '10.9.0.1');
  const devices = [];
  for (let i = 0; i < 5; i++) {
    devices.push(
      storage.upsertDevice({
        accountId: account.id,
        actorId: actor.id,
        externalId: `d${i}`,
        name: `d${i}`,
        publicKey: KEY_B,
        now: NOW + i,
      }),
    );
  }
  const all = [gw.ipv4, ...devices.map((d) => d.ipv4)];
  assert.deepEqual(all, ['10.9.0.1', '10.9.0.2', '10.9.0.3', '10.9.0.4', '10.9.0.5', '10.9.0.6']);
  assert.equal(new Set(devices.map((d) => d.ipv6).concat(gw.ipv6)).size, 6);
  assert.throws(
    () =>
      storage.upsertDevice({
        accountId: account.id,
        actorId: actor.id,
        externalId: 'full',
        name: 'full',
        publicKey: KEY_B,
        now: NOW,
      }),
    (e: unknown) => code(e) === 'range_exhausted',
  );
  assert.equal(storage.findDeviceByExternalId(account.id, actor.id, 'full'), undefined);
  // Free one in the middle: the next device gets it.
  assert.equal(storage.deleteDevice(devices[1]!.id), true);
  const reuse = storage.upsertDevice({
    accountId: account.id,
    actorId: actor.id,
    externalId: 'reuse',
    name: 'reuse',
    publicKey: KEY_B,
    now: NOW,
  });
  assert.equal(reuse.ipv4, devices[1]!.ipv4);

  // Another account's range is its own: the same addresses may repeat there, not within one.
  const other = storage.createAccount({
    slug: 'other',
    name: 'Other',
    ranges: { tunnelIpv4: '10.9.0.0/29', tunnelIpv6: 'fd00:9::/125' },
    now: NOW,
  });
  const otherActor = storage.createActor({
    accountId: other.id,
    kind: 'user',
    name: 'u',
    now: NOW,
  });
  const od = storage.upsertDevice({
    accountId: other.id,
    actorId: otherActor.id,
    externalId: 'x',
    name: 'x',
    publicKey: KEY_A,
    now: NOW,
  });
  assert.equal(od.ipv4, '10.9.0.1');

  // Changing the tunnel range renumbers everyone into it, oldest first.
  storage.updateAccount(account.id, { ranges: { tunnelIpv4: '10.10.0.0/24' }, now: NOW + 100 });
  const renumbered = [
    storage.findGateway(gw.id)!.ipv4,
    ...storage.listDevices(account.id).map((d) => d.ipv4),
  ];
  assert.ok(
    renumbered.every((a) => a.startsWith('10.10.0.')),
    renumbered.join(' '),
  );
  assert.equal(new Set(renumbered).size, renumbered.length);
  assert.equal(storage.findGateway(gw.id)!.ipv6, gw.ipv6, 'IPv6 untouched');
});

void test('addresses: many devices, all distinct, within the range', (t) => {
  const storage = memory(t);
  const account = storage.createAccount({ slug: 'big', name: 'Big', now: NOW });
  const actor = storage.createActor({ accountId: account.id, kind: 'user', name: 'u', now: NOW });
  const seen4 = new Set<string>();
  const seen6 = new Set<string>();
  storage.transaction(() => {
    for (let i = 0; i < 300; i++) {
      const d = storage.upsertDevice({
        accountId: account.id,
        actorId: actor.id,
        externalId: `d${i}`,
        name: 'd',
        publicKey: KEY_A,
        now: NOW,
      });
      seen4.add(d.ipv4);
      seen6.add(d.ipv6);
    }
  });
  assert.equal(seen4.size, 300);
  assert.equal(seen6.size, 300);
  assert.ok([...seen4].every((a) => a.startsWith('100.64.')));
  assert.ok(seen4.has('100.64.1.44'), '300th is 100.64.1.44');
});

void test('sites, gateways, resources, groups, memberships, policies', (t) => {
  const storage = memory(t);
  const { account, user, robot, site, resource, group, policy } = world(storage);
  assert.equal(storage.findSiteByName(account.id, 'office')?.id, site.id);
  assert.equal(storage.renameSite(site.id, 'hq', NOW + 1).name, 'hq');
  assert.throws(
    () => storage.createSite(account.id, 'hq', NOW),
    (e: unknown) => code(e) === 'conflict',
  );

  const gw = storage.upsertGateway({
    siteId: site.id,
    externalId: 'g',
    name: 'gw',
    publicKey: KEY_A,
    now: NOW,
  });
  assert.equal(gw.endpoint, null);
  const gw2 = storage.upsertGateway({
    siteId: site.id,
    externalId: 'g',
    name: 'gw',
    publicKey: KEY_B,
    endpoint: '[2001:db8::1]:51820',
    now: NOW + 3,
  });
  assert.equal(gw2.id, gw.id);
  assert.equal(gw2.publicKey, KEY_B);
  assert.equal(gw2.endpoint, '[2001:db8::1]:51820');
  assert.equal(gw2.ipv4, gw.ipv4);
  storage.touchGateway(gw.id, NOW + 50);
  assert.equal(storage.findGateway(gw.id)?.lastSeenAt, NOW + 50);
  assert.deepEqual(
    storage.listGateways(account.id, site.id).map((g) => g.id),
    [gw.id],
  );

  assert.deepEqual(resource.filters, [{ protocol: 'tcp', ports: [{ from: 443, to: 443 }] }]);
  const dns = storage.createResource({
    accountId: account.id,
    siteId: site.id,
    type: 'dns',
    name: 'wiki',
    address: '*.wiki.example.com',
    now: NOW,
  });
  assert.deepEqual(dns.filters, []);
  const internet = storage.createResource({
    accountId: account.id,
    siteId: site.id,
    type: 'internet',
    name: 'Internet',
    address: null,
    now: NOW,
  });
  assert.equal(internet.address, null);
  const cidrNormal = storage.createResource({
    accountId: account.id,
    siteId: site.id,
    type: 'cidr',
    name: 'v6',
    address: '2001:DB8::5/64',
    filters: [
      {
        protocol: 'udp',
        ports: [
          { from: 60, to: 70 },
          { from: 53, to: 53 },
        ],
      },
      { protocol: 'icmp' },
    ],
    now: NOW,
  });
  assert.equal(cidrNormal.address, '2001:db8::/64');
  assert.deepEqual(cidrNormal.filters, [
    {
      protocol: 'udp',
      ports: [
        { from: 53, to: 53 },
        { from: 60, to: 70 },
      ],
    },
    { protocol: 'icmp' },
  ]);
  const badResources: [string, () => unknown][] = [
    [
      'internet with address',
      () =>
        storage.createResource({
          accountId: account.id,
          siteId: site.id,
          type: 'internet',
          name: 'i2',
          address: '0.0.0.0/0',
          now: NOW,
        }),
    ],
    [
      'cidr without',
      () =>
        storage.createResource({
          accountId: account.id,
          siteId: site.id,
          type: 'cidr',
          name: 'c2',
          address: null,
          now: NOW,
        }),
    ],
    [
      'cidr garbage',
      () =>
        storage.createResource({
          accountId: account.id,
          siteId: site.id,
          type: 'cidr',
          name: 'c3',
          address: '10.0.0.0/33',
          now: NOW,
        }),
    ],
    [
      'icmp ports',
      () =>
        storage.createResource({
          accountId: account.id,
          siteId: site.id,
          type: 'dns',
          name: 'd2',
          address: 'x',
          filters: [{ protocol: 'icmp', ports: [{ from: 1, to: 2 }] }],
          now: NOW,
        }),
    ],
    [
      'port 0',
      () =>
        storage.createResource({
          accountId: account.id,
          siteId: site.id,
          type: 'dns',
          name: 'd3',
          address: 'x',
          filters: [{ protocol: 'tcp', ports: [{ from: 0, to: 2 }] }],
          now: NOW,
        }),
    ],
    [
      'reversed',
      () =>
        storage.createResource({
          accountId: account.id,
          siteId: site.id,
          type: 'dns',
          name: 'd4',
          address: 'x',
          filters: [{ protocol: 'tcp', ports: [{ from: 9, to: 2 }] }],
          now: NOW,
        }),
    ],
  ];
  for (const [label, fn] of badResources)
    assert.throws(fn, (e: unknown) => code(e) === 'invalid', label);
  const updated = storage.updateResource(dns.id, {
    address: 'wiki.example.com',
    filters: [{ protocol: 'tcp' }],
    now: NOW + 1,
  });
  assert.equal(updated.address, 'wiki.example.com');
  assert.equal(updated.type, 'dns');
  assert.deepEqual(updated.filters, [{ protocol: 'tcp' }]);
  assert.equal(storage.findResourceByName(account.id, 'wiki')?.id, dns.id);
  assert.equal(storage.listResources(account.id, site.id).length, 4);

  assert.equal(storage.addMembership(group.id, user.id, NOW), false, 'already a member');
  assert.equal(storage.addMembership(group.id, robot.id, NOW), true);
  assert.deepEqual(
    storage
      .listMemberships({ groupId: group.id })
      .map((m) => m.actorId)
      .sort(),
    [user.id, robot.id].sort(),
  );
  assert.deepEqual(
    storage.listMemberships({ actorId: robot.id }).map((m) => m.groupId),
    [group.id],
  );
  assert.equal(storage.removeMembership(group.id, robot.id), true);
  assert.equal(storage.removeMembership(group.id, robot.id), false);
  assert.equal(storage.renameGroup(group.id, 'everyone', NOW).name, 'everyone');
  assert.equal(storage.findGroupByName(account.id, 'everyone')?.id, group.id);

  assert.equal(storage.findPolicyFor(group.id, resource.id)?.id, policy.id);
  assert.throws(
    () => storage.createPolicy({ groupId: group.id, resourceId: resource.id, now: NOW }),
    (e: unknown) => code(e) === 'conflict',
  );
  assert.equal(
    storage.updatePolicyDescription(policy.id, 'staff to lan', NOW).description,
    'staff to lan',
  );
  // A resource of another account cannot be named in a policy or a membership.
  const other = storage.createAccount({ slug: 'other', name: 'Other', now: NOW });
  const otherSite = storage.createSite(other.id, 's', NOW);
  const otherRes = storage.createResource({
    accountId: other.id,
    siteId: otherSite.id,
    type: 'internet',
    name: 'i',
    address: null,
    now: NOW,
  });
  const otherActor = storage.createActor({
    accountId: other.id,
    kind: 'user',
    name: 'bob',
    now: NOW,
  });
  assert.throws(
    () => storage.createPolicy({ groupId: group.id, resourceId: otherRes.id, now: NOW }),
    (e: unknown) => code(e) === 'not_found',
  );
  assert.throws(
    () => storage.addMembership(group.id, otherActor.id, NOW),
    (e: unknown) => code(e) === 'not_found',
  );
  assert.throws(
    () =>
      storage.createResource({
        accountId: account.id,
        siteId: otherSite.id,
        type: 'internet',
        name: 'x',
        address: null,
        now: NOW,
      }),
    (e: unknown) => code(e) === 'not_found',
  );
  assert.equal(storage.listPolicies(account.id).length, 1);
  assert.equal(storage.deletePolicy(policy.id), true);
  assert.equal(storage.findPolicy(policy.id), undefined);
});

void test('foreign keys: deleting a row deletes what hangs off it', (t) => {
  const storage = memory(t);
  const { account, user, site, resource, group, policy } = world(storage);
  storage.setPasswordIdentity(user.id, 'scrypt$x', NOW);
  storage.createToken({
    id: 'tok-user',
    accountId: account.id,
    kind: 'headless_client',
    actorId: user.id,
    hash: HASH('1'),
    expiresAt: null,
    now: NOW,
  });
  storage.createToken({
    id: 'tok-gw',
    accountId: account.id,
    kind: 'gateway',
    siteId: site.id,
    hash: HASH('2'),
    expiresAt: null,
    now: NOW,
  });
  const device = storage.upsertDevice({
    accountId: account.id,
    actorId: user.id,
    externalId: 'x',
    name: 'x',
    publicKey: KEY_A,
    now: NOW,
  });
  const gw = storage.upsertGateway({
    siteId: site.id,
    externalId: 'g',
    name: 'g',
    publicKey: KEY_B,
    now: NOW,
  });

  // The resource goes: its policy with it.
  storage.deleteResource(resource.id);
  assert.equal(storage.findPolicy(policy.id), undefined);
  // The actor goes: identity, token, device, membership and its addresses with it.
  storage.deleteActor(user.id);
  assert.equal(storage.findPasswordIdentity(user.id), undefined);
  assert.equal(storage.findToken('tok-user'), undefined);
  assert.equal(storage.findDevice(device.id), undefined);
  assert.deepEqual(storage.listMemberships({ groupId: group.id }), []);
  // Its address is free again: the next device gets it.
  const robot = storage.findActorByName(account.id, 'ci')!;
  const next = storage.upsertDevice({
    accountId: account.id,
    actorId: robot.id,
    externalId: 'y',
    name: 'y',
    publicKey: KEY_A,
    now: NOW,
  });
  assert.notEqual(next.ipv4, gw.ipv4);
  // The site goes: its gateways, their token, its resources.
  storage.createResource({
    accountId: account.id,
    siteId: site.id,
    type: 'internet',
    name: 'i',
    address: null,
    now: NOW,
  });
  storage.deleteSite(site.id);
  assert.equal(storage.findGateway(gw.id), undefined);
  assert.equal(storage.findToken('tok-gw'), undefined);
  assert.deepEqual(storage.listResources(account.id), []);
  // The account goes: everything.
  storage.deleteAccount(account.id);
  assert.deepEqual(storage.listActors(), []);
  assert.deepEqual(storage.listGroups(), []);
  assert.deepEqual(storage.listDevices(), []);
  assert.deepEqual(storage.listTokens(), []);
});

const HOSTILE = [
  "'; DROP TABLE accounts; --",
  'Robert"); DELETE FROM actors; --',
  "x' OR '1'='1",
  '%_\\ percent underscore backslash',
  '😀 ünïcødé ‮rtl',
  '?1 :name $x @y',
  ' leading and trailing ',
];

void test('SQL metacharacters in every text field are stored and read back verbatim', (t) => {
  const storage = memory(t);
  for (const [i, text] of HOSTILE.entries()) {
    const account = storage.createAccount({ slug: `acct${i}`, name: text, now: NOW });
    const user = storage.createActor({
      accountId: account.id,
      kind: 'user',
      name: text,
      email: text,
      now: NOW,
    });
    const robot = storage.createActor({
      accountId: account.id,
      kind: 'service_account',
      name: `${text}-sa`,
      now: NOW,
    });
    storage.setPasswordIdentity(user.id, text, NOW);
    const site = storage.createSite(account.id, text, NOW);
    const group = storage.createGroup(account.id, text, NOW);
    const resource = storage.createResource({
      accountId: account.id,
      siteId: site.id,
      type: 'dns',
      name: text,
      address: text,
      now: NOW,
    });
    const policy = storage.createPolicy({
      groupId: group.id,
      resourceId: resource.id,
      description: text,
      now: NOW,
    });
    storage.createToken({
      id: text,
      accountId: account.id,
      kind: 'service_account',
      actorId: robot.id,
      hash: HASH(String(i)),
      expiresAt: null,
      now: NOW,
    });
    const device = storage.upsertDevice({
      accountId: account.id,
      actorId: user.id,
      externalId: text,
      name: text,
      publicKey: text,
      remoteAddress: text,
      now: NOW,
    });
    const gw = storage.upsertGateway({
      siteId: site.id,
      externalId: text,
      name: text,
      publicKey: text,
      endpoint: text,
      now: NOW,
    });

    assert.equal(storage.findAccount(account.id)?.name, text);
    assert.equal(storage.findActorByName(account.id, text)?.id, user.id);
    assert.equal(storage.findActorByEmail(account.id, text)?.email, text);
    assert.equal(storage.findPasswordIdentity(user.id)?.passwordHash, text);
    assert.equal(storage.findSiteByName(account.id, text)?.name, text);
    assert.equal(storage.findGroupByName(account.id, text)?.name, text);
    const r = storage.findResourceByName(account.id, text);
    assert.equal(r?.name, text);
    assert.equal(r?.address, text);
    assert.equal(storage.findPolicy(policy.id)?.description, text);
    assert.equal(storage.findToken(text)?.id, text);
    const d = storage.findDeviceByExternalId(account.id, user.id, text);
    assert.deepEqual(
      [d?.externalId, d?.name, d?.publicKey, d?.lastSeenRemoteAddress],
      [text, text, text, text],
    );
    assert.equal(d?.id, device.id);
    const g = storage.findGateway(gw.id);
    assert.deepEqual([g?.externalId, g?.name, g?.publicKey, g?.endpoint], [text, text, text, text]);
  }
  assert.equal(storage.listAccounts().length, HOSTILE.length, 'no table was dropped');
  assert.equal(storage.listActors().length, HOSTILE.length * 2);
  assert.equal(storage.findAccountBySlug("x' OR '1'='1"), undefined);
  assert.equal(storage.findActorByName(storage.listAccounts()[0]!.id, "x' OR '1'='1"), undefined);
});

void test('text with a NUL is refused, and no lookup with one matches', (t) => {
  const storage = memory(t);
  const account = storage.createAccount({ slug: 'acme', name: 'Acme', now: NOW });
  storage.createActor({ accountId: account.id, kind: 'user', name: 'alice', now: NOW });
  assert.equal(storage.findAccountBySlug('acme\u0000evil'), undefined);
  assert.equal(storage.findActorByName(account.id, 'alice\u0000'), undefined);
  assert.deepEqual(storage.listActors(account.id + '\u0000'), []);
  assert.throws(
    () =>
      storage.createActor({ accountId: account.id, kind: 'user', name: 'bob\u0000x', now: NOW }),
    (e: unknown) => code(e) === 'invalid',
  );
  assert.equal(storage.listActors().length, 1);
});

void test('transaction: commits together, rolls back on throw, nested is a savepoint', (t) => {
  const storage = memory(t);
  assert.throws(
    () =>
      storage.transaction(() => {
        storage.createAccount({ slug: 'a', name: 'a', now: NOW });
        throw new Error('boom');
      }),
    /boom/,
  );
  assert.equal(storage.listAccounts().length, 0);
  storage.transaction(() => {
    storage.createAccount({ slug: 'a', name: 'a', now: NOW });
    assert.throws(() =>
      storage.transaction(() => {
        storage.createAccount({ slug: 'b', name: 'b', now: NOW });
        throw new Error('inner');
      }),
    );
    storage.createAccount({ slug: 'c', name: 'c', now: NOW });
  });
  assert.deepEqual(
    storage.listAccounts().map((a) => a.slug),
    ['a', 'c'],
  );
  assert.throws(
    () => storage.transaction(() => Promise.resolve(1) as unknown as number),
    (e: unknown) => code(e) === 'invalid',
  );
  assert.equal(storage.listAccounts().length, 2);
});

void test('dataVersion: moves when another connection commits, not for our own', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'portal.sqlite');
  const serve = openSqliteStorage(path);
  const cli = openSqliteStorage(path);
  t.after(() => {
    serve.close();
    cli.close();
  });
  const v0 = serve.dataVersion();
  serve.createAccount({ slug: 'own', name: 'own', now: NOW });
  assert.equal(serve.dataVersion(), v0, 'own commit');
  cli.createAccount({ slug: 'theirs', name: 'theirs', now: NOW });
  const v1 = serve.dataVersion();
  assert.notEqual(v1, v0);
  assert.equal(serve.findAccountBySlug('theirs')?.name, 'theirs');
  assert.equal(serve.dataVersion(), v1, 'no change, no move');
});
