/**
 * The gateway channel (topic "gateway"), modelled on Firezone's gateway channel (connlib's
 * gateway messages and the portal's gateway views).
 *
 * Portal → gateway: `init` (its tunnel addresses, the account's ranges, relays, and every flow it
 * should hold now, so a restarted gateway rebuilds its peers from it), `authorize_flow` (a client
 * may reach a resource through it until `expires_at`), `reject_access` (it may no longer),
 * `resource_updated` (a resource's address or filters changed), `relays_presence`, `disconnect`,
 * and the ICE messages for the relay work. Gateway → portal: `flow_authorized` (it holds the flow
 * of `ref`) and the ICE broadcasts. The join payload carries its WireGuard key and endpoints.
 *
 * `expires_at` is epoch milliseconds (an integer) or null for never; Firezone sends seconds,
 * Gatehouse keeps one unit for every instant it stores or sends.
 */

import { z } from 'zod';
import {
  AddressRangesSchema,
  DisconnectSchema,
  EndpointSchema,
  EpochMsSchema,
  GatewayInterfaceSchema,
  IceCandidatesSchema,
  Ipv4Schema,
  Ipv6Schema,
  MAX_GATEWAY_ENDPOINTS,
  MAX_ICE_PEERS,
  MAX_NAME_CHARS,
  MAX_PORTAL_AUTHORIZATIONS,
  MAX_PORTAL_RELAYS,
  PortalIdSchema,
  type PortalParseResult,
  RelaySchema,
  RelaysPresenceSchema,
  ResolvedDomainSchema,
  PortalResourceSchema,
  type ResourceSieve,
  WireGuardKeySchema,
  describeZodError,
  isPlainObject,
  isUnknownResourceType,
} from './common.ts';
import {
  defineChannel,
  type ChannelMessages,
  type JoinParse,
  type WireMessage,
} from './channel-definition.ts';

// ---------------------------------------------------------------------------------------------
// Join

/** What a gateway sends with `phx_join` on topic "gateway". */
export const GatewayJoinPayloadSchema = z.object({
  /** The gateway's WireGuard public key. */
  public_key: WireGuardKeySchema,
  /** Where clients reach it: `203.0.113.7:51820`, `[2001:db8::7]:51820`, `gw.example.com:51820`. */
  endpoints: z.array(EndpointSchema).min(1).max(MAX_GATEWAY_ENDPOINTS),
  /** A stable id the gateway keeps (Firezone's external id); a site token's gateways are told apart by it. */
  device_id: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces')
    .optional(),
  name: z.string().min(1).max(MAX_NAME_CHARS).optional(),
  version: z.string().min(1).max(64).optional(),
});
export type GatewayJoinPayload = z.infer<typeof GatewayJoinPayloadSchema>;

// ---------------------------------------------------------------------------------------------
// Portal → gateway

/** The client end of a flow, as the gateway configures its WireGuard peer. */
export const FlowClientSchema = z.object({
  id: PortalIdSchema,
  public_key: WireGuardKeySchema,
  preshared_key: WireGuardKeySchema,
  /** The client's tunnel addresses (its peer's allowed IPs). */
  ipv4: Ipv4Schema,
  ipv6: Ipv6Schema,
});
export type FlowClient = z.infer<typeof FlowClientSchema>;

export const AuthorizeFlowSchema = z.object({
  /** Echoed in flow_authorized so the portal knows the gateway holds the flow. */
  ref: z.string().min(1).max(128),
  client: FlowClientSchema,
  /** The resource with its filters (the gateway enforces them). */
  resource: PortalResourceSchema,
  /** For a DNS resource: the name the client resolved and the proxy addresses its stub gave it. */
  domain: ResolvedDomainSchema.optional(),
  /** When the flow ends (epoch ms), or null for never. */
  expires_at: EpochMsSchema.nullable(),
});
export type AuthorizeFlow = z.infer<typeof AuthorizeFlowSchema>;

export const GatewayInitSchema = z.object({
  interface: GatewayInterfaceSchema,
  address_ranges: AddressRangesSchema,
  relays: z.array(RelaySchema).max(MAX_PORTAL_RELAYS).default([]),
  /** Every flow the gateway should hold now (as authorize_flow would send each). */
  authorizations: z.array(AuthorizeFlowSchema).max(MAX_PORTAL_AUTHORIZATIONS).default([]),
});
export type GatewayInit = z.infer<typeof GatewayInitSchema>;

export const RejectAccessSchema = z.object({
  client_id: PortalIdSchema,
  resource_id: PortalIdSchema,
});

/** ICE candidates a client sent for this gateway (relay work). */
export const ClientIceCandidatesSchema = z.object({
  client_id: PortalIdSchema,
  candidates: IceCandidatesSchema,
});

export const portalToGatewaySchemas = {
  init: GatewayInitSchema,
  authorize_flow: AuthorizeFlowSchema,
  reject_access: RejectAccessSchema,
  resource_updated: PortalResourceSchema,
  relays_presence: RelaysPresenceSchema,
  disconnect: DisconnectSchema,
  ice_candidates: ClientIceCandidatesSchema,
  invalidate_ice_candidates: ClientIceCandidatesSchema,
} as const;

/** A message the portal sends a gateway. */
export type PortalToGatewayMessage = ChannelMessages<typeof portalToGatewaySchemas>;
export type PortalToGatewayEvent = PortalToGatewayMessage['event'];

// ---------------------------------------------------------------------------------------------
// Gateway → portal

/** The gateway holds the flow authorize_flow's `ref` named (Firezone's gateway authorization_created). */
export const FlowAuthorizedSchema = z.object({ ref: z.string().min(1).max(128) });

/** ICE candidates the gateway wants delivered to these clients (relay work). */
export const BroadcastClientIceCandidatesSchema = z.object({
  client_ids: z.array(PortalIdSchema).min(1).max(MAX_ICE_PEERS),
  candidates: IceCandidatesSchema,
});

export const gatewayToPortalSchemas = {
  flow_authorized: FlowAuthorizedSchema,
  broadcast_ice_candidates: BroadcastClientIceCandidatesSchema,
  broadcast_invalidated_ice_candidates: BroadcastClientIceCandidatesSchema,
} as const;

/** A message a gateway sends the portal. */
export type GatewayToPortalMessage = ChannelMessages<typeof gatewayToPortalSchemas>;
export type GatewayToPortalEvent = GatewayToPortalMessage['event'];

// ---------------------------------------------------------------------------------------------
// Parse and encode

/** The flows of an init this build can hold: one naming a resource of an unknown type is ignored. */
function sieveAuthorizations(list: unknown, sieve: ResourceSieve): unknown {
  if (!Array.isArray(list) || list.length > MAX_PORTAL_AUTHORIZATIONS) return list;
  const kept: unknown[] = [];
  for (const [index, item] of list.entries()) {
    if (isPlainObject(item) && isUnknownResourceType(item.resource)) {
      sieve.ignored += 1;
      continue;
    }
    const parsed = AuthorizeFlowSchema.safeParse(item);
    if (parsed.success) kept.push(item);
    else sieve.invalid.push(`authorizations.${index}: ${describeZodError(parsed.error)}`);
  }
  return kept;
}

const gatewayChannel = defineChannel({
  portalTo: portalToGatewaySchemas,
  toPortal: gatewayToPortalSchemas,
  join: GatewayJoinPayloadSchema,
  prepareFromPortal(event, object, sieve) {
    if (event === 'init')
      return { ...object, authorizations: sieveAuthorizations(object.authorizations, sieve) };
    if (event === 'resource_updated' && isUnknownResourceType(object)) return 'ignored';
    if (event === 'authorize_flow' && isUnknownResourceType(object.resource)) return 'ignored';
    return object;
  },
});

/** What a gateway makes of a portal push; never throws. */
export const parsePortalToGateway: (
  event: string,
  payload: unknown,
) => PortalParseResult<PortalToGatewayMessage> = gatewayChannel.parseFromPortal;

/** What the portal makes of a gateway's push; never throws. */
export const parseGatewayToPortal: (
  event: string,
  payload: unknown,
) => PortalParseResult<GatewayToPortalMessage> = gatewayChannel.parseToPortal;

/** The portal's check of a gateway's phx_join payload; never throws. */
export const parseGatewayJoin: (payload: unknown) => JoinParse<GatewayJoinPayload> =
  gatewayChannel.parseJoin;

export const encodePortalToGateway: (message: PortalToGatewayMessage) => WireMessage =
  gatewayChannel.encodeFromPortal;

export const encodeGatewayToPortal: (message: GatewayToPortalMessage) => WireMessage =
  gatewayChannel.encodeToPortal;
