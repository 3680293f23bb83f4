/**
 * `gatehouse-portal apply FILE`: makes the database match the file, in one transaction.
 *
 * - Idempotent: a row already as the file says is not written (its updatedAt stays), so a
 *   second run reports no change and leaves the database byte-for-byte as it was.
 * - A kind listed under an account (users, serviceAccounts, sites, resources, groups,
 *   policies) is made to match exactly: rows of that kind the file does not name are deleted.
 *   A kind not listed is left alone. Accounts are never deleted, devices and tokens are never
 *   touched (deleting a user or a site takes its own devices, tokens and gateways with it, and
 *   the line says so).
 * - A user's password is used only when the user is created (hashed with scrypt); it is never
 *   printed or logged.
 * - Any error → nothing changed (the transaction rolls back), and the error names the field.
 */
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import type {
  Account,
  AccountRanges,
  Actor,
  ActorKind,
  Id,
  Millis,
  PortalStorage,
} from '../db/storage.ts';
import { DEFAULT_ACCOUNT_RANGES, StorageError } from '../db/storage.ts';
import { hashPassword as defaultHashPassword } from '../http/passwords.ts';
import { normalizePrefix } from '@gatehouse/addresses';
import {
  applyFileSchema,
  canonicalAddress,
  canonicalFilters,
  type ApplyAccount,
  type ApplyFile,
} from './schema.ts';

export interface ApplyIssue {
  /** `accounts[0].users[2].email`, or '' for the file as a whole. */
  path: string;
  message: string;
}

/** A file that cannot be applied: each problem with the path of the bad field. */
export class ApplyError extends Error {
  readonly issues: ApplyIssue[];
  constructor(source: string, issues: ApplyIssue[]) {
    super(
      `${source}: ${issues.length === 1 ? 'an error' : `${issues.length} errors`}:\n` +
        issues
          .map((issue) => `  ${issue.path === '' ? '(file)' : issue.path}: ${issue.message}`)
          .join('\n'),
    );
    this.name = 'ApplyError';
    this.issues = issues;
  }
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out;
}

function zodIssues(error: z.ZodError): ApplyIssue[] {
  return error.issues.map((issue) => ({
    path: formatPath(issue.path),
    message:
      issue.code === 'unrecognized_keys'
        ? `unknown ${issue.keys.length === 1 ? 'key' : 'keys'} ${issue.keys.join(', ')}`
        : issue.message,
  }));
}

/** The largest file apply reads. */
export const MAX_APPLY_FILE_BYTES = 4 * 1024 * 1024;

/** Parses and checks the text of an apply file (YAML or JSON). Throws ApplyError. */
export function parseApplyText(text: string, source = 'apply file'): ApplyFile {
  if (text.length > MAX_APPLY_FILE_BYTES) {
    throw new ApplyError(source, [
      { path: '', message: `larger than ${MAX_APPLY_FILE_BYTES} bytes` },
    ]);
  }
  const document = parseDocument(text, {
    prettyErrors: true,
    uniqueKeys: true,
  });
  if (document.errors.length > 0) {
    throw new ApplyError(
      source,
      document.errors.map((error) => ({
        path: '',
        message: error.message.split('\n')[0] ?? error.message,
      })),
    );
  }
  let value: unknown;
  try {
    value = document.toJS({ maxAliasCount: 100 });
  } catch (error) {
    throw new ApplyError(source, [{ path: '', message: (error as Error).message }]);
  }
  if (value === null || value === undefined) {
    throw new ApplyError(source, [{ path: '', message: 'the file is empty' }]);
  }
  const parsed = applyFileSchema.safeParse(value);
  if (!parsed.success) throw new ApplyError(source, zodIssues(parsed.error));
  return parsed.data;
}

/** Reads and checks an apply file. Throws ApplyError. */
export function readApplyFile(path: string): ApplyFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ApplyError(path, [{ path: '', message: `cannot read: ${(error as Error).message}` }]);
  }
  return parseApplyText(text, path);
}

export type ChangeAction = 'created' | 'updated' | 'deleted';

export interface Change {
  action: ChangeAction;
  kind:
    'account' | 'user' | 'service account' | 'site' | 'resource' | 'group' | 'member' | 'policy';
  /** `acme`, `acme/alice`, `acme/staff → lan`, `acme/staff: alice`. */
  name: string;
  /** What changed (fields) or what went with it; never a password. */
  detail?: string;
}

export function formatChange(change: Change): string {
  return `${change.action} ${change.kind} ${change.name}${change.detail ? ` (${change.detail})` : ''}`;
}

export interface ApplyOptions {
  now: Millis;
  /** Check and report, then roll back. */
  dryRun?: boolean;
  /** Hash for a new user's password (default: http/passwords.ts's scrypt). */
  hashPassword?: (password: string) => string;
}

export interface ApplyResult {
  changes: Change[];
  /** One line per change, or "no changes". */
  lines: string[];
  dryRun: boolean;
}

class DryRunRollback extends Error {}

/** Makes the database match `file`. Throws ApplyError (nothing changed) when it cannot. */
export function applyFile(
  storage: PortalStorage,
  file: ApplyFile,
  options: ApplyOptions,
): ApplyResult {
  const changes: Change[] = [];
  const hash = options.hashPassword ?? defaultHashPassword;
  try {
    storage.transaction(() => {
      const issues: ApplyIssue[] = [];
      file.accounts.forEach((spec, index) => {
        applyAccount(storage, spec, `accounts[${index}]`, options.now, hash, changes, issues);
      });
      if (issues.length > 0) throw new ApplyError('apply', issues);
      if (options.dryRun === true) throw new DryRunRollback();
    });
  } catch (error) {
    if (!(error instanceof DryRunRollback)) {
      if (error instanceof StorageError) {
        throw new ApplyError('apply', [{ path: '', message: error.message }]);
      }
      throw error;
    }
  }
  const lines = changes.map(formatChange);
  if (lines.length === 0) lines.push('no changes');
  return { changes, lines, dryRun: options.dryRun === true };
}

function desiredRanges(spec: ApplyAccount): AccountRanges {
  const given = spec.ranges ?? {};
  return {
    tunnelIpv4: normalizePrefix(given.tunnelIpv4 ?? DEFAULT_ACCOUNT_RANGES.tunnelIpv4),
    tunnelIpv6: normalizePrefix(given.tunnelIpv6 ?? DEFAULT_ACCOUNT_RANGES.tunnelIpv6),
    proxyIpv4: normalizePrefix(given.proxyIpv4 ?? DEFAULT_ACCOUNT_RANGES.proxyIpv4),
    proxyIpv6: normalizePrefix(given.proxyIpv6 ?? DEFAULT_ACCOUNT_RANGES.proxyIpv6),
  };
}

/** Runs a storage write; a refusal becomes an issue at `path` (and the whole apply fails). */
function guarded(issues: ApplyIssue[], path: string, fn: () => void): void {
  try {
    fn();
  } catch (error) {
    if (error instanceof StorageError) issues.push({ path, message: error.message });
    else throw error;
  }
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function applyAccount(
  storage: PortalStorage,
  spec: ApplyAccount,
  at: string,
  now: Millis,
  hash: (password: string) => string,
  changes: Change[],
  issues: ApplyIssue[],
): void {
  const slug = spec.slug;
  const ranges = desiredRanges(spec);
  let account: Account | undefined = storage.findAccountBySlug(slug);
  if (account === undefined) {
    guarded(issues, `${at}.ranges`, () => {
      account = storage.createAccount({ slug, name: spec.name, ranges, now });
      changes.push({ action: 'created', kind: 'account', name: slug });
    });
    if (account === undefined) return;
  } else {
    const fields: string[] = [];
    if (account.name !== spec.name) fields.push('name');
    for (const key of ['tunnelIpv4', 'tunnelIpv6', 'proxyIpv4', 'proxyIpv6'] as const) {
      if (account.ranges[key] !== ranges[key])
        fields.push(`${key} ${account.ranges[key]} → ${ranges[key]}`);
    }
    if (fields.length > 0) {
      const id = account.id;
      guarded(issues, `${at}.ranges`, () => {
        storage.updateAccount(id, { name: spec.name, ranges, now });
        changes.push({ action: 'updated', kind: 'account', name: slug, detail: fields.join(', ') });
      });
    }
  }
  const accountId = (account as Account).id;

  // Actors: deletions first, so a name may move from one kind to the other in one run.
  const kinds: [ActorKind, 'users' | 'serviceAccounts', Change['kind']][] = [
    ['user', 'users', 'user'],
    ['service_account', 'serviceAccounts', 'service account'],
  ];
  for (const [kind, key, label] of kinds) {
    const listed = spec[key];
    if (listed === undefined) continue;
    const keep = new Set(listed.map((entry) => entry.name));
    for (const actor of storage.listActors(accountId, kind)) {
      if (keep.has(actor.name)) continue;
      const devices = storage.listDevices(accountId, actor.id).length;
      const tokens = storage.listTokens({ actorId: actor.id }).length;
      storage.deleteActor(actor.id);
      const gone = [
        devices > 0 ? plural(devices, 'device') : '',
        tokens > 0 ? plural(tokens, 'token') : '',
      ]
        .filter(Boolean)
        .join(', ');
      changes.push({
        action: 'deleted',
        kind: label,
        name: `${slug}/${actor.name}`,
        ...(gone ? { detail: `with its ${gone}` } : {}),
      });
    }
  }
  spec.users?.forEach((user, index) => {
    const path = `${at}.users[${index}]`;
    const existing = storage.findActorByName(accountId, user.name);
    const email = user.email ?? null;
    const disabled = user.disabled === true;
    if (existing !== undefined && existing.kind !== 'user') {
      issues.push({
        path: `${path}.name`,
        message: `${user.name} is a service account in the database (list serviceAccounts to delete it)`,
      });
      return;
    }
    if (existing === undefined) {
      guarded(issues, path, () => {
        const actor = storage.createActor({ accountId, kind: 'user', name: user.name, email, now });
        if (disabled) storage.updateActor(actor.id, { disabled: true, now });
        if (user.password !== undefined)
          storage.setPasswordIdentity(actor.id, hash(user.password), now);
        const notes = [user.password !== undefined ? 'with a password' : 'without a password'];
        if (disabled) notes.push('disabled');
        changes.push({
          action: 'created',
          kind: 'user',
          name: `${slug}/${user.name}`,
          detail: notes.join(', '),
        });
      });
      return;
    }
    updateActor(
      storage,
      existing,
      { email, disabled },
      `${path}`,
      now,
      slug,
      'user',
      changes,
      issues,
    );
  });
  spec.serviceAccounts?.forEach((service, index) => {
    const path = `${at}.serviceAccounts[${index}]`;
    const existing = storage.findActorByName(accountId, service.name);
    const disabled = service.disabled === true;
    if (existing !== undefined && existing.kind !== 'service_account') {
      issues.push({
        path: `${path}.name`,
        message: `${service.name} is a user in the database (list users to delete it)`,
      });
      return;
    }
    if (existing === undefined) {
      guarded(issues, path, () => {
        const actor = storage.createActor({
          accountId,
          kind: 'service_account',
          name: service.name,
          now,
        });
        if (disabled) storage.updateActor(actor.id, { disabled: true, now });
        changes.push({
          action: 'created',
          kind: 'service account',
          name: `${slug}/${service.name}`,
          ...(disabled ? { detail: 'disabled' } : {}),
        });
      });
      return;
    }
    updateActor(
      storage,
      existing,
      { email: null, disabled },
      path,
      now,
      slug,
      'service account',
      changes,
      issues,
    );
  });

  // Sites: created first (resources name them), deleted after resources moved off them.
  spec.sites?.forEach((site, index) => {
    if (storage.findSiteByName(accountId, site.name) !== undefined) return;
    guarded(issues, `${at}.sites[${index}]`, () => {
      storage.createSite(accountId, site.name, now);
      changes.push({ action: 'created', kind: 'site', name: `${slug}/${site.name}` });
    });
  });

  const policyName = (policy: { groupId: Id; resourceId: Id }) =>
    `${slug}/${storage.findGroup(policy.groupId)?.name ?? '?'} → ${storage.findResource(policy.resourceId)?.name ?? '?'}`;
  const deletePoliciesOf = (
    predicate: (p: { groupId: Id; resourceId: Id }) => boolean,
    why: string,
  ) => {
    for (const policy of storage.listPolicies(accountId)) {
      if (!predicate(policy)) continue;
      changes.push({ action: 'deleted', kind: 'policy', name: policyName(policy), detail: why });
    }
  };

  if (spec.resources !== undefined) {
    const keep = new Set(spec.resources.map((r) => r.name));
    for (const resource of storage.listResources(accountId)) {
      if (keep.has(resource.name)) continue;
      deletePoliciesOf(
        (p) => p.resourceId === resource.id,
        `its resource ${resource.name} is deleted`,
      );
      storage.deleteResource(resource.id);
      changes.push({ action: 'deleted', kind: 'resource', name: `${slug}/${resource.name}` });
    }
  }
  spec.resources?.forEach((resource, index) => {
    const path = `${at}.resources[${index}]`;
    const site = storage.findSiteByName(accountId, resource.site);
    if (site === undefined) {
      issues.push({
        path: `${path}.site`,
        message: `no site named ${resource.site} in account ${slug}`,
      });
      return;
    }
    const address = canonicalAddress(resource);
    const filters = canonicalFilters(resource.filters);
    const existing = storage.findResourceByName(accountId, resource.name);
    if (existing === undefined) {
      guarded(issues, path, () => {
        storage.createResource({
          accountId,
          siteId: site.id,
          type: resource.type,
          name: resource.name,
          address,
          filters,
          now,
        });
        changes.push({ action: 'created', kind: 'resource', name: `${slug}/${resource.name}` });
      });
      return;
    }
    const fields: string[] = [];
    if (existing.type !== resource.type) fields.push('type');
    if (existing.address !== address) fields.push('address');
    if (existing.siteId !== site.id) fields.push('site');
    if (JSON.stringify(existing.filters) !== JSON.stringify(filters)) fields.push('filters');
    if (fields.length === 0) return;
    guarded(issues, path, () => {
      storage.updateResource(existing.id, {
        type: resource.type,
        address,
        siteId: site.id,
        filters,
        now,
      });
      changes.push({
        action: 'updated',
        kind: 'resource',
        name: `${slug}/${resource.name}`,
        detail: fields.join(', '),
      });
    });
  });

  if (spec.sites !== undefined) {
    const keep = new Set(spec.sites.map((s) => s.name));
    for (const site of storage.listSites(accountId)) {
      if (keep.has(site.name)) continue;
      const resources = storage.listResources(accountId, site.id);
      if (resources.length > 0) {
        issues.push({
          path: `${at}.sites`,
          message: `site ${site.name} is not listed, but resources still use it: ${resources.map((r) => r.name).join(', ')} (list resources too, or move them)`,
        });
        continue;
      }
      const gateways = storage.listGateways(accountId, site.id).length;
      const tokens = storage.listTokens({ siteId: site.id }).length;
      storage.deleteSite(site.id);
      const gone = [
        gateways > 0 ? plural(gateways, 'gateway') : '',
        tokens > 0 ? plural(tokens, 'gateway token') : '',
      ]
        .filter(Boolean)
        .join(', ');
      changes.push({
        action: 'deleted',
        kind: 'site',
        name: `${slug}/${site.name}`,
        ...(gone ? { detail: `with its ${gone}` } : {}),
      });
    }
  }

  // Groups and their members.
  if (spec.groups !== undefined) {
    const keep = new Set(spec.groups.map((g) => g.name));
    for (const group of storage.listGroups(accountId)) {
      if (keep.has(group.name)) continue;
      deletePoliciesOf((p) => p.groupId === group.id, `its group ${group.name} is deleted`);
      storage.deleteGroup(group.id);
      changes.push({ action: 'deleted', kind: 'group', name: `${slug}/${group.name}` });
    }
  }
  spec.groups?.forEach((spec_, index) => {
    const path = `${at}.groups[${index}]`;
    let group = storage.findGroupByName(accountId, spec_.name);
    if (group === undefined) {
      group = storage.createGroup(accountId, spec_.name, now);
      changes.push({ action: 'created', kind: 'group', name: `${slug}/${spec_.name}` });
    }
    const groupId = group.id;
    const wanted = new Map<Id, string>();
    (spec_.members ?? []).forEach((member, m) => {
      const actor = storage.findActorByName(accountId, member);
      if (actor === undefined) {
        issues.push({
          path: `${path}.members[${m}]`,
          message: `no user or service account named ${member} in account ${slug}`,
        });
        return;
      }
      wanted.set(actor.id, member);
    });
    const current = new Set(storage.listMemberships({ groupId }).map((m) => m.actorId));
    for (const actorId of current) {
      if (wanted.has(actorId)) continue;
      storage.removeMembership(groupId, actorId);
      changes.push({
        action: 'deleted',
        kind: 'member',
        name: `${slug}/${spec_.name}: ${storage.findActor(actorId)?.name ?? actorId}`,
      });
    }
    for (const [actorId, member] of wanted) {
      if (current.has(actorId)) continue;
      storage.addMembership(groupId, actorId, now);
      changes.push({ action: 'created', kind: 'member', name: `${slug}/${spec_.name}: ${member}` });
    }
  });

  // Policies, by (group, resource).
  if (spec.policies !== undefined) {
    const resolved: { groupId: Id; resourceId: Id; description: string | null; index: number }[] =
      [];
    spec.policies.forEach((policy, index) => {
      const path = `${at}.policies[${index}]`;
      const group = storage.findGroupByName(accountId, policy.group);
      const resource = storage.findResourceByName(accountId, policy.resource);
      if (group === undefined) {
        issues.push({
          path: `${path}.group`,
          message: `no group named ${policy.group} in account ${slug}`,
        });
      }
      if (resource === undefined) {
        issues.push({
          path: `${path}.resource`,
          message: `no resource named ${policy.resource} in account ${slug}`,
        });
      }
      if (group === undefined || resource === undefined) return;
      resolved.push({
        groupId: group.id,
        resourceId: resource.id,
        description: policy.description ?? null,
        index,
      });
    });
    const keep = new Set(resolved.map((p) => `${p.groupId} ${p.resourceId}`));
    for (const policy of storage.listPolicies(accountId)) {
      if (keep.has(`${policy.groupId} ${policy.resourceId}`)) continue;
      changes.push({ action: 'deleted', kind: 'policy', name: policyName(policy) });
      storage.deletePolicy(policy.id);
    }
    for (const wanted of resolved) {
      const existing = storage.findPolicyFor(wanted.groupId, wanted.resourceId);
      if (existing === undefined) {
        storage.createPolicy({
          groupId: wanted.groupId,
          resourceId: wanted.resourceId,
          description: wanted.description,
          now,
        });
        changes.push({ action: 'created', kind: 'policy', name: policyName(wanted) });
      } else if (existing.description !== wanted.description) {
        storage.updatePolicyDescription(existing.id, wanted.description, now);
        changes.push({
          action: 'updated',
          kind: 'policy',
          name: policyName(wanted),
          detail: 'description',
        });
      }
    }
  }
}

function updateActor(
  storage: PortalStorage,
  existing: Actor,
  wanted: { email: string | null; disabled: boolean },
  path: string,
  now: Millis,
  slug: string,
  label: Change['kind'],
  changes: Change[],
  issues: ApplyIssue[],
): void {
  const fields: string[] = [];
  if (existing.email !== wanted.email) fields.push('email');
  if ((existing.disabledAt !== null) !== wanted.disabled)
    fields.push(wanted.disabled ? 'disabled' : 'enabled');
  if (fields.length === 0) return;
  guarded(issues, path, () => {
    storage.updateActor(existing.id, { email: wanted.email, disabled: wanted.disabled, now });
    changes.push({
      action: 'updated',
      kind: label,
      name: `${slug}/${existing.name}`,
      detail: fields.join(', '),
    });
  });
}
