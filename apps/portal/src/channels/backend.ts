/**
 * What the live side (the WebSocket channels and the mapper) needs from storage, tokens and
 * policies, in its own words. All synchronous, like the SQLite storage under it.
 * `storageChannelBackend` (storage-backend.ts) implements it over PortalStorage; tests may use
 * `createMemoryChannelBackend` (memory-backend.ts).
 */

export type ChannelKind = 'client' | 'gateway';

export interface ChannelToken {
  id: string;
  accountId: string;
  /** browser_client | headless_client | service_account | gateway */
  kind: string;
  /** The actor a client token signs in as; null for a gateway token. */
  actorId: string | null;
  /** The site a gateway token belongs to; null for a client token. */
  siteId: string | null;
  /** Epoch ms. */
  expiresAt: number;
}

export type ChannelTokenCheck =
  | { ok: true; token: ChannelToken }
  | { ok: false; reason: 'malformed' | 'unknown' | 'expired' | 'revoked' };

export type TokenState = 'valid' | 'expired' | 'revoked' | 'unknown';

export interface PortFilter {
  protocol: 'tcp' | 'udp' | 'icmp';
  ports?: { from: number; to: number }[];
}

export interface ResourceView {
  id: string;
  type: 'cidr' | 'dns' | 'internet';
  name: string;
  /** CIDR prefix, DNS pattern; absent for the Internet resource. */
  address?: string;
  addressDescription?: string | null;
  siteId: string;
  filters: PortFilter[];
}

export interface SiteView {
  id: string;
  name: string;
}

/** One account's configuration as the live side sees it, read once per change. */
export interface AccountView {
  accountId: string;
  slug: string;
  /** Tunnel and proxy prefixes (text); the proxy ones are what DNS resources' addresses come from. */
  ranges: { tunnelIpv4: string; tunnelIpv6: string; proxyIpv4: string; proxyIpv6: string };
  upstreamDns: string[];
  searchDomain: string | null;
  sites: ReadonlyMap<string, SiteView>;
  resources: ReadonlyMap<string, ResourceView>;
  /** The resource ids the actor's policies allow (through its groups). */
  allowedResourceIds(actorId: string): ReadonlySet<string>;
  /** The actor's name (a user's, a service account's); undefined for no actor of the account. */
  actorName(actorId: string): string | undefined;
}

export interface InterfaceAddresses {
  ipv4: string;
  ipv6: string;
}

export interface RegisterClientInput {
  accountId: string;
  actorId: string;
  tokenId: string;
  publicKey: string;
  /** The client's stable device id (Firezone's external_id). */
  externalId: string;
  name: string;
  now: number;
}

export const CLIENT_JOIN_REFUSALS = [
  'token_bound_to_another_device',
  'too_many_devices',
  'public_key_in_use',
] as const;
export type ClientJoinRefusal = (typeof CLIENT_JOIN_REFUSALS)[number];

/** Devices one actor may have; a join that would make more is refused. */
export const MAX_DEVICES_PER_ACTOR = 64;

export type RegisterClientResult =
  ({ ok: true; deviceId: string } & InterfaceAddresses) | { ok: false; reason: ClientJoinRefusal };

export interface RegisterGatewayInput {
  accountId: string;
  siteId: string;
  tokenId: string;
  publicKey: string;
  externalId: string;
  name: string;
  /** host:port or [v6]:port the gateway listens on for WireGuard, if it said. */
  endpoint: string | null;
  now: number;
}

/** A flow as the portal keeps it, so that a restarted portal can hand it back (migration 0003). */
export interface FlowRecord {
  gatewayId: string;
  /** The client device's id. */
  deviceId: string;
  resourceId: string;
  /** The client token it was authorized under. */
  tokenId: string;
  clientPublicKey: string;
  /** The client-gateway pair's preshared key: a session secret, never logged. */
  presharedKey: string;
  /** authorize_flow's domain (DNS resources), as sent. */
  domain: { name: string; proxy_ips: string[] } | null;
  /** Epoch ms; null for never. */
  expiresAt: number | null;
}

/** A kept flow with its device as it is now. */
export interface KeptFlow extends FlowRecord {
  device: { actorId: string; publicKey: string; ipv4: string; ipv6: string };
}

export type KeptFlowFilter =
  { deviceId: string; resourceId?: string; gatewayId?: string } | { gatewayId: string };

export interface ChannelBackend {
  verifyToken(text: string, now: number): ChannelTokenCheck;
  /** Whether a token verified earlier is still good (revoked by the CLI, expired by time). */
  tokenState(tokenId: string, now: number): TokenState;
  /**
   * Upserts the device (public key, device id, name, last seen); its tunnel addresses. Refused
   * (nothing written) when the token is bound to another device, the actor has
   * MAX_DEVICES_PER_ACTOR devices already, or another device of the account holds the key.
   */
  registerClient(input: RegisterClientInput): RegisterClientResult;
  /** A device's current tunnel addresses (they change when the account's ranges do). */
  deviceAddresses(deviceId: string): InterfaceAddresses | undefined;
  /** Upserts the gateway (public key, endpoint, last seen); its tunnel addresses. */
  registerGateway(input: RegisterGatewayInput): { gatewayId: string } & InterfaceAddresses;
  /**
   * Keeps a flow the gateway confirmed (the domain added to the flow's names); rows of that
   * device and resource on another gateway or with other keys go (it was replaced).
   */
  keepFlow(flow: FlowRecord, now: number): void;
  /** The flows kept for a gateway, one per (device, resource, domain). */
  keptFlows(gatewayId: string): KeptFlow[];
  forgetFlows(filter: KeptFlowFilter): number;
  forgetExpiredFlows(now: number): number;
  /** The gateways with kept flows. */
  gatewaysWithKeptFlows(): string[];
  /** The account's current configuration; undefined if it is gone. */
  accountView(accountId: string): AccountView | undefined;
  /** Runs fn in one transaction (nested calls are savepoints); fn is synchronous. */
  transaction<T>(fn: () => T): T;
  /** Changes when another process commits to the database (PRAGMA data_version). */
  dataVersion(): number;
}
