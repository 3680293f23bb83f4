/**
 * The mapper (after Headscale's): what each connected node is told when the configuration
 * changes. Changes are batched: `markDirty(accountId)` (a write by this process) or a new
 * `dataVersion()` seen by polling (a commit by another process: the CLI's `apply`,
 * `token revoke`) schedules one recompute; each live session of a dirty account then gets only
 * the differences from what it was sent:
 * - a client: resource_created_or_updated / resource_deleted (status online/offline included);
 * - a gateway: reject_access for a flow whose policy or resource is gone, resource_updated for
 *   a flow's resource that changed;
 * - any session whose token was revoked or expired (or whose actor was disabled, site deleted):
 *   disconnect{reason: "token_expired"} and close.
 */
import type { Logger } from '@gatehouse/logging';
import { DISCONNECT_TOKEN_EXPIRED } from '@gatehouse/protocol';
import type { AccountView, ChannelBackend } from '../channels/backend.ts';
import { clientResources, diffResources, gatewayResourcePayload } from './payloads.ts';

export interface MappedFlow {
  /** The client device's id. */
  clientId: string;
  resourceId: string;
  /** gatewayResourcePayload's JSON text as authorized. */
  resourceText: string;
  /** The client session the flow belongs to. */
  client: MappedClient;
}

export interface MappedSession {
  readonly accountId: string;
  readonly tokenId: string;
  readonly tokenExpiresAt: number;
  /** Joined the channel (init sent). */
  readonly joined: boolean;
  push(event: string, payload: unknown): void;
  /** Pushes disconnect{reason}, then closes. */
  disconnect(reason: string): void;
}

export interface MappedClient extends MappedSession {
  readonly actorId: string;
  readonly deviceId: string;
  /** id → JSON text of what this client was last told about each resource. */
  sentResources: Map<string, string>;
  /** The flow to `resourceId` was rejected or its gateway left. */
  forgetFlow(resourceId: string): void;
}

export interface MappedGateway extends MappedSession {
  readonly siteId: string;
  readonly gatewayId: string;
  /** `${clientId}/${resourceId}` → flow. */
  flows: Map<string, MappedFlow>;
}

export interface MapperRegistry {
  accounts(): Iterable<string>;
  clients(accountId: string): Iterable<MappedClient>;
  gateways(accountId: string): Iterable<MappedGateway>;
  /** Sites of the account with at least one joined gateway. */
  onlineSites(accountId: string): ReadonlySet<string>;
}

export interface MapperCounters {
  recomputes: number;
  resourceUpdatesSent: number;
  resourceDeletesSent: number;
  rejectAccessSent: number;
  tokenDisconnects: number;
  dataVersionChanges: number;
  errors: number;
}

export interface MapperOptions {
  /** How often dataVersion() is polled, ms (default 500). */
  pollIntervalMs?: number;
  /** How long changes are gathered before one recompute, ms (default 50). */
  batchDelayMs?: number;
}

export interface Mapper {
  /** The account's view, cached until the next change. */
  view(accountId: string): AccountView | undefined;
  /** Something in the account changed (or every account, without an id): recompute soon. */
  markDirty(accountId?: string): void;
  /** Recompute the dirty accounts now (tests, shutdown). */
  flush(): void;
  /** Sessions holding this token are checked at once (sign-out in this process). */
  tokenRevoked(tokenId: string): void;
  counters(): MapperCounters;
  start(): void;
  stop(): void;
}

export function flowKey(clientId: string, resourceId: string): string {
  return `${clientId}/${resourceId}`;
}

export function createMapper(deps: {
  backend: ChannelBackend;
  registry: MapperRegistry;
  logger: Logger;
  now: () => number;
  options?: MapperOptions;
}): Mapper {
  const { backend, registry, logger, now } = deps;
  const pollIntervalMs = deps.options?.pollIntervalMs ?? 500;
  const batchDelayMs = deps.options?.batchDelayMs ?? 50;
  const views = new Map<string, AccountView | undefined>();
  const dirty = new Set<string>();
  let allDirty = false;
  let batchTimer: NodeJS.Timeout | undefined;
  let pollTimer: NodeJS.Timeout | undefined;
  let lastDataVersion = -1;
  const counters: MapperCounters = {
    recomputes: 0,
    resourceUpdatesSent: 0,
    resourceDeletesSent: 0,
    rejectAccessSent: 0,
    tokenDisconnects: 0,
    dataVersionChanges: 0,
    errors: 0,
  };

  const view = (accountId: string): AccountView | undefined => {
    if (views.has(accountId)) return views.get(accountId);
    const v = backend.accountView(accountId);
    views.set(accountId, v);
    return v;
  };

  const schedule = (): void => {
    if (batchTimer !== undefined) return;
    batchTimer = setTimeout(() => {
      batchTimer = undefined;
      flush();
    }, batchDelayMs);
    batchTimer.unref();
  };

  const markDirty = (accountId?: string): void => {
    if (accountId === undefined) {
      allDirty = true;
      views.clear();
    } else {
      dirty.add(accountId);
      views.delete(accountId);
    }
    schedule();
  };

  const tokenGone = (session: MappedSession, t: number): boolean => {
    if (session.tokenExpiresAt <= t) return true;
    return backend.tokenState(session.tokenId, t) !== 'valid';
  };

  const recomputeAccount = (accountId: string): void => {
    counters.recomputes += 1;
    const t = now();
    const v = view(accountId);
    const clients = [...registry.clients(accountId)];
    const gateways = [...registry.gateways(accountId)];
    if (v === undefined) {
      for (const s of [...clients, ...gateways]) {
        counters.tokenDisconnects += 1;
        s.disconnect(DISCONNECT_TOKEN_EXPIRED);
      }
      return;
    }
    for (const gateway of gateways) {
      if (tokenGone(gateway, t) || !v.sites.has(gateway.siteId)) {
        counters.tokenDisconnects += 1;
        gateway.disconnect(DISCONNECT_TOKEN_EXPIRED);
      }
    }
    const online = registry.onlineSites(accountId);
    for (const client of clients) {
      if (tokenGone(client, t)) {
        counters.tokenDisconnects += 1;
        client.disconnect(DISCONNECT_TOKEN_EXPIRED);
        continue;
      }
      if (!client.joined) continue;
      const diff = diffResources(client.sentResources, clientResources(v, client.actorId, online));
      client.sentResources = diff.next;
      for (const payload of diff.upserts) {
        counters.resourceUpdatesSent += 1;
        client.push('resource_created_or_updated', payload);
      }
      for (const id of diff.deletes) {
        counters.resourceDeletesSent += 1;
        client.push('resource_deleted', { id });
      }
    }
    for (const gateway of gateways) {
      if (!gateway.joined) continue;
      for (const [key, flow] of gateway.flows) {
        const resource = v.resources.get(flow.resourceId);
        const allowed =
          resource !== undefined &&
          resource.siteId === gateway.siteId &&
          v.allowedResourceIds(flow.client.actorId).has(flow.resourceId);
        if (!allowed) {
          gateway.flows.delete(key);
          flow.client.forgetFlow(flow.resourceId);
          counters.rejectAccessSent += 1;
          gateway.push('reject_access', { client_id: flow.clientId, resource_id: flow.resourceId });
          continue;
        }
        const text = JSON.stringify(gatewayResourcePayload(resource));
        if (text !== flow.resourceText) {
          flow.resourceText = text;
          gateway.push('resource_updated', gatewayResourcePayload(resource));
        }
      }
    }
  };

  const flush = (): void => {
    if (batchTimer !== undefined) {
      clearTimeout(batchTimer);
      batchTimer = undefined;
    }
    const accounts = allDirty ? new Set(registry.accounts()) : new Set(dirty);
    allDirty = false;
    dirty.clear();
    for (const accountId of accounts) {
      try {
        recomputeAccount(accountId);
      } catch (error) {
        counters.errors += 1;
        logger.error(`mapper: recomputing an account failed: ${(error as Error).message}`);
      }
    }
  };

  /** Token expiry by time needs no database: checked against what each session holds. */
  const expireByTime = (): void => {
    const t = now();
    for (const accountId of registry.accounts()) {
      for (const s of [...registry.clients(accountId), ...registry.gateways(accountId)]) {
        if (s.tokenExpiresAt <= t) {
          counters.tokenDisconnects += 1;
          s.disconnect(DISCONNECT_TOKEN_EXPIRED);
        }
      }
    }
  };

  const poll = (): void => {
    try {
      const version = backend.dataVersion();
      if (lastDataVersion !== -1 && version !== lastDataVersion) {
        counters.dataVersionChanges += 1;
        markDirty();
      }
      lastDataVersion = version;
      expireByTime();
    } catch (error) {
      counters.errors += 1;
      logger.error(`mapper: polling the database failed: ${(error as Error).message}`);
    }
  };

  return {
    view,
    markDirty,
    flush,
    tokenRevoked(tokenId: string): void {
      const t = now();
      for (const accountId of registry.accounts()) {
        for (const s of [...registry.clients(accountId), ...registry.gateways(accountId)]) {
          if (s.tokenId === tokenId && tokenGone(s, t)) {
            counters.tokenDisconnects += 1;
            s.disconnect(DISCONNECT_TOKEN_EXPIRED);
          }
        }
      }
    },
    counters: () => ({ ...counters }),
    start(): void {
      if (pollTimer !== undefined) return;
      lastDataVersion = backend.dataVersion();
      pollTimer = setInterval(poll, pollIntervalMs);
      pollTimer.unref();
    },
    stop(): void {
      if (pollTimer !== undefined) clearInterval(pollTimer);
      pollTimer = undefined;
      if (batchTimer !== undefined) clearTimeout(batchTimer);
      batchTimer = undefined;
    },
  };
}
