import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { openSqliteStorage } from '../src/db/sqlite-storage.ts';
import type {
  FilterProtocol,
  PortalStorage,
  ResourceFilter,
  ResourceType,
} from '../src/db/storage.ts';
import {
  compilePolicies,
  filtersAllow,
  loadPolicyIndex,
  type PolicyIndex,
} from '../src/policy/index.ts';

const NOW = 1_800_000_000_000;

interface FixtureAccount {
  actors: { name: string; kind: 'user' | 'service_account'; disabled?: boolean }[];
  groups: Record<string, string[]>;
  resources: { name: string; type: ResourceType; address?: string; filters: ResourceFilter[] }[];
  policies: [string, string][];
}
interface Fixture {
  accounts: Record<string, FixtureAccount>;
  expect: {
    resourcesFor: Record<string, string[]>;
    policiesFor: Record<string, string[]>;
    mayAccess: [string, string, string][];
    flows: [string, string, FilterProtocol, number | null, boolean][];
    actorsFor: Record<string, string[]>;
  };
}

const fixture = JSON.parse(
  readFileSync(new URL('./policy-fixtures/world.json', import.meta.url), 'utf8'),
) as Fixture;

/** The fixture in a storage; names ("acme/alice") to ids and back. */
function build(storage: PortalStorage) {
  const ids = new Map<string, string>();
  const names = new Map<string, string>();
  const accountOf = new Map<string, string>();
  const name = (key: string, id: string) => {
    ids.set(key, id);
    names.set(id, key);
  };
  for (const [slug, spec] of Object.entries(fixture.accounts)) {
    const account = storage.createAccount({ slug, name: slug, now: NOW });
    accountOf.set(slug, account.id);
    const site = storage.createSite(account.id, 'site', NOW);
    for (const a of spec.actors) {
      const actor = storage.createActor({
        accountId: account.id,
        kind: a.kind,
        name: a.name,
        now: NOW,
      });
      if (a.disabled === true) storage.updateActor(actor.id, { disabled: true, now: NOW });
      name(`${slug}/${a.name}`, actor.id);
    }
    for (const r of spec.resources) {
      const resource = storage.createResource({
        accountId: account.id,
        siteId: site.id,
        type: r.type,
        name: r.name,
        address: r.address ?? null,
        filters: r.filters,
        now: NOW,
      });
      name(`${slug}/${r.name}`, resource.id);
    }
    for (const [groupName, members] of Object.entries(spec.groups)) {
      const group = storage.createGroup(account.id, groupName, NOW);
      for (const m of members) storage.addMembership(group.id, ids.get(`${slug}/${m}`)!, NOW);
      name(`${slug}/group:${groupName}`, group.id);
    }
    for (const [groupName, resourceName] of spec.policies) {
      const policy = storage.createPolicy({
        groupId: ids.get(`${slug}/group:${groupName}`)!,
        resourceId: ids.get(`${slug}/${resourceName}`)!,
        now: NOW,
      });
      names.set(policy.id, `${groupName}→${resourceName}`);
    }
  }
  const id = (key: string) => {
    const value = ids.get(key);
    assert.ok(value, `fixture names ${key}`);
    return value;
  };
  return { id, names, accountOf };
}

function indexes(t: { after: (fn: () => void) => void }) {
  const storage = openSqliteStorage(':memory:');
  t.after(() => storage.close());
  const built = build(storage);
  const byAccount = new Map<string, PolicyIndex>();
  for (const [slug, accountId] of built.accountOf)
    byAccount.set(slug, loadPolicyIndex(storage, accountId));
  const indexFor = (key: string) => byAccount.get(key.split('/')[0]!)!;
  return { storage, ...built, indexFor };
}

void test('policies: resourcesFor matches the recorded answers', (t) => {
  const { id, names, indexFor } = indexes(t);
  for (const [actor, expected] of Object.entries(fixture.expect.resourcesFor)) {
    const got = indexFor(actor).resourcesFor(id(actor));
    assert.deepEqual(
      got.map((g) => g.resource.name),
      expected,
      actor,
    );
  }
  for (const [key, expected] of Object.entries(fixture.expect.policiesFor)) {
    const [actor, resource] = key.split(' ') as [string, string];
    const grant = indexFor(actor)
      .resourcesFor(id(actor))
      .find((g) => g.resource.name === resource);
    assert.ok(grant, key);
    assert.deepEqual(grant.policyIds.map((p) => names.get(p)).sort(), expected, key);
  }
});

void test('policies: mayAccess and mayFlow match the recorded answers', (t) => {
  const { id, indexFor } = indexes(t);
  for (const [actor, resource, expected] of fixture.expect.mayAccess) {
    const decision = indexFor(actor).mayAccess(id(actor), id(resource));
    assert.equal(
      decision.allowed ? 'allowed' : decision.reason,
      expected,
      `${actor} → ${resource}`,
    );
  }
  for (const [actor, resource, protocol, port, expected] of fixture.expect.flows) {
    const flow = port === null ? { protocol } : { protocol, port };
    assert.equal(
      indexFor(actor).mayFlow(id(actor), id(resource), flow),
      expected,
      `${actor} → ${resource} ${protocol}/${port}`,
    );
  }
  // An id nobody has.
  assert.deepEqual(indexFor('acme/x').mayAccess('nobody', id('acme/lan')), {
    allowed: false,
    reason: 'unknown_actor',
  });
});

void test('policies: actorsFor matches the recorded answers', (t) => {
  const { id, names, indexFor } = indexes(t);
  for (const [resource, expected] of Object.entries(fixture.expect.actorsFor)) {
    const got = indexFor(resource).actorsFor(id(resource));
    assert.deepEqual(got.map((a) => names.get(a)!.split('/')[1]).sort(), expected, resource);
  }
});

void test('policies: removing a policy, a membership or a resource takes the access away', (t) => {
  const { storage, id, accountOf } = indexes(t);
  const acme = accountOf.get('acme')!;
  const bob = id('acme/bob');
  const staffWeb = storage.findPolicyFor(id('acme/group:staff'), id('acme/web'))!;
  storage.deletePolicy(staffWeb.id);
  assert.deepEqual(
    loadPolicyIndex(storage, acme)
      .resourcesFor(bob)
      .map((g) => g.resource.name),
    ['lan'],
  );
  // alice still has web through admins.
  assert.equal(
    loadPolicyIndex(storage, acme).mayAccess(id('acme/alice'), id('acme/web')).allowed,
    true,
  );
  storage.removeMembership(id('acme/group:staff'), bob);
  assert.deepEqual(loadPolicyIndex(storage, acme).resourcesFor(bob), []);
  storage.deleteResource(id('acme/db'));
  assert.deepEqual(loadPolicyIndex(storage, acme).resourcesFor(id('acme/ci')), []);
});

void test("policies: a policy naming another account's resource grants nothing (pure)", () => {
  const resource = {
    id: 'r1',
    accountId: 'B',
    siteId: 's',
    type: 'internet' as const,
    name: 'x',
    address: null,
    filters: [],
    createdAt: 0,
    updatedAt: 0,
  };
  const index = compilePolicies({
    actors: [{ id: 'a1', accountId: 'A', disabledAt: null }],
    memberships: [{ groupId: 'g1', actorId: 'a1' }],
    policies: [{ id: 'p1', accountId: 'A', groupId: 'g1', resourceId: 'r1' }],
    resources: [resource],
  });
  assert.deepEqual(index.resourcesFor('a1'), []);
  assert.deepEqual(index.mayAccess('a1', 'r1'), { allowed: false, reason: 'unknown_resource' });
  assert.deepEqual(index.actorsFor('r1'), []);
});

void test('filtersAllow: table', () => {
  const cases: [ResourceFilter[], FilterProtocol, number | undefined, boolean][] = [
    [[], 'tcp', 1, true],
    [[], 'icmp', undefined, true],
    [[{ protocol: 'tcp' }], 'tcp', 65535, true],
    [[{ protocol: 'tcp' }], 'udp', 53, false],
    [[{ protocol: 'udp', ports: [{ from: 53, to: 53 }] }], 'udp', 53, true],
    [[{ protocol: 'udp', ports: [{ from: 53, to: 53 }] }], 'udp', 54, false],
    [[{ protocol: 'udp', ports: [{ from: 53, to: 53 }] }], 'udp', undefined, false],
    [[{ protocol: 'tcp', ports: [{ from: 1000, to: 2000 }] }], 'tcp', 999, false],
    [[{ protocol: 'tcp', ports: [{ from: 1000, to: 2000 }] }], 'tcp', 2000, true],
    [[{ protocol: 'icmp' }], 'icmp', undefined, true],
    [[{ protocol: 'icmp' }], 'tcp', 80, false],
    [
      [
        { protocol: 'tcp', ports: [{ from: 22, to: 22 }] },
        { protocol: 'tcp', ports: [{ from: 80, to: 80 }] },
      ],
      'tcp',
      80,
      true,
    ],
  ];
  for (const [filters, protocol, port, expected] of cases) {
    const flow = port === undefined ? { protocol } : { protocol, port };
    assert.equal(
      filtersAllow(filters, flow),
      expected,
      `${JSON.stringify(filters)} ${protocol}/${port}`,
    );
  }
});
