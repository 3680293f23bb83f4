/**
 * Phoenix channel framing as the portal reads and writes it: one JSON object per WebSocket text
 * message, `{topic, event, payload, ref}` (`join_ref` tolerated). Inbound frames and the payloads
 * the portal acts on are checked with zod; unknown fields are tolerated.
 */
import { z } from 'zod';

export const PHOENIX_TOPIC = 'phoenix';

const ref = z.union([z.string().max(64), z.number().int(), z.null()]).optional();

export const inboundFrameSchema = z.looseObject({
  topic: z.string().min(1).max(128),
  event: z.string().min(1).max(64),
  payload: z.unknown().optional(),
  ref,
  join_ref: ref,
});
export type InboundFrame = z.infer<typeof inboundFrameSchema>;

/** WireGuard public or preshared key: 32 bytes, standard base64. */
export const wireguardKeySchema = z
  .string()
  .regex(/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw480]=$/, 'a WireGuard key: 32 bytes of base64');

const deviceIdSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[\x21-\x7e]+$/, 'printable ASCII');
const nameSchema = z.string().min(1).max(255);

export const clientJoinSchema = z.looseObject({
  public_key: wireguardKeySchema,
  device_id: deviceIdSchema,
  name: nameSchema.optional(),
});

/** host:port or [v6]:port. */
const endpointSchema = z
  .string()
  .max(64)
  .regex(/^(\[[0-9A-Fa-f:.]+\]|[0-9.]+|[A-Za-z0-9.-]+):\d{1,5}$/, 'host:port or [v6]:port');

export const gatewayJoinSchema = z.looseObject({
  public_key: wireguardKeySchema,
  device_id: deviceIdSchema.optional(),
  name: nameSchema.optional(),
  endpoint: endpointSchema.optional(),
});

const ipText = z.string().min(2).max(45);

export const requestAuthorizationSchema = z.looseObject({
  resource_id: z.string().min(1).max(64),
  /** For a DNS resource: the name asked for and the proxy addresses the client gave it. */
  domain: z.string().min(1).max(253).optional(),
  proxy_ips: z.array(ipText).max(16).optional(),
});

export interface OutboundFrame {
  topic: string;
  event: string;
  payload: unknown;
  ref: string | number | null;
  join_ref?: string | number | null;
}

export function encodeFrame(frame: OutboundFrame): string {
  return JSON.stringify(frame);
}

export function replyFrame(
  topic: string,
  reference: string | number | null | undefined,
  status: 'ok' | 'error',
  response: unknown,
  joinRef?: string | number | null,
): OutboundFrame {
  const frame: OutboundFrame = {
    topic,
    event: 'phx_reply',
    payload: { status, response },
    ref: reference ?? null,
  };
  if (joinRef !== undefined) frame.join_ref = joinRef;
  return frame;
}

export function pushFrame(topic: string, event: string, payload: unknown): OutboundFrame {
  return { topic, event, payload, ref: null };
}
