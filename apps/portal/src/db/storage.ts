/**
 * The portal's storage: one synchronous interface over the embedded database (SQLite through
 * node:sqlite's DatabaseSync, see sqlite-storage.ts), and the domain types it hands out.
 *
 * Conventions:
 * - IDs are random UUIDs made by the storage (crypto.randomUUID).
 * - Time is an input: every timestamp is epoch milliseconds passed in by the caller; the
 *   storage never reads the clock.
 * - Lookups return `undefined` for "no such row"; writes that break a rule (a duplicate name,
 *   a reference to a row that does not exist, an exhausted address range) throw StorageError
 *   with a code, and change nothing.
 * - Deleting a row deletes what hangs off it (foreign keys ON DELETE CASCADE): an account takes
 *   everything with it; an actor its password identity, tokens, devices and memberships; a
 *   group its memberships and policies; a resource its policies; a site its gateways, their
 *   tokens, and its resources.
 * - The token table keeps a token's id and the SHA-256 of its whole text, never the text.
 *
 * Later changes to this file only add.
 */

export type Id = string;

/** Epoch milliseconds. */
export type Millis = number;

// ---------------------------------------------------------------------------------------------
// Accounts

/**
 * Where an account's clients and gateways get their tunnel addresses, and the ranges its
 * clients' DNS stub hands out proxy addresses from (for DNS resources). Prefixes in text
 * (`100.64.0.0/11`). Configurable per account: the defaults sit in 100.64.0.0/10, which is
 * carrier-grade NAT's shared space (RFC 6598) and what other VPNs (Tailscale among them) use,
 * so they collide on some networks.
 */
export interface AccountRanges {
  tunnelIpv4: string;
  tunnelIpv6: string;
  proxyIpv4: string;
  proxyIpv6: string;
}

/** The defaults (Firezone's ranges; the proxy ones are the DNS stub's defaults). */
export const DEFAULT_ACCOUNT_RANGES: Readonly<AccountRanges> = Object.freeze({
  tunnelIpv4: '100.64.0.0/11',
  tunnelIpv6: 'fd00:2021:1111::/107',
  proxyIpv4: '100.96.0.0/11',
  proxyIpv6: 'fd00:2021:1111:8000::/107',
});

export interface Account {
  id: Id;
  /** In URLs: `[A-Za-z0-9][A-Za-z0-9_-]{0,99}`, unique. */
  slug: string;
  name: string;
  ranges: AccountRanges;
  createdAt: Millis;
  updatedAt: Millis;
}

export interface CreateAccountInput {
  slug: string;
  name: string;
  /** Missing fields take DEFAULT_ACCOUNT_RANGES'. */
  ranges?: Partial<AccountRanges>;
  now: Millis;
}

export interface UpdateAccountInput {
  name?: string;
  /**
   * Changing a tunnel range renumbers the account's devices and gateways into the new range
   * (in creation order); the proxy ranges are only handed to clients.
   */
  ranges?: Partial<AccountRanges>;
  now: Millis;
}

// ---------------------------------------------------------------------------------------------
// Actors and password identities

export type ActorKind = 'user' | 'service_account';

export interface Actor {
  id: Id;
  accountId: Id;
  kind: ActorKind;
  /** Unique within the account (over both kinds). */
  name: string;
  /** Users: unique within the account when set (compared as stored). Service accounts: null. */
  email: string | null;
  /** Set when the actor may no longer sign in or connect. */
  disabledAt: Millis | null;
  createdAt: Millis;
  updatedAt: Millis;
}

export interface CreateActorInput {
  accountId: Id;
  kind: ActorKind;
  name: string;
  email?: string | null;
  now: Millis;
}

export interface UpdateActorInput {
  name?: string;
  email?: string | null;
  /** true: disable (disabledAt = now) unless already; false: enable. */
  disabled?: boolean;
  now: Millis;
}

export interface PasswordIdentity {
  actorId: Id;
  /** `scrypt$N$r$p$salt$hash` (http/passwords.ts). */
  passwordHash: string;
  createdAt: Millis;
  updatedAt: Millis;
}

// ---------------------------------------------------------------------------------------------
// Tokens

/** browser_client and headless_client sign a user's device in; the others are operator-made. */
export type TokenKind = 'browser_client' | 'headless_client' | 'service_account' | 'gateway';

export const TOKEN_KINDS: readonly TokenKind[] = [
  'browser_client',
  'headless_client',
  'service_account',
  'gateway',
];

export interface Token {
  /** The id part of the token text (16 random bytes, base64url); also the row's key. */
  id: string;
  accountId: Id;
  kind: TokenKind;
  /** The actor the token signs in as; null for a gateway token. */
  actorId: Id | null;
  /** The site a gateway token joins; null for the other kinds. */
  siteId: Id | null;
  /** Lowercase hex SHA-256 of the whole token text. */
  hash: string;
  createdAt: Millis;
  /** null: never expires (operator tokens may be made so). */
  expiresAt: Millis | null;
  revokedAt: Millis | null;
  lastUsedAt: Millis | null;
}

export interface CreateTokenInput {
  id: string;
  accountId: Id;
  kind: TokenKind;
  /** Required for every kind but gateway. */
  actorId?: Id | null;
  /** Required for gateway, refused for the others. */
  siteId?: Id | null;
  hash: string;
  expiresAt: Millis | null;
  now: Millis;
}

export interface TokenFilter {
  accountId?: Id;
  actorId?: Id;
  siteId?: Id;
  kind?: TokenKind;
  /** false (the default): revoked tokens too. */
  activeOnly?: boolean;
  /** With activeOnly: the time against which expiry is judged. */
  now?: Millis;
}

// ---------------------------------------------------------------------------------------------
// Devices (clients), sites, gateways

export interface Device {
  id: Id;
  accountId: Id;
  actorId: Id;
  /** The client's own stable id for the machine (Firezone's external_id). */
  externalId: string;
  name: string;
  /** WireGuard public key, base64 (44 characters). */
  publicKey: string;
  /** Tunnel addresses from the account's tunnel ranges, no two alike in the account. */
  ipv4: string;
  ipv6: string;
  createdAt: Millis;
  updatedAt: Millis;
  lastSeenAt: Millis | null;
  /** The address the client last connected from (text), when known. */
  lastSeenRemoteAddress: string | null;
}

export interface UpsertDeviceInput {
  accountId: Id;
  actorId: Id;
  externalId: string;
  name: string;
  publicKey: string;
  now: Millis;
  remoteAddress?: string | null;
}

export interface Site {
  id: Id;
  accountId: Id;
  /** Unique within the account. */
  name: string;
  createdAt: Millis;
  updatedAt: Millis;
}

/** Whether a gateway is online is the live registry's business (serve), not the storage's. */
export interface Gateway {
  id: Id;
  accountId: Id;
  siteId: Id;
  /** The gateway's own stable id; unique within the site. */
  externalId: string;
  name: string;
  publicKey: string;
  /** `addr:port` / `[v6]:port` where clients reach it, when it told us. */
  endpoint: string | null;
  ipv4: string;
  ipv6: string;
  createdAt: Millis;
  updatedAt: Millis;
  lastSeenAt: Millis | null;
}

export interface UpsertGatewayInput {
  siteId: Id;
  externalId: string;
  name: string;
  publicKey: string;
  endpoint?: string | null;
  now: Millis;
}

// ---------------------------------------------------------------------------------------------
// Resources, groups, memberships, policies

export type ResourceType = 'cidr' | 'dns' | 'internet';
export type FilterProtocol = 'tcp' | 'udp' | 'icmp';

export interface PortRange {
  from: number;
  to: number;
}

/** No filters on a resource: everything is allowed. Ports only for tcp and udp. */
export interface ResourceFilter {
  protocol: FilterProtocol;
  /** Missing or empty: every port. */
  ports?: PortRange[];
}

export interface Resource {
  id: Id;
  accountId: Id;
  siteId: Id;
  type: ResourceType;
  /** Unique within the account. */
  name: string;
  /**
   * cidr: a prefix (`10.0.0.0/24`, `fd00::/64`); dns: a name or the stub's wildcard pattern
   * (`*.example.com`, `?.example.com`, `**.example.com`); internet: null.
   */
  address: string | null;
  filters: ResourceFilter[];
  createdAt: Millis;
  updatedAt: Millis;
}

export interface CreateResourceInput {
  accountId: Id;
  siteId: Id;
  type: ResourceType;
  name: string;
  address: string | null;
  filters?: ResourceFilter[];
  now: Millis;
}

export interface UpdateResourceInput {
  siteId?: Id;
  type?: ResourceType;
  name?: string;
  address?: string | null;
  filters?: ResourceFilter[];
  now: Millis;
}

export interface Group {
  id: Id;
  accountId: Id;
  /** Unique within the account. */
  name: string;
  createdAt: Millis;
  updatedAt: Millis;
}

export interface Membership {
  groupId: Id;
  actorId: Id;
  createdAt: Millis;
}

/** Members of `groupId` may reach `resourceId`. One per (group, resource). */
export interface Policy {
  id: Id;
  accountId: Id;
  groupId: Id;
  resourceId: Id;
  description: string | null;
  createdAt: Millis;
  updatedAt: Millis;
}

export interface CreatePolicyInput {
  groupId: Id;
  resourceId: Id;
  description?: string | null;
  now: Millis;
}

// ---------------------------------------------------------------------------------------------
// Flows

/** For a DNS resource: the name the client resolved and the proxy addresses its stub gave it. */
export interface FlowDomain {
  name: string;
  proxyIps: string[];
}

/**
 * A client device may reach a resource through a gateway (the gateway confirmed it). One per
 * (device, resource, domain): a DNS resource's flow has one per name the client asked for, all
 * naming the same gateway and preshared key.
 */
export interface Flow {
  accountId: Id;
  gatewayId: Id;
  deviceId: Id;
  resourceId: Id;
  /** The client token it was authorized under. */
  tokenId: string;
  /** The client's WireGuard public key as authorized. */
  clientPublicKey: string;
  /** The WireGuard preshared key of the client-gateway pair: a session secret, never logged. */
  presharedKey: string;
  domain: FlowDomain | null;
  expiresAt: Millis | null;
  createdAt: Millis;
  /** The device as it is now (its actor, addresses and key), read with the flow. */
  device: { actorId: Id; publicKey: string; ipv4: string; ipv6: string };
}

export interface SaveFlowInput {
  gatewayId: Id;
  deviceId: Id;
  resourceId: Id;
  tokenId: string;
  clientPublicKey: string;
  presharedKey: string;
  domain: FlowDomain | null;
  expiresAt: Millis | null;
  now: Millis;
}

/** Which flows deleteFlows deletes: a device's (to one resource, on one gateway), or a gateway's. */
export type FlowFilter = { deviceId: Id; resourceId?: Id; gatewayId?: Id } | { gatewayId: Id };

// ---------------------------------------------------------------------------------------------
// Errors

export type StorageErrorCode =
  /** A unique rule would break (a second account with the slug, …). */
  | 'conflict'
  /** A referenced row does not exist (or is in another account). */
  | 'not_found'
  /** A value the storage refuses (a bad range, a token without its actor, …). */
  | 'invalid'
  /** The account's tunnel range has no free address left. */
  | 'range_exhausted';

export class StorageError extends Error {
  readonly code: StorageErrorCode;
  constructor(code: StorageErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StorageError';
    this.code = code;
  }
}

// ---------------------------------------------------------------------------------------------
// The interface

export interface PortalStorage {
  // accounts
  createAccount(input: CreateAccountInput): Account;
  updateAccount(id: Id, input: UpdateAccountInput): Account;
  /** Deletes the account and everything in it. False when there was none. */
  deleteAccount(id: Id): boolean;
  findAccount(id: Id): Account | undefined;
  findAccountBySlug(slug: string): Account | undefined;
  listAccounts(): Account[];

  // actors
  createActor(input: CreateActorInput): Actor;
  updateActor(id: Id, input: UpdateActorInput): Actor;
  deleteActor(id: Id): boolean;
  findActor(id: Id): Actor | undefined;
  findActorByName(accountId: Id, name: string): Actor | undefined;
  findActorByEmail(accountId: Id, email: string): Actor | undefined;
  listActors(accountId?: Id, kind?: ActorKind): Actor[];

  // password identities
  /** Creates or replaces the actor's password identity. */
  setPasswordIdentity(actorId: Id, passwordHash: string, now: Millis): PasswordIdentity;
  findPasswordIdentity(actorId: Id): PasswordIdentity | undefined;
  deletePasswordIdentity(actorId: Id): boolean;

  // tokens
  createToken(input: CreateTokenInput): Token;
  findToken(id: string): Token | undefined;
  /** Sets revokedAt unless already set. True when this call revoked it. */
  revokeToken(id: string, now: Millis): boolean;
  markTokenUsed(id: string, now: Millis): void;
  /**
   * Binds a client token to a device's external id on its first join; returns the external id
   * the token is bound to (the given one, or the one it was bound to before).
   */
  bindTokenDevice(id: string, externalId: string): string;
  listTokens(filter?: TokenFilter): Token[];

  // devices
  /**
   * A client joining: the device (account, actor, externalId) is created with fresh tunnel
   * addresses, or its name and public key are updated (addresses kept); lastSeenAt = now. A new
   * public key deletes the device's flows (a gateway's peer is that key).
   */
  upsertDevice(input: UpsertDeviceInput): Device;
  findDevice(id: Id): Device | undefined;
  findDeviceByExternalId(accountId: Id, actorId: Id, externalId: string): Device | undefined;
  /** The account's devices holding this WireGuard public key. */
  findDevicesByPublicKey(accountId: Id, publicKey: string): Device[];
  touchDevice(id: Id, now: Millis, remoteAddress?: string | null): void;
  deleteDevice(id: Id): boolean;
  listDevices(accountId?: Id, actorId?: Id): Device[];
  /** How many devices the actor has in the account (the per-person cap). */
  countDevices(accountId: Id, actorId: Id): number;

  // sites
  createSite(accountId: Id, name: string, now: Millis): Site;
  renameSite(id: Id, name: string, now: Millis): Site;
  deleteSite(id: Id): boolean;
  findSite(id: Id): Site | undefined;
  findSiteByName(accountId: Id, name: string): Site | undefined;
  listSites(accountId?: Id): Site[];

  // gateways
  /** A gateway joining: created with fresh tunnel addresses or updated; lastSeenAt = now. */
  upsertGateway(input: UpsertGatewayInput): Gateway;
  findGateway(id: Id): Gateway | undefined;
  touchGateway(id: Id, now: Millis): void;
  deleteGateway(id: Id): boolean;
  listGateways(accountId?: Id, siteId?: Id): Gateway[];

  // resources
  createResource(input: CreateResourceInput): Resource;
  updateResource(id: Id, input: UpdateResourceInput): Resource;
  deleteResource(id: Id): boolean;
  findResource(id: Id): Resource | undefined;
  findResourceByName(accountId: Id, name: string): Resource | undefined;
  listResources(accountId?: Id, siteId?: Id): Resource[];

  // groups and memberships
  createGroup(accountId: Id, name: string, now: Millis): Group;
  renameGroup(id: Id, name: string, now: Millis): Group;
  deleteGroup(id: Id): boolean;
  findGroup(id: Id): Group | undefined;
  findGroupByName(accountId: Id, name: string): Group | undefined;
  listGroups(accountId?: Id): Group[];
  /** Idempotent: true when the membership was added now. Both must be in the same account. */
  addMembership(groupId: Id, actorId: Id, now: Millis): boolean;
  removeMembership(groupId: Id, actorId: Id): boolean;
  /** Every membership of the account's groups (or of one group / one actor). */
  listMemberships(filter: { accountId?: Id; groupId?: Id; actorId?: Id }): Membership[];

  // policies
  createPolicy(input: CreatePolicyInput): Policy;
  updatePolicyDescription(id: Id, description: string | null, now: Millis): Policy;
  deletePolicy(id: Id): boolean;
  findPolicy(id: Id): Policy | undefined;
  findPolicyFor(groupId: Id, resourceId: Id): Policy | undefined;
  listPolicies(accountId?: Id): Policy[];

  // flows
  /**
   * Records the flow of (device, resource) on the gateway, with the domain (if any) added to its
   * names; token and expiry apply to all its rows. Rows of that device and resource naming
   * another gateway, preshared key or client key are deleted first (the flow was replaced).
   */
  saveFlow(input: SaveFlowInput): void;
  /** The gateway's flows with their devices, by device, resource and domain. */
  listFlows(gatewayId: Id): Flow[];
  /** How many rows were deleted. */
  deleteFlows(filter: FlowFilter): number;
  /** Deletes the flows with expiresAt <= now; how many. */
  deleteExpiredFlows(now: Millis): number;
  /** The gateways with at least one flow. */
  listFlowGateways(): Id[];

  /**
   * SQLite's PRAGMA data_version: changes when another connection (another process: the CLI's
   * `apply` or `token revoke`) commits. `serve` polls it to notice those changes. Its own
   * commits do not change it.
   */
  dataVersion(): number;
  /**
   * Runs fn in one transaction: its writes commit together when it returns, none when it
   * throws (the error is rethrown). A nested call is a savepoint inside the outer transaction
   * (its throw undoes only its own writes). fn must be synchronous.
   */
  transaction<T>(fn: () => T): T;
  close(): void;
}
