/**
 * Phoenix channel framing, as the portal and its nodes speak it over one WebSocket: every text
 * message is one JSON object `{topic, event, payload, ref, join_ref?}` (Phoenix's V1 JSON
 * serializer, the form Firezone's connlib uses).
 *
 * - A node joins its topic ("client" or "gateway") with `phx_join`; the portal answers with a
 *   `phx_reply` carrying the join's ref within JOIN_TIMEOUT_MS, or the node gives up on that
 *   connection and reconnects.
 * - Every HEARTBEAT_INTERVAL_MS the node sends `heartbeat` on topic "phoenix"; the portal
 *   replies to each. More than MAX_UNANSWERED_HEARTBEATS unanswered → the node reconnects.
 * - A reply's payload is `{status: "ok" | "error", response}`.
 * - `phx_close` (the server closed the channel) and `phx_error` (the channel crashed) end the
 *   session on that topic.
 * - Pushes the portal makes on its own carry `ref: null`.
 */

import { z } from 'zod';
import { MAX_PORTAL_FRAME_CHARS, describeZodError } from './common.ts';

export const PHOENIX_JOIN_TIMEOUT_MS = 5_000;
export const PHOENIX_HEARTBEAT_INTERVAL_MS = 10_000;
/** More heartbeats than this without a reply and the connection is considered dead. */
export const PHOENIX_MAX_UNANSWERED_HEARTBEATS = 3;
export const PHOENIX_HEARTBEAT_TOPIC = 'phoenix';
export const PHOENIX_HEARTBEAT_EVENT = 'heartbeat';

export const PHX_JOIN = 'phx_join';
export const PHX_LEAVE = 'phx_leave';
export const PHX_REPLY = 'phx_reply';
export const PHX_CLOSE = 'phx_close';
export const PHX_ERROR = 'phx_error';

/** The topics of the two node channels. */
export const CLIENT_TOPIC = 'client';
export const GATEWAY_TOPIC = 'gateway';

/** WebSocket paths the portal serves them on (the token in `X-Authorization: Bearer …`). */
export const CLIENT_WEBSOCKET_PATH = '/client/websocket';
export const GATEWAY_WEBSOCKET_PATH = '/gateway/websocket';

/**
 * A ref as it arrives: Phoenix JS sends strings, others numbers; both are accepted and a number
 * reads as its decimal text, so refs compare as strings everywhere.
 */
const RefSchema = z
  .union([z.string().max(64), z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), z.null()])
  .optional()
  .transform((ref) => (ref === undefined || ref === null ? null : String(ref)));

export const PhoenixFrameSchema = z.object({
  topic: z.string().min(1).max(128),
  event: z.string().min(1).max(64),
  payload: z
    .unknown()
    .optional()
    .transform((payload) => payload ?? {}),
  ref: RefSchema,
  join_ref: RefSchema,
});

export interface PhoenixFrame {
  topic: string;
  event: string;
  payload: unknown;
  /** null for a push the sender expects no reply to. */
  ref: string | null;
  /** The ref of the join this message belongs to; null on heartbeats and some server pushes. */
  join_ref: string | null;
}

export type PhoenixFrameParse = { ok: true; frame: PhoenixFrame } | { ok: false; problem: string };

/** Parses one WebSocket text message into a frame; never throws. */
export function parsePhoenixFrame(text: string): PhoenixFrameParse {
  if (typeof text !== 'string') return { ok: false, problem: 'a frame is a text message' };
  if (text.length > MAX_PORTAL_FRAME_CHARS) {
    return {
      ok: false,
      problem: `the frame is ${text.length} characters; at most ${MAX_PORTAL_FRAME_CHARS}`,
    };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return {
      ok: false,
      problem: `the frame is not JSON (${(error as Error).message.slice(0, 120)})`,
    };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, problem: 'the frame is not a JSON object {topic, event, payload, ref}' };
  }
  const parsed = PhoenixFrameSchema.safeParse(value);
  if (!parsed.success)
    return { ok: false, problem: `the frame: ${describeZodError(parsed.error)}` };
  return { ok: true, frame: parsed.data };
}

/** The text of one frame; a missing join_ref is left out. */
export function encodePhoenixFrame(frame: {
  topic: string;
  event: string;
  payload: unknown;
  ref: string | null;
  join_ref?: string | null;
}): string {
  const wire: Record<string, unknown> = {
    topic: frame.topic,
    event: frame.event,
    payload: frame.payload,
    ref: frame.ref,
  };
  if (frame.join_ref !== undefined && frame.join_ref !== null) wire.join_ref = frame.join_ref;
  return JSON.stringify(wire);
}

export const PhoenixReplyPayloadSchema = z.object({
  status: z.enum(['ok', 'error']),
  response: z
    .unknown()
    .optional()
    .transform((response) => response ?? {}),
});
export interface PhoenixReplyPayload {
  status: 'ok' | 'error';
  response: unknown;
}

export type PhoenixReplyParse =
  { ok: true; reply: PhoenixReplyPayload } | { ok: false; problem: string };

/** A phx_reply's payload; never throws. */
export function parsePhoenixReply(payload: unknown): PhoenixReplyParse {
  const parsed = PhoenixReplyPayloadSchema.safeParse(payload);
  if (!parsed.success)
    return { ok: false, problem: `the reply: ${describeZodError(parsed.error)}` };
  return { ok: true, reply: parsed.data };
}

/** A reply frame to `ref` (what the portal sends). */
export function phoenixReplyFrame(
  topic: string,
  ref: string | null,
  status: 'ok' | 'error',
  response: unknown,
  joinRef?: string | null,
): PhoenixFrame {
  return { topic, event: PHX_REPLY, payload: { status, response }, ref, join_ref: joinRef ?? null };
}

/** Error replies Phoenix itself sends, and the ones the portal adds. */
export const PHOENIX_REPLY_UNMATCHED_TOPIC = 'unmatched topic';
