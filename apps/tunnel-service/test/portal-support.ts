/**
 * The real portal in-process for the tunnel service's tests: `serve` on 127.0.0.1 (port 0 the
 * first time, the same port after a restart) over SQLite in a temp dir, an account seeded
 * through its storage (alice in eng, who may reach a CIDR and a DNS resource of site hq, and
 * not a third one), tokens made the way the portal makes them, and a fake gateway on the
 * portal's gateway channel that answers every authorize_flow with flow_authorized.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PortalStorage } from '@gatehouse/portal/src/db/storage.ts';
import { runServe, type RunningPortal } from '@gatehouse/portal/src/serve.ts';
import { issueToken } from '@gatehouse/portal/src/tokens.ts';
import { PhoenixSocket } from '@gatehouse/phoenix-channel';
import { encodeKey, generateKeyPair } from '@gatehouse/wireguard';

export const WIKI_PREFIX = '10.61.0.0/24';
export const FORBIDDEN_PREFIX = '10.61.1.0/24';
export const GIT_PATTERN = '*.git.corp.example';
export const UPSTREAM_DNS = '192.0.2.53';
export const SEARCH_DOMAIN = 'corp.example';
/** What the fake gateway tells clients to dial. */
export const GATEWAY_ENDPOINT = '127.0.0.1:51999';
/** Quick reconnects, so a restart is over in a second or two. */
export const FAST_BACKOFF = { initialMs: 100, maxMs: 500, multiplier: 2, jitter: 0.2 };

export interface PortalToken {
  id: string;
  text: string;
}

export interface PortalWorld {
  /** The portal now running (a new one after restart()). */
  readonly portal: RunningPortal;
  readonly storage: PortalStorage;
  readonly accountId: string;
  readonly siteId: string;
  readonly alice: string;
  /** A headless client token of alice's. */
  readonly token: PortalToken;
  /** A headless client token of alice's, made now. */
  clientToken(): PortalToken;
  /** A gateway token of site hq. */
  gatewayToken(): PortalToken;
  /** Revokes the token as `gatehouse-portal token revoke` does, and tells the live portal. */
  revoke(tokenId: string): void;
  /** Stops the portal and serves the same database on the same port again. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

export async function startPortal(): Promise<PortalWorld> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-tunnel-portal-'));
  const database = join(dir, 'portal.db');
  const serve = (listen: string) =>
    runServe({
      database,
      listen,
      handleSignals: false,
      upstreamDns: [UPSTREAM_DNS],
      searchDomain: SEARCH_DOMAIN,
      channels: { mapper: { pollIntervalMs: 100, batchDelayMs: 10 } },
    });
  let portal: RunningPortal;
  try {
    portal = await serve('127.0.0.1:0');
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const storage = portal.storage;
  const now = Date.now();
  const account = storage.createAccount({ slug: 'acme', name: 'Acme', now });
  const alice = storage.createActor({ accountId: account.id, kind: 'user', name: 'alice', now }).id;
  const eng = storage.createGroup(account.id, 'eng', now).id;
  storage.addMembership(eng, alice, now);
  const siteId = storage.createSite(account.id, 'hq', now).id;
  const resource = (type: 'cidr' | 'dns', name: string, address: string): string =>
    storage.createResource({ accountId: account.id, siteId, type, name, address, now }).id;
  const wiki = resource('cidr', 'wiki', WIKI_PREFIX);
  resource('cidr', 'forbidden', FORBIDDEN_PREFIX);
  const git = resource('dns', 'git', GIT_PATTERN);
  storage.createPolicy({ groupId: eng, resourceId: wiki, now });
  storage.createPolicy({ groupId: eng, resourceId: git, now });
  portal.hub.mapper.markDirty(account.id);

  const issue = (kind: 'headless_client' | 'gateway'): PortalToken => {
    const issued = issueToken(portal.storage, {
      accountId: account.id,
      kind,
      ...(kind === 'gateway' ? { siteId } : { actorId: alice }),
      now: Date.now(),
      expiresAt: Date.now() + 3_600_000,
    });
    return { id: issued.token.id, text: issued.text };
  };
  let closed = false;
  const world: PortalWorld = {
    get portal() {
      return portal;
    },
    get storage() {
      return portal.storage;
    },
    accountId: account.id,
    siteId,
    alice,
    token: issue('headless_client'),
    clientToken: () => issue('headless_client'),
    gatewayToken: () => issue('gateway'),
    revoke(tokenId) {
      portal.storage.revokeToken(tokenId, Date.now());
      portal.hub.mapper.tokenRevoked(tokenId);
    },
    async restart() {
      const port = portal.port;
      await portal.stop();
      portal = await serve(`127.0.0.1:${port}`);
    },
    async close() {
      if (closed) return;
      closed = true;
      await portal.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return world;
}

export interface AuthorizeFlowSeen {
  ref: string;
  clientPublicKey: string;
  resourceId: string;
  domain: string | undefined;
}

/** A gateway of site hq on the portal's gateway channel: every authorize_flow is confirmed. */
export class FakeGateway {
  readonly publicKey = encodeKey(generateKeyPair().publicKey);
  readonly flows: AuthorizeFlowSeen[] = [];
  joins = 0;
  readonly #socket: PhoenixSocket;

  constructor(portalUrl: string, token: string) {
    this.#socket = new PhoenixSocket({
      url: `${portalUrl.replace(/^http/, 'ws')}/gateway/websocket`,
      token,
      topic: 'gateway',
      joinPayload: {
        public_key: this.publicKey,
        endpoints: [GATEWAY_ENDPOINT],
        device_id: 'fake-gateway-1',
        name: 'fake-gateway',
      },
      backoff: FAST_BACKOFF,
      onEvent: (event) => {
        if (event.type === 'joined') this.joins += 1;
        if (event.type !== 'message' || event.event !== 'authorize_flow') return;
        const payload = event.payload as {
          ref: string;
          client: { public_key: string };
          resource: { id: string };
          domain?: { name: string };
        };
        this.flows.push({
          ref: payload.ref,
          clientPublicKey: payload.client.public_key,
          resourceId: payload.resource.id,
          domain: payload.domain?.name,
        });
        this.#socket.push('flow_authorized', { ref: payload.ref });
      },
    });
    this.#socket.start();
  }

  close(): Promise<void> {
    return this.#socket.close();
  }
}
