/** The policy world of one account, read from storage (one read transaction). */
import type { Id, PortalStorage } from '../db/storage.ts';
import { compilePolicies, type PolicyIndex, type PolicyWorld } from './evaluate.ts';

export function loadPolicyWorld(storage: PortalStorage, accountId: Id): PolicyWorld {
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
