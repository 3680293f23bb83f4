import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { applyFile, ApplyError, parseApplyText } from '../src/apply/index.ts';
import { openSqliteStorage } from '../src/db/sqlite-storage.ts';
import type { PortalStorage } from '../src/db/storage.ts';
import { verifyPassword } from '../src/http/passwords.ts';

const NOW = 1_800_000_000_000;
const fakeHash = (password: string) => `fake$${password.length}`;

const FILE = `
accounts:
  - slug: acme
    name: Acme Inc.
    ranges:
      tunnelIpv4: 10.77.0.0/16
    users:
      - name: alice
        email: alice@example.com
        password: correct horse battery
      - name: bob
        disabled: true
    serviceAccounts:
      - name: ci
    sites:
      - name: office
      - name: cloud
    resources:
      - name: lan
        type: cidr
        address: 10.0.0.0/24
        site: office
        filters:
          - protocol: tcp
            ports: [443, "8000-8100", { from: 22, to: 22 }]
          - protocol: icmp
      - name: wiki
        type: dns
        address: "*.Wiki.Example.com"
        site: cloud
      - name: internet
        type: internet
        site: cloud
    groups:
      - name: staff
        members: [alice, bob]
      - name: deploy
        members: [ci]
    policies:
      - group: staff
        resource: lan
        description: staff reach the LAN
      - group: staff
        resource: wiki
      - group: deploy
        resource: internet
`;

function tempDb(t: { after: (fn: () => void) => void }): { path: string; storage: PortalStorage } {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-apply-'));
  const path = join(dir, 'portal.sqlite');
  const storage = openSqliteStorage(path);
  t.after(() => {
    storage.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { path, storage };
}

/** Every row of every table, through a second connection. */
function dump(path: string): Record<string, unknown[]> {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const tables = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
      .all() as { name: string }[];
    const out: Record<string, unknown[]> = {};
    for (const { name } of tables) {
      // Table names come from sqlite_master, not from input.
      out[name] = db.prepare(`SELECT * FROM "${name}" ORDER BY rowid`).all();
    }
    return out;
  } finally {
    db.close();
  }
}

function errorPaths(fn: () => unknown): string[] {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ApplyError, String(error));
    return error.issues.map((issue) => `${issue.path}: ${issue.message}`);
  }
  assert.fail('expected an ApplyError');
}

void test('apply: creates everything, prints it, and a second run changes nothing', (t) => {
  const { path, storage } = tempDb(t);
  const file = parseApplyText(FILE);
  const first = applyFile(storage, file, { now: NOW, hashPassword: fakeHash });
  assert.deepEqual(first.lines, [
    'created account acme',
    'created user acme/alice (with a password)',
    'created user acme/bob (without a password, disabled)',
    'created service account acme/ci',
    'created site acme/office',
    'created site acme/cloud',
    'created resource acme/lan',
    'created resource acme/wiki',
    'created resource acme/internet',
    'created group acme/staff',
    'created member acme/staff: alice',
    'created member acme/staff: bob',
    'created group acme/deploy',
    'created member acme/deploy: ci',
    'created policy acme/staff → lan',
    'created policy acme/staff → wiki',
    'created policy acme/deploy → internet',
  ]);
  assert.ok(!first.lines.join('\n').includes('correct horse'));
  const account = storage.findAccountBySlug('acme')!;
  assert.equal(account.ranges.tunnelIpv4, '10.77.0.0/16');
  const lan = storage.findResourceByName(account.id, 'lan')!;
  assert.deepEqual(lan.filters, [
    {
      protocol: 'tcp',
      ports: [
        { from: 22, to: 22 },
        { from: 443, to: 443 },
        { from: 8000, to: 8100 },
      ],
    },
    { protocol: 'icmp' },
  ]);
  assert.equal(storage.findResourceByName(account.id, 'wiki')!.address, '*.wiki.example.com');
  const alice = storage.findActorByName(account.id, 'alice')!;
  assert.equal(storage.findPasswordIdentity(alice.id)?.passwordHash, 'fake$21');
  assert.notEqual(storage.findActorByName(account.id, 'bob')!.disabledAt, null);

  const before = dump(path);
  const second = applyFile(storage, parseApplyText(FILE), {
    now: NOW + 1000,
    hashPassword: fakeHash,
  });
  assert.deepEqual(second.lines, ['no changes']);
  assert.deepEqual(second.changes, []);
  assert.deepEqual(dump(path), before, 'the database is identical');
});

void test('apply: the password is used only when the user is created (real scrypt)', (t) => {
  const { storage } = tempDb(t);
  const file = (password: string) => `
accounts:
  - slug: acme
    name: Acme
    users:
      - name: alice
        password: ${password}
`;
  applyFile(storage, parseApplyText(file('first-password')), { now: NOW });
  const account = storage.findAccountBySlug('acme')!;
  const alice = storage.findActorByName(account.id, 'alice')!;
  const stored = storage.findPasswordIdentity(alice.id)!.passwordHash;
  assert.match(stored, /^scrypt\$/);
  assert.equal(verifyPassword('first-password', stored), true);
  const again = applyFile(storage, parseApplyText(file('second-password')), { now: NOW + 1 });
  assert.deepEqual(again.lines, ['no changes']);
  assert.equal(storage.findPasswordIdentity(alice.id)!.passwordHash, stored);
});

void test('apply: updates say which fields; deletions only of the kinds listed; devices and tokens kept', (t) => {
  const { storage } = tempDb(t);
  applyFile(storage, parseApplyText(FILE), { now: NOW, hashPassword: fakeHash });
  const account = storage.findAccountBySlug('acme')!;
  const alice = storage.findActorByName(account.id, 'alice')!;
  const ci = storage.findActorByName(account.id, 'ci')!;
  const device = storage.upsertDevice({
    accountId: account.id,
    actorId: alice.id,
    externalId: 'laptop',
    name: 'laptop',
    publicKey: 'k',
    now: NOW,
  });
  storage.createToken({
    id: 'tok',
    accountId: account.id,
    kind: 'service_account',
    actorId: ci.id,
    hash: 'a'.repeat(64),
    expiresAt: null,
    now: NOW,
  });

  // Only users, resources and policies listed: bob, wiki and the policies not named go; sites,
  // groups and service accounts stay as they are though the file does not mention them.
  const changed = `
accounts:
  - slug: acme
    name: Acme
    ranges:
      tunnelIpv4: 10.77.0.0/16
    users:
      - name: alice
        email: alice@corp.example.com
    resources:
      - name: lan
        type: cidr
        address: 10.0.0.0/16
        site: cloud
      - name: internet
        type: internet
        site: cloud
    policies:
      - group: staff
        resource: lan
`;
  const result = applyFile(storage, parseApplyText(changed), {
    now: NOW + 5,
    hashPassword: fakeHash,
  });
  assert.deepEqual(result.lines, [
    'updated account acme (name)',
    'deleted user acme/bob',
    'updated user acme/alice (email)',
    'deleted policy acme/staff → wiki (its resource wiki is deleted)',
    'deleted resource acme/wiki',
    'updated resource acme/lan (address, site, filters)',
    'deleted policy acme/deploy → internet',
    'updated policy acme/staff → lan (description)',
  ]);
  assert.equal(storage.findActorByName(account.id, 'bob'), undefined);
  assert.ok(storage.findActorByName(account.id, 'ci'), 'service accounts not listed: kept');
  assert.equal(storage.listSites(account.id).length, 2, 'sites not listed: kept');
  assert.equal(storage.listGroups(account.id).length, 2, 'groups not listed: kept');
  assert.equal(storage.findDevice(device.id)?.id, device.id, 'the device stays');
  assert.ok(storage.findToken('tok'), 'the token stays');
  assert.deepEqual(
    applyFile(storage, parseApplyText(changed), { now: NOW + 6, hashPassword: fakeHash }).lines,
    ['no changes'],
  );

  // Deleting a user says what went with it; a range change renumbers (the device keeps its row).
  const fewer = `
accounts:
  - slug: acme
    name: Acme
    ranges:
      tunnelIpv4: 10.78.0.0/16
    users: []
`;
  assert.deepEqual(
    applyFile(storage, parseApplyText(fewer), { now: NOW + 7, hashPassword: fakeHash }).lines,
    [
      'updated account acme (tunnelIpv4 10.77.0.0/16 → 10.78.0.0/16)',
      'deleted user acme/alice (with its 1 device)',
    ],
  );
  assert.ok(storage.findToken('tok'), "the service account's token stays");
});

void test('apply: a site still used by a resource is not deleted; nothing changes', (t) => {
  const { path, storage } = tempDb(t);
  applyFile(storage, parseApplyText(FILE), { now: NOW, hashPassword: fakeHash });
  const before = dump(path);
  const paths = errorPaths(() =>
    applyFile(
      storage,
      parseApplyText(`
accounts:
  - slug: acme
    name: Acme Renamed
    sites:
      - name: office
`),
      { now: NOW + 1, hashPassword: fakeHash },
    ),
  );
  assert.equal(paths.length, 1);
  assert.match(
    paths[0]!,
    /^accounts\[0\]\.sites: site cloud is not listed, but resources still use it: internet, wiki/,
  );
  assert.deepEqual(dump(path), before, 'the rename before the error was rolled back too');
});

void test('apply: bad files → errors with the path of each bad field, and nothing changed', (t) => {
  const { path, storage } = tempDb(t);
  applyFile(storage, parseApplyText(FILE), { now: NOW, hashPassword: fakeHash });
  const before = dump(path);
  const cases: [string, string, RegExp[]][] = [
    ['yaml syntax', 'accounts: [\n', [/^: .*line/]],
    ['duplicate key', 'accounts: []\naccounts: []\n', [/^: Map keys must be unique/]],
    ['empty', '', [/the file is empty/]],
    ['not a list', 'accounts: 3', [/^accounts: /]],
    ['unknown key', 'accounts: []\nacounts: []', [/^: unknown key acounts/]],
    [
      'typo in a user',
      'accounts:\n  - slug: acme\n    name: A\n    users:\n      - name: x\n        pasword: secret99',
      [/^accounts\[0\]\.users\[0\]: unknown key pasword/],
    ],
    [
      'bad slug and email',
      'accounts:\n  - slug: "-bad"\n    name: A\n    users:\n      - name: x\n        email: nope',
      [/^accounts\[0\]\.slug: /, /^accounts\[0\]\.users\[0\]\.email: email: not an email address/],
    ],
    [
      'resource problems',
      `accounts:
  - slug: acme
    name: A
    resources:
      - { name: a, type: cidr, address: 10.0.0.1/24, site: office }
      - { name: b, type: internet, address: 0.0.0.0/0, site: office }
      - { name: c, type: dns, site: office }
      - { name: d, type: dns, address: "bad name!", site: office }
      - { name: e, type: cidr, address: 10.0.0.0/8, site: office, filters: [{ protocol: tcp, ports: [0] }] }
      - { name: f, type: cidr, address: 10.0.0.0/8, site: office, filters: [{ protocol: icmp, ports: [1] }] }
      - { name: g, type: cidr, address: 10.0.0.0/8, site: office, filters: [{ protocol: tcp, ports: ["9-2"] }] }
      - { name: h, type: ftp, site: office }`,
      [
        /^accounts\[0\]\.resources\[0\]\.address: 10\.0\.0\.1\/24 has bits set .*10\.0\.0\.0\/24/,
        /^accounts\[0\]\.resources\[1\]\.address: an internet resource has no address/,
        /^accounts\[0\]\.resources\[2\]\.address: a dns resource needs an address/,
        /^accounts\[0\]\.resources\[3\]\.address: not a DNS name/,
        /^accounts\[0\]\.resources\[4\]\.filters\[0\]\.ports\[0\]: ports are 1–65535/,
        /^accounts\[0\]\.resources\[5\]\.filters\[0\]\.ports: icmp has no ports/,
        /^accounts\[0\]\.resources\[6\]\.filters\[0\]\.ports\[0\]: bad port range 9-2/,
        /^accounts\[0\]\.resources\[7\]\.type: type: cidr, dns or internet/,
      ],
    ],
    [
      'listed twice',
      `accounts:
  - slug: acme
    name: A
    resources:
      - { name: a, type: internet, site: office }
      - { name: a, type: internet, site: office }
    groups:
      - { name: g, members: [x, x] }
  - slug: acme
    name: B`,
      [
        /^accounts\[0\]\.resources\[1\]: resource a is listed twice/,
        /^accounts\[0\]\.groups\[0\]\.members\[1\]: member x is listed twice/,
        /^accounts\[1\]: account acme is listed twice/,
      ],
    ],
    [
      'ranges',
      'accounts:\n  - slug: acme\n    name: A\n    ranges: { tunnelIpv4: "fd00::/64", proxyIpv6: "fd00::1/64" }',
      [
        /^accounts\[0\]\.ranges\.tunnelIpv4: must be an IPv4 prefix/,
        /^accounts\[0\]\.ranges\.proxyIpv6: has bits set/,
      ],
    ],
    [
      'ranges overlap (storage)',
      'accounts:\n  - slug: acme\n    name: A\n    ranges: { tunnelIpv4: "100.96.0.0/16" }',
      [
        /^accounts\[0\]\.ranges: tunnelIpv4 100\.96\.0\.0\/16 and proxyIpv4 100\.96\.0\.0\/11 overlap/,
      ],
    ],
    [
      'dangling references',
      `accounts:
  - slug: acme
    name: Acme Inc.
    resources:
      - { name: z, type: internet, site: nowhere }
    groups:
      - { name: staff, members: [alice, ghost] }
    policies:
      - { group: nogroup, resource: lan }
      - { group: staff, resource: noresource }`,
      [
        /^accounts\[0\]\.resources\[0\]\.site: no site named nowhere in account acme/,
        /^accounts\[0\]\.groups\[0\]\.members\[1\]: no user or service account named ghost/,
        /^accounts\[0\]\.policies\[0\]\.group: no group named nogroup/,
        // lan is not in this file's resources, so it is deleted before policies are matched.
        /^accounts\[0\]\.policies\[0\]\.resource: no resource named lan/,
        /^accounts\[0\]\.policies\[1\]\.resource: no resource named noresource/,
      ],
    ],
    [
      'a user listed as both kinds, short password',
      `accounts:
  - slug: acme
    name: A
    users: [{ name: x, password: short }]
    serviceAccounts: [{ name: x }]`,
      [
        /^accounts\[0\]\.users\[0\]\.password: password: at least 8/,
        /^accounts\[0\]\.users\[0\]\.name: x is also listed as a service account/,
      ],
    ],
    [
      'kind clash with the database',
      `accounts:
  - slug: acme
    name: Acme Inc.
    serviceAccounts: [{ name: ci }, { name: alice }]`,
      [/^accounts\[0\]\.serviceAccounts\[1\]\.name: alice is a user in the database/],
    ],
    [
      'control characters',
      'accounts:\n  - slug: acme\n    name: "A\\u0000B"',
      [/^accounts\[0\]\.name: name: no control characters/],
    ],
  ];
  for (const [label, text, expected] of cases) {
    const paths = errorPaths(() =>
      applyFile(storage, parseApplyText(text), { now: NOW + 1, hashPassword: fakeHash }),
    );
    for (const pattern of expected) {
      assert.ok(
        paths.some((p) => pattern.test(p)),
        `${label}: ${pattern} in\n${paths.join('\n')}`,
      );
    }
    assert.equal(paths.length, expected.length, `${label}: ${paths.join('\n')}`);
    assert.deepEqual(dump(path), before, `${label}: nothing changed`);
  }
});

void test('apply: JSON works too, SQL metacharacters are names like any other; dry run changes nothing', (t) => {
  const { path, storage } = tempDb(t);
  const hostile = "Robert'); DROP TABLE actors;--";
  const json = JSON.stringify({
    accounts: [
      {
        slug: 'acme',
        name: hostile,
        users: [{ name: hostile, email: "o'brien@example.com" }],
        sites: [{ name: hostile }],
        resources: [{ name: hostile, type: 'internet', site: hostile }],
        groups: [{ name: hostile, members: [hostile] }],
        policies: [{ group: hostile, resource: hostile, description: hostile }],
      },
    ],
  });
  const before = dump(path);
  const dry = applyFile(storage, parseApplyText(json), {
    now: NOW,
    dryRun: true,
    hashPassword: fakeHash,
  });
  assert.equal(dry.dryRun, true);
  assert.equal(dry.lines.length, 7);
  assert.deepEqual(dump(path), before, 'a dry run writes nothing');
  applyFile(storage, parseApplyText(json), { now: NOW, hashPassword: fakeHash });
  const account = storage.findAccountBySlug('acme')!;
  assert.equal(account.name, hostile);
  assert.equal(storage.findActorByName(account.id, hostile)?.email, "o'brien@example.com");
  assert.equal(storage.listPolicies(account.id)[0]?.description, hostile);
  assert.deepEqual(
    applyFile(storage, parseApplyText(json), { now: NOW, hashPassword: fakeHash }).lines,
    ['no changes'],
  );
});
