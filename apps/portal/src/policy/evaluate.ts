/**
 * Who may reach what, decided from data alone (no storage, no clock): an actor reaches a
 * resource when a policy grants the resource to a group the actor is a member of, both in the
 * actor's account, and the actor is not disabled. What traffic then flows is the resource's
 * filters: none means everything; otherwise a packet passes when a filter of its protocol
 * allows its port (a filter without ports allows every port; icmp has no ports).
 *
 * The shape follows Headscale's policy step: the world in, a compiled index once, then cheap
 * questions against it (`resourcesFor`, `mayAccess`, `actorsFor`).
 */
import type {
  Actor,
  FilterProtocol,
  Id,
  Membership,
  Policy,
  Resource,
  ResourceFilter,
} from '../db/storage.ts';

/** What the evaluation reads: one account's rows, or several (they are kept apart by id). */
export interface PolicyWorld {
  actors: readonly Pick<Actor, 'id' | 'accountId' | 'disabledAt'>[];
  memberships: readonly Pick<Membership, 'groupId' | 'actorId'>[];
  policies: readonly Pick<Policy, 'id' | 'accountId' | 'groupId' | 'resourceId'>[];
  resources: readonly Resource[];
}

export interface Grant {
  resource: Resource;
  /** The policies that grant it (sorted), for logs and for revoking when one goes. */
  policyIds: string[];
}

export type AccessRefusal = 'unknown_actor' | 'actor_disabled' | 'unknown_resource' | 'no_policy';

export type AccessDecision =
  | { allowed: true; resource: Resource; policyIds: string[]; filters: ResourceFilter[] }
  | { allowed: false; reason: AccessRefusal };

export interface Flow {
  protocol: FilterProtocol;
  /** Destination port for tcp and udp; ignored for icmp. */
  port?: number;
}

/** Whether `filters` let `flow` through. */
export function filtersAllow(filters: readonly ResourceFilter[], flow: Flow): boolean {
  if (filters.length === 0) return true;
  for (const filter of filters) {
    if (filter.protocol !== flow.protocol) continue;
    if (flow.protocol === 'icmp') return true;
    const ports = filter.ports ?? [];
    if (ports.length === 0) return true;
    if (flow.port === undefined) continue;
    const port = flow.port;
    if (ports.some((range) => range.from <= port && port <= range.to)) return true;
  }
  return false;
}

export interface PolicyIndex {
  /** The resources the actor may reach, by name, with the policies granting each. */
  resourcesFor(actorId: Id): Grant[];
  mayAccess(actorId: Id, resourceId: Id): AccessDecision;
  /** mayAccess, then the flow against the resource's filters. */
  mayFlow(actorId: Id, resourceId: Id, flow: Flow): boolean;
  /** The actors (not disabled) that may reach the resource, sorted. */
  actorsFor(resourceId: Id): Id[];
}

function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

export function compilePolicies(world: PolicyWorld): PolicyIndex {
  const actors = new Map(world.actors.map((actor) => [actor.id, actor]));
  const resources = new Map(world.resources.map((resource) => [resource.id, resource]));
  const groupsOf = new Map<Id, Id[]>();
  const membersOf = new Map<Id, Id[]>();
  for (const membership of world.memberships) {
    pushTo(groupsOf, membership.actorId, membership.groupId);
    pushTo(membersOf, membership.groupId, membership.actorId);
  }
  const policiesOfGroup = new Map<Id, PolicyWorld['policies'][number][]>();
  const policiesOfResource = new Map<Id, PolicyWorld['policies'][number][]>();
  for (const policy of world.policies) {
    const resource = resources.get(policy.resourceId);
    // A policy naming a resource of another account (or none) grants nothing.
    if (resource === undefined || resource.accountId !== policy.accountId) continue;
    pushTo(policiesOfGroup, policy.groupId, policy);
    pushTo(policiesOfResource, policy.resourceId, policy);
  }

  function grantsOf(actorId: Id): Map<Id, string[]> {
    const actor = actors.get(actorId);
    const grants = new Map<Id, string[]>();
    if (actor === undefined || actor.disabledAt !== null) return grants;
    for (const groupId of groupsOf.get(actorId) ?? []) {
      for (const policy of policiesOfGroup.get(groupId) ?? []) {
        if (policy.accountId !== actor.accountId) continue;
        pushTo(grants, policy.resourceId, policy.id);
      }
    }
    return grants;
  }

  return {
    resourcesFor(actorId) {
      const grants: Grant[] = [];
      for (const [resourceId, policyIds] of grantsOf(actorId)) {
        grants.push({
          resource: resources.get(resourceId) as Resource,
          policyIds: policyIds.sort(),
        });
      }
      return grants.sort(
        (a, b) =>
          a.resource.name.localeCompare(b.resource.name) ||
          a.resource.id.localeCompare(b.resource.id),
      );
    },
    mayAccess(actorId, resourceId) {
      const actor = actors.get(actorId);
      if (actor === undefined) return { allowed: false, reason: 'unknown_actor' };
      if (actor.disabledAt !== null) return { allowed: false, reason: 'actor_disabled' };
      const resource = resources.get(resourceId);
      if (resource === undefined || resource.accountId !== actor.accountId) {
        return { allowed: false, reason: 'unknown_resource' };
      }
      const policyIds = grantsOf(actorId).get(resourceId);
      if (policyIds === undefined) return { allowed: false, reason: 'no_policy' };
      return { allowed: true, resource, policyIds: policyIds.sort(), filters: resource.filters };
    },
    mayFlow(actorId, resourceId, flow) {
      const decision = this.mayAccess(actorId, resourceId);
      return decision.allowed && filtersAllow(decision.filters, flow);
    },
    actorsFor(resourceId) {
      const resource = resources.get(resourceId);
      if (resource === undefined) return [];
      const out = new Set<Id>();
      for (const policy of policiesOfResource.get(resourceId) ?? []) {
        for (const actorId of membersOf.get(policy.groupId) ?? []) {
          const actor = actors.get(actorId);
          if (actor === undefined || actor.disabledAt !== null) continue;
          if (actor.accountId !== resource.accountId) continue;
          out.add(actorId);
        }
      }
      return [...out].sort();
    },
  };
}
