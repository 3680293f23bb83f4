/**
 * The live side's ChannelBackend over the portal's PortalStorage.
 */
import type { PortalStorage, ResourceFilter, Token } from '../db/storage.ts';
import { compilePolicies, loadPolicyWorld } from '../policy/index.ts';
import { verifyToken } from '../tokens.ts';
import type {
  AccountView,
  ChannelBackend,
  ChannelTokenCheck,
  FlowRecord,
  KeptFlow,
  PortFilter,
  RegisterClientResult,
  ResourceView,
  SiteView,
  TokenState,
} from './backend.ts';
import { MAX_DEVICES_PER_ACTOR } from './backend.ts';

export interface StorageChannelBackendOptions {
  /** Upstream DNS servers handed to clients in `init` (`1.1.1.1`, `[2606:4700::1111]:53`…). */
  upstreamDns?: readonly string[];
  /** The search domain handed to clients in `init`, if any. */
  searchDomain?: string | null;
}

function stateOf(token: Token, now: number): TokenState {
  if (token.revokedAt !== null) return 'revoked';
  if (token.expiresAt !== null && token.expiresAt <= now) return 'expired';
  return 'valid';
}

function filtersOf(filters: readonly ResourceFilter[]): PortFilter[] {
  return filters.map((f) =>
    f.ports === undefined || f.ports.length === 0
      ? { protocol: f.protocol }
      : { protocol: f.protocol, ports: f.ports.map((p) => ({ from: p.from, to: p.to })) },
  );
}

export function storageChannelBackend(
  storage: PortalStorage,
  options: StorageChannelBackendOptions = {},
): ChannelBackend {
  const upstreamDns = [...(options.upstreamDns ?? [])];
  const searchDomain = options.searchDomain ?? null;

  const actorUsable = (actorId: string | null): boolean => {
    if (actorId === null) return true;
    const actor = storage.findActor(actorId);
    return actor !== undefined && actor.disabledAt === null;
  };

  return {
    verifyToken(text: string, now: number): ChannelTokenCheck {
      // The token's last use is recorded by the join, in the device's transaction (one commit).
      const verdict = verifyToken(storage, text, now);
      if (!verdict.ok) return verdict;
      const token = verdict.token;
      return {
        ok: true,
        token: {
          id: token.id,
          accountId: token.accountId,
          kind: token.kind,
          actorId: token.actorId,
          siteId: token.siteId,
          expiresAt: token.expiresAt ?? Number.MAX_SAFE_INTEGER,
        },
      };
    },

    tokenState(tokenId: string, now: number): TokenState {
      const token = storage.findToken(tokenId);
      if (token === undefined) return 'unknown';
      const state = stateOf(token, now);
      if (state === 'valid' && !actorUsable(token.actorId)) return 'revoked';
      return state;
    },

    registerClient(input): RegisterClientResult {
      return storage.transaction((): RegisterClientResult => {
        const bound = storage.bindTokenDevice(input.tokenId, input.externalId);
        if (bound !== input.externalId)
          return { ok: false, reason: 'token_bound_to_another_device' };
        const existing = storage.findDeviceByExternalId(
          input.accountId,
          input.actorId,
          input.externalId,
        );
        const others = storage
          .findDevicesByPublicKey(input.accountId, input.publicKey)
          .filter((d) => d.id !== existing?.id);
        if (others.length > 0) return { ok: false, reason: 'public_key_in_use' };
        if (
          existing === undefined &&
          storage.countDevices(input.accountId, input.actorId) >= MAX_DEVICES_PER_ACTOR
        ) {
          return { ok: false, reason: 'too_many_devices' };
        }
        storage.markTokenUsed(input.tokenId, input.now);
        const device = storage.upsertDevice({
          accountId: input.accountId,
          actorId: input.actorId,
          externalId: input.externalId,
          name: input.name,
          publicKey: input.publicKey,
          now: input.now,
        });
        return { ok: true, deviceId: device.id, ipv4: device.ipv4, ipv6: device.ipv6 };
      });
    },

    deviceAddresses(deviceId: string) {
      const device = storage.findDevice(deviceId);
      return device === undefined ? undefined : { ipv4: device.ipv4, ipv6: device.ipv6 };
    },

    registerGateway(input) {
      const gateway = storage.transaction(() => {
        storage.markTokenUsed(input.tokenId, input.now);
        return storage.upsertGateway({
          siteId: input.siteId,
          externalId: input.externalId,
          name: input.name,
          publicKey: input.publicKey,
          endpoint: input.endpoint,
          now: input.now,
        });
      });
      return { gatewayId: gateway.id, ipv4: gateway.ipv4, ipv6: gateway.ipv6 };
    },

    keepFlow(flow: FlowRecord, now: number): void {
      storage.saveFlow({
        gatewayId: flow.gatewayId,
        deviceId: flow.deviceId,
        resourceId: flow.resourceId,
        tokenId: flow.tokenId,
        clientPublicKey: flow.clientPublicKey,
        presharedKey: flow.presharedKey,
        domain:
          flow.domain === null
            ? null
            : { name: flow.domain.name, proxyIps: [...flow.domain.proxy_ips] },
        expiresAt: flow.expiresAt,
        now,
      });
    },

    keptFlows(gatewayId: string): KeptFlow[] {
      return storage.listFlows(gatewayId).map((flow) => ({
        gatewayId: flow.gatewayId,
        deviceId: flow.deviceId,
        resourceId: flow.resourceId,
        tokenId: flow.tokenId,
        clientPublicKey: flow.clientPublicKey,
        presharedKey: flow.presharedKey,
        domain:
          flow.domain === null
            ? null
            : { name: flow.domain.name, proxy_ips: [...flow.domain.proxyIps] },
        expiresAt: flow.expiresAt,
        device: { ...flow.device },
      }));
    },

    forgetFlows: (filter) => storage.deleteFlows(filter),
    forgetExpiredFlows: (now) => storage.deleteExpiredFlows(now),
    gatewaysWithKeptFlows: () => storage.listFlowGateways(),

    accountView(accountId: string): AccountView | undefined {
      const account = storage.findAccount(accountId);
      if (account === undefined) return undefined;
      const { world, siteRows } = storage.transaction(() => ({
        world: loadPolicyWorld(storage, accountId),
        siteRows: storage.listSites(accountId),
      }));
      const sites = new Map<string, SiteView>();
      for (const site of siteRows) sites.set(site.id, { id: site.id, name: site.name });
      const resources = new Map<string, ResourceView>();
      for (const r of world.resources) {
        const view: ResourceView = {
          id: r.id,
          type: r.type,
          name: r.name,
          siteId: r.siteId,
          filters: filtersOf(r.filters),
        };
        if (r.address !== null) view.address = r.address;
        resources.set(r.id, view);
      }
      const actorNames = new Map(world.actors.map((actor) => [actor.id, actor.name]));
      const index = compilePolicies(world);
      const allowedCache = new Map<string, ReadonlySet<string>>();
      return {
        accountId,
        slug: account.slug,
        ranges: { ...account.ranges },
        upstreamDns,
        searchDomain,
        sites,
        resources,
        allowedResourceIds(actorId: string): ReadonlySet<string> {
          let allowed = allowedCache.get(actorId);
          if (allowed === undefined) {
            allowed = new Set(index.resourcesFor(actorId).map((grant) => grant.resource.id));
            allowedCache.set(actorId, allowed);
          }
          return allowed;
        },
        actorName: (actorId: string) => actorNames.get(actorId),
      };
    },

    transaction: (fn) => storage.transaction(fn),
    dataVersion: () => storage.dataVersion(),
  };
}
