/**
 * The client channel (topic "client"): what the portal tells a client and what a client asks,
 * modelled on Firezone's client channel (connlib's client messages and the portal's client views).
 *
 * Portal → client: `init`, `config_changed`, `resource_created_or_updated`, `resource_deleted`,
 * `relays_presence`, `authorization_created`, `authorization_creation_failed`, `disconnect`,
 * and the ICE messages `ice_candidates` / `invalidate_ice_candidates` for the relay work.
 * Client → portal: `request_authorization`, and `broadcast_ice_candidates` /
 * `broadcast_invalidated_ice_candidates`. The join payload carries the client's WireGuard key
 * and who it is. Instants are epoch milliseconds.
 */

import { z } from 'zod';
import {
  AddressRangesSchema,
  ClientInterfaceSchema,
  DisconnectSchema,
  EndpointSchema,
  EpochMsSchema,
  IceCandidatesSchema,
  Ipv4Schema,
  Ipv6Schema,
  MAX_GATEWAY_ENDPOINTS,
  MAX_ICE_PEERS,
  MAX_NAME_CHARS,
  MAX_PORTAL_RESOURCES,
  PortalIdSchema,
  type PortalParseResult,
  RelaysPresenceSchema,
  RelaySchema,
  ResolvedDomainSchema,
  PortalResourceSchema,
  WireGuardKeySchema,
  isUnknownResourceType,
  sieveResources,
  MAX_PORTAL_RELAYS,
} from './common.ts';
import {
  defineChannel,
  type ChannelMessages,
  type JoinParse,
  type WireMessage,
} from './channel-definition.ts';

// ---------------------------------------------------------------------------------------------
// Join

/** What a client sends with `phx_join` on topic "client". */
export const ClientJoinPayloadSchema = z.object({
  /** The client's WireGuard public key for this session (a new one per sign-in is fine). */
  public_key: WireGuardKeySchema,
  /** A stable id the client keeps per device (Firezone's external id); the portal keys devices by it. */
  device_id: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces'),
  /** The device's name as the user sees it (its host name). */
  name: z.string().min(1).max(MAX_NAME_CHARS),
  os_name: z.string().min(1).max(64),
  os_version: z.string().min(1).max(64),
  /** The client's version, e.g. "0.1.0". */
  version: z.string().min(1).max(64).optional(),
});
export type ClientJoinPayload = z.infer<typeof ClientJoinPayloadSchema>;

// ---------------------------------------------------------------------------------------------
// Portal → client

/** Who the client is signed in as: the account, and the actor's name (a user's or a service account's). */
export const ClientIdentitySchema = z.object({
  account_slug: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$/, 'an account slug'),
  actor_name: z
    .string()
    .min(1)
    .max(MAX_NAME_CHARS)
    // eslint-disable-next-line no-control-regex
    .regex(/^[^\u0000-\u001f\u007f]+$/, 'a name without control characters'),
});
export type ClientIdentity = z.infer<typeof ClientIdentitySchema>;

export const ClientInitSchema = z.object({
  interface: ClientInterfaceSchema,
  address_ranges: AddressRangesSchema,
  resources: z.array(PortalResourceSchema).max(MAX_PORTAL_RESOURCES).default([]),
  relays: z.array(RelaySchema).max(MAX_PORTAL_RELAYS).default([]),
  /**
   * Absent from older portals' init. Shown to the user only, so one that does not parse reads
   * as absent (undefined) rather than refusing the whole init; a client that counts such a
   * problem reads the raw payload.
   */
  identity: ClientIdentitySchema.optional().catch(undefined),
});

export const ConfigChangedSchema = z.object({
  interface: ClientInterfaceSchema,
  address_ranges: AddressRangesSchema.optional(),
});

/** Firezone sends the bare id; Gatehouse wraps it in an object so the payload can grow. */
export const ResourceDeletedSchema = z.object({ id: PortalIdSchema });

/** The portal's answer to request_authorization, once the gateway has the flow. */
export const AuthorizationCreatedSchema = z.object({
  resource_id: PortalIdSchema,
  gateway_id: PortalIdSchema,
  site_id: PortalIdSchema,
  gateway_public_key: WireGuardKeySchema,
  /** Where the gateway listens; the client uses the first it can reach. */
  gateway_endpoints: z.array(EndpointSchema).max(MAX_GATEWAY_ENDPOINTS),
  gateway_ipv4: Ipv4Schema,
  gateway_ipv6: Ipv6Schema,
  /** A fresh preshared key for this client-gateway pair. */
  preshared_key: WireGuardKeySchema,
  /** When the authorization ends (epoch ms), or null for never. */
  expires_at: EpochMsSchema.nullable().default(null),
});

/** Firezone's failure reasons; anything else reads as "unknown" (a newer portal's reason). */
export const AUTHORIZATION_FAILURE_REASONS = [
  'not_found',
  'offline',
  'forbidden',
  'version_mismatch',
  'disabled',
  'unknown',
] as const;
export const AuthorizationFailureReasonSchema = z
  .enum(AUTHORIZATION_FAILURE_REASONS)
  .catch('unknown');
export type AuthorizationFailureReason = z.infer<typeof AuthorizationFailureReasonSchema>;

export const AuthorizationCreationFailedSchema = z.object({
  resource_id: PortalIdSchema,
  reason: AuthorizationFailureReasonSchema,
});

/** ICE candidates a gateway sent for this client (relay work). */
export const GatewayIceCandidatesSchema = z.object({
  gateway_id: PortalIdSchema,
  candidates: IceCandidatesSchema,
});

export const portalToClientSchemas = {
  init: ClientInitSchema,
  config_changed: ConfigChangedSchema,
  resource_created_or_updated: PortalResourceSchema,
  resource_deleted: ResourceDeletedSchema,
  relays_presence: RelaysPresenceSchema,
  authorization_created: AuthorizationCreatedSchema,
  authorization_creation_failed: AuthorizationCreationFailedSchema,
  disconnect: DisconnectSchema,
  ice_candidates: GatewayIceCandidatesSchema,
  invalidate_ice_candidates: GatewayIceCandidatesSchema,
} as const;

/** A message the portal sends a client. */
export type PortalToClientMessage = ChannelMessages<typeof portalToClientSchemas>;
export type PortalToClientEvent = PortalToClientMessage['event'];
export type ClientInit = z.infer<typeof ClientInitSchema>;
export type AuthorizationCreated = z.infer<typeof AuthorizationCreatedSchema>;

// ---------------------------------------------------------------------------------------------
// Client → portal

export const RequestAuthorizationSchema = z.object({
  resource_id: PortalIdSchema,
  /** Gateways the client already has a tunnel to; the portal prefers them (Firezone's hint). */
  connected_gateway_ids: z.array(PortalIdSchema).max(MAX_ICE_PEERS).default([]),
  /** For a DNS resource: the name the client resolved and the proxy addresses its stub gave it. */
  domain: ResolvedDomainSchema.optional(),
});
export type RequestAuthorization = z.infer<typeof RequestAuthorizationSchema>;

/** ICE candidates the client wants delivered to these gateways (relay work). */
export const BroadcastGatewayIceCandidatesSchema = z.object({
  gateway_ids: z.array(PortalIdSchema).min(1).max(MAX_ICE_PEERS),
  candidates: IceCandidatesSchema,
});

export const clientToPortalSchemas = {
  request_authorization: RequestAuthorizationSchema,
  broadcast_ice_candidates: BroadcastGatewayIceCandidatesSchema,
  broadcast_invalidated_ice_candidates: BroadcastGatewayIceCandidatesSchema,
} as const;

/** A message a client sends the portal. */
export type ClientToPortalMessage = ChannelMessages<typeof clientToPortalSchemas>;
export type ClientToPortalEvent = ClientToPortalMessage['event'];

// ---------------------------------------------------------------------------------------------
// Parse and encode

const clientChannel = defineChannel({
  portalTo: portalToClientSchemas,
  toPortal: clientToPortalSchemas,
  join: ClientJoinPayloadSchema,
  prepareFromPortal(event, object, sieve) {
    if (event === 'init')
      return { ...object, resources: sieveResources(object.resources, sieve, 'resources') };
    if (event === 'resource_created_or_updated' && isUnknownResourceType(object)) return 'ignored';
    return object;
  },
});

/** What a client makes of a portal push; never throws. */
export const parsePortalToClient: (
  event: string,
  payload: unknown,
) => PortalParseResult<PortalToClientMessage> = clientChannel.parseFromPortal;

/** What the portal makes of a client's push; never throws. */
export const parseClientToPortal: (
  event: string,
  payload: unknown,
) => PortalParseResult<ClientToPortalMessage> = clientChannel.parseToPortal;

/** The portal's check of a client's phx_join payload; never throws. */
export const parseClientJoin: (payload: unknown) => JoinParse<ClientJoinPayload> =
  clientChannel.parseJoin;

/** The `{event, payload}` of a portal push, ready to frame (the wire form is the message's form). */
export const encodePortalToClient: (message: PortalToClientMessage) => WireMessage =
  clientChannel.encodeFromPortal;

/** The `{event, payload}` of a client push, ready to frame. */
export const encodeClientToPortal: (message: ClientToPortalMessage) => WireMessage =
  clientChannel.encodeToPortal;
