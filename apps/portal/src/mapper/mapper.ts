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
  /** Pushes config_changed if the account's interface settings or ranges changed since init. */
  configChanged?(view: AccountView): void;
  /** The flow to `resourceId` on `gateway` was rejected or the gateway left (a no-op if the
   * client's flow to that resource is now on another gateway). */
  forgetFlow(resourceId: string, gateway: MappedGateway): void;
}

export interface MappedGateway extends MappedSession {
  readonly siteId: string;
  readonly gatewayId: string;
  /** `${clientId}/${resourceId}` → flow. */
  flows: Map<string, MappedFlow>;
  /**
   * Drops the flow if it is still this gateway's: reject_access to the gateway, the client
   * forgets it, the kept copy is deleted. False when it was not (nothing done).
   */
  rejectFlow(flow: MappedFlow): boolean;
}

export interface MapperRegistry {
  /** Accounts with at least one live socket (joined or not). */
  accounts(): Iterable<string>;
  /** Every live socket of the account, joined or not: tokens are checked on all of them. */
  sessions(accountId: string): Iterable<MappedSession>;
  /** Joined clients. */
  clients(accountId: string): Iterable<MappedClient>;
  /** Joined gateways. */
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

  const rejectFlow = (gateway: MappedGateway, flow: MappedFlow): void => {
    if (gateway.rejectFlow(flow)) counters.rejectAccessSent += 1;
  };

  /** Every live socket of the account whose token is gone: disconnect{token_expired}. */
  const disconnectGone = (accountId: string, t: number, byTimeOnly: boolean): void => {
    for (const s of [...registry.sessions(accountId)]) {
      const gone = byTimeOnly ? s.tokenExpiresAt <= t : tokenGone(s, t);
      if (gone) {
        counters.tokenDisconnects += 1;
        s.disconnect(DISCONNECT_TOKEN_EXPIRED);
      }
    }
  };

  /**
   * Flows kept for clients that closed without their token going: rejected once that token is
   * gone (expired, revoked, actor disabled), checked once per token.
   */
  const rejectFlowsOfGoneTokens = (accountId: string, t: number, byTimeOnly: boolean): void => {
    const verdicts = new Map<string, boolean>();
    for (const gateway of [...registry.gateways(accountId)]) {
      for (const flow of [...gateway.flows.values()]) {
        if (flow.client.joined) continue;
        let gone = verdicts.get(flow.client.tokenId);
        if (gone === undefined) {
          gone = byTimeOnly ? flow.client.tokenExpiresAt <= t : tokenGone(flow.client, t);
          verdicts.set(flow.client.tokenId, gone);
        }
        if (gone) rejectFlow(gateway, flow);
      }
    }
  };

  const recomputeAccount = (accountId: string): void => {
    counters.recomputes += 1;
    const t = now();
    const v = view(accountId);
    if (v === undefined) {
      for (const s of [...registry.sessions(accountId)]) {
        counters.tokenDisconnects += 1;
        s.disconnect(DISCONNECT_TOKEN_EXPIRED);
      }
      return;
    }
    // Every socket, joined or not: one that left its channel may join again later.
    disconnectGone(accountId, t, false);
    for (const gateway of [...registry.gateways(accountId)]) {
      if (!v.sites.has(gateway.siteId)) {
        counters.tokenDisconnects += 1;
        gateway.disconnect(DISCONNECT_TOKEN_EXPIRED);
      }
    }
    rejectFlowsOfGoneTokens(accountId, t, false);
    const clients = [...registry.clients(accountId)];
    const gateways = [...registry.gateways(accountId)];
    const online = registry.onlineSites(accountId);
    for (const client of clients) {
      if (!client.joined) continue;
      client.configChanged?.(v);
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
      for (const flow of [...gateway.flows.values()]) {
        const resource = v.resources.get(flow.resourceId);
        const allowed =
          resource !== undefined &&
          resource.siteId === gateway.siteId &&
          v.allowedResourceIds(flow.client.actorId).has(flow.resourceId);
        if (!allowed) {
          rejectFlow(gateway, flow);
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
        // One commit for the kept flows it deletes.
        backend.transaction(() => recomputeAccount(accountId));
      } catch (error) {
        counters.errors += 1;
        logger.error(`mapper: recomputing an account failed: ${(error as Error).message}`);
      }
    }
  };

  /** Token expiry by time needs no database: checked against what each session holds. */
  const expireByTime = (): void => {
    const t = now();
    for (const accountId of [...registry.accounts()]) {
      disconnectGone(accountId, t, true);
      rejectFlowsOfGoneTokens(accountId, t, true);
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
      for (const accountId of [...registry.accounts()]) {
        for (const s of [...registry.sessions(accountId)]) {
          if (s.tokenId === tokenId && tokenGone(s, t)) {
            counters.tokenDisconnects += 1;
            s.disconnect(DISCONNECT_TOKEN_EXPIRED);
          }
        }
        rejectFlowsOfGoneTokens(accountId, t, false);
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
