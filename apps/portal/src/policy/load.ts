/** The policy world of one account, read from storage (one read transaction). */
import type { Actor, Id, PortalStorage } from '../db/storage.ts';
import { compilePolicies, type PolicyIndex, type PolicyWorld } from './evaluate.ts';

/** The world, with the whole actor rows (their names too). */
export function loadPolicyWorld(
  storage: PortalStorage,
  accountId: Id,
): Omit<PolicyWorld, 'actors'> & { actors: readonly Actor[] } {
  return storage.transaction(() => ({
    actors: storage.listActors(accountId),
    memberships: storage.listMemberships({ accountId }),
    policies: storage.listPolicies(accountId),
    resources: storage.listResources(accountId),
  }));
}

export function loadPolicyIndex(storage: PortalStorage, accountId: Id): PolicyIndex {
  return compilePolicies(loadPolicyWorld(storage, accountId));
}
