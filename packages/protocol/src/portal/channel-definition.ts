/**
 * One node channel's parse and encode functions, made from its schema tables: what the portal
 * sends (`portalTo`), what the node sends (`toPortal`) and the node's phx_join payload (`join`).
 * The client and the gateway channel are both defined this way (client.ts, gateway.ts).
 */

import type { z } from 'zod';
import { parseWithSchema, type PortalParseResult, type ResourceSieve } from './common.ts';

/** Event name → the schema of its payload. */
export type ChannelSchemas = Record<string, z.ZodType>;

/** Every event of a table with its parsed payload, as one union tagged by `event`. */
export type ChannelMessages<T extends ChannelSchemas> = {
  [E in keyof T]: { event: E; payload: z.infer<T[E]> };
}[keyof T];

export type JoinParse<T> = { ok: true; payload: T } | { ok: false; problem: string };

/** A message ready to frame: the wire form is the message's form. */
export interface WireMessage {
  event: string;
  payload: unknown;
}

/**
 * Runs before a portal push's schema: may sieve resource lists (returning a shallow copy of the
 * payload) or say that the whole message is about a resource of an unknown type ('ignored').
 */
export type PreparePayload = (
  event: string,
  payload: Record<string, unknown>,
  sieve: ResourceSieve,
) => Record<string, unknown> | 'ignored';

export interface ChannelDefinition<
  P extends ChannelSchemas,
  N extends ChannelSchemas,
  J extends z.ZodType,
> {
  /** What a node makes of a portal push; never throws. */
  parseFromPortal(event: string, payload: unknown): PortalParseResult<ChannelMessages<P>>;
  /** What the portal makes of a node's push; never throws. */
  parseToPortal(event: string, payload: unknown): PortalParseResult<ChannelMessages<N>>;
  /** The portal's check of a node's phx_join payload; never throws. */
  parseJoin(payload: unknown): JoinParse<z.infer<J>>;
  encodeFromPortal(message: ChannelMessages<P>): WireMessage;
  encodeToPortal(message: ChannelMessages<N>): WireMessage;
}

export function defineChannel<
  P extends ChannelSchemas,
  N extends ChannelSchemas,
  J extends z.ZodType,
>(definition: {
  portalTo: P;
  toPortal: N;
  join: J;
  prepareFromPortal?: PreparePayload;
}): ChannelDefinition<P, N, J> {
  const { portalTo, toPortal, join, prepareFromPortal } = definition;
  const encode = (message: { event: PropertyKey; payload: unknown }): WireMessage => ({
    event: message.event as string,
    payload: message.payload,
  });
  return {
    parseFromPortal: (event, payload) =>
      parseWithSchema(
        event,
        payload,
        schemaFor(portalTo, event),
        prepareFromPortal === undefined
          ? undefined
          : (object, sieve) => prepareFromPortal(event, object, sieve),
      ),
    parseToPortal: (event, payload) => parseWithSchema(event, payload, schemaFor(toPortal, event)),
    parseJoin(payload) {
      const result = parseWithSchema<{ event: string; payload: z.infer<J> }>(
        'phx_join',
        payload,
        join,
      );
      return result.ok
        ? { ok: true, payload: result.message.payload }
        : { ok: false, problem: result.problem };
    },
    encodeFromPortal: encode,
    encodeToPortal: encode,
  };
}

/** The schema of `event`; never one of Object.prototype's (`__proto__`, `constructor`). */
function schemaFor(table: ChannelSchemas, event: string): z.ZodType | undefined {
  return Object.hasOwn(table, event) ? table[event] : undefined;
}
