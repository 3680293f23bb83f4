/**
 * Phoenix channel framing as the portal writes it, over the protocol package's framing
 * (`parsePhoenixFrame` / `encodePhoenixFrame`): one JSON object per WebSocket text message,
 * `{topic, event, payload, ref, join_ref?}`; pushes the portal makes on its own carry
 * `ref: null`.
 */
import { encodePhoenixFrame, PHX_REPLY } from '@gatehouse/protocol';

export interface OutboundFrame {
  topic: string;
  event: string;
  payload: unknown;
  ref: string | null;
  join_ref?: string | null;
}

export function encodeFrame(frame: OutboundFrame): string {
  return encodePhoenixFrame(frame);
}

export function replyFrame(
  topic: string,
  ref: string | null,
  status: 'ok' | 'error',
  response: unknown,
  joinRef?: string | null,
): OutboundFrame {
  return { topic, event: PHX_REPLY, payload: { status, response }, ref, join_ref: joinRef ?? null };
}

export function pushFrame(topic: string, event: string, payload: unknown): OutboundFrame {
  return { topic, event, payload, ref: null };
}
