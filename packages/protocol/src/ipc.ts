/**
 * The control protocol between the tunnel service and its clients (the GUI,
 * the CLI), spoken over the service's Unix socket.
 *
 * On the wire every message is node-ipc's envelope `{type, data}` as JSON,
 * one per frame. The service speaks first with `hello`; clients send
 * `request`s carrying an id they choose; the service answers each with a
 * `response` carrying the same id, and pushes `event`s on its own.
 *
 * Messages from clients are parsed strictly (unknown fields are refused);
 * messages from the service are parsed tolerantly (unknown fields are
 * dropped) so an older client keeps working with a newer service of the same
 * protocol version. Any change an older peer would misread bumps
 * PROTOCOL_VERSION.
 */

import { z } from 'zod';
import { DnsResourcesStatusSchema, TunnelStatusSchema } from './tunnel-status.ts';

/**
 * 2: the engine's drop reasons; the set-dns-resources request.
 * 3: the status carries the DNS resources and the stub's addresses and upstreams, which
 * set-dns-resources also answers with.
 * 4: hardening — every drop and refusal counted in the status (no-route, unattributed,
 * malformed datagrams, handshake load, DNS stub refusals, the control socket's refusals and
 * errors); a failed tunnel state; the too-many-connections error.
 * 5: the daemon — start-tunnel, apply-tunnel, down leaves a daemon running, a status per
 * connection state (disconnected, connecting, connected, disconnecting) with failure reasons;
 * forbidden, already-running and tunnel-failed errors; the engine's relay, route-miss,
 * policy-denied and event-handler drop reasons.
 * 6: portal tunnels — start-portal-tunnel, the status's `portal` (connection, identity,
 * resources), the sign-in-required failure reason and error code.
 */
export const PROTOCOL_VERSION = 6;

/** The largest frame the service accepts from a client, in bytes of UTF-8. */
export const MAX_CLIENT_MESSAGE_BYTES = 64 * 1024;
/** The largest frame a client accepts from the service (a status with many peers is large). */
export const MAX_SERVICE_MESSAGE_BYTES = 4 * 1024 * 1024;

/** Where the tunnel service serves its control socket unless told otherwise. */
export const DEFAULT_SOCKET_PATH = '/run/gatehouse/tunnel.sock';

export const RequestIdSchema = z.union([
  z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  z.string().min(1).max(64),
]);
export type RequestId = z.infer<typeof RequestIdSchema>;

const NoParamsSchema = z.strictObject({});

/** More than any deployment's DNS resources, and the request stays well under the frame limit. */
export const MAX_DNS_RESOURCES = 256;

/** A DNS resource: `address` is a name or a wildcard pattern (`*.example.com`, `**.corp`). */
export const DnsResourceSchema = z.strictObject({
  address: z.string().min(1).max(253),
});
export type DnsResource = z.infer<typeof DnsResourceSchema>;

/** Well above any real wg-quick file, and the request stays under the frame limit. */
export const MAX_WG_QUICK_CONFIG_CHARS = 48 * 1024;

/** Well above the portal's tokens (about 70 characters). */
export const MAX_PORTAL_TOKEN_CHARS = 4096;
export const MAX_PORTAL_URL_CHARS = 2048;

const InterfaceNameParamSchema = z.string().regex(/^[A-Za-z0-9_=+.-]{1,15}$/, 'an interface name');

/**
 * Every request the service understands: its parameters and its result.
 * Both sides derive their types and validation from this table. To add a
 * request, add an entry here and its variant to RequestSchema below, then a
 * handler on the service (the compiler asks for it).
 */
export const requestSchemas = {
  status: { params: NoParamsSchema, result: TunnelStatusSchema },
  /**
   * Starts a tunnel from a wg-quick file's contents (root only; one tunnel
   * at a time). Answers once the interface, routes and DNS are configured,
   * with the status then; a tunnel that cannot start answers tunnel-failed
   * with the reason (and the status's failure says which step).
   */
  'start-tunnel': {
    params: z.strictObject({
      wgQuickConfig: z.string().max(MAX_WG_QUICK_CONFIG_CHARS),
      interfaceName: InterfaceNameParamSchema,
      /** How DNS= reaches the system (auto, systemd-resolved, etc-resolv-conf, disabled). */
      dnsControl: z.string().max(32),
    }),
    result: TunnelStatusSchema,
  },
  /**
   * Changes the running tunnel into a wg-quick file's (root only), applying
   * only what differs: peers left alone keep their sessions. Its interface
   * name, key, port and mark cannot change; the DNS resources stay as set.
   * Answers with the status after the change.
   */
  'apply-tunnel': {
    params: z.strictObject({
      wgQuickConfig: z.string().max(MAX_WG_QUICK_CONFIG_CHARS),
      interfaceName: InterfaceNameParamSchema,
    }),
    result: TunnelStatusSchema,
  },
  /**
   * Starts a tunnel the portal configures (root only; one tunnel at a time): the service joins
   * the portal's client channel with the token and a fresh WireGuard key, and runs the tunnel
   * the portal describes, following its changes, reconnecting until the token is refused.
   * Answers once the tunnel is configured, or with the status ('connecting') when the portal
   * has not answered within the service's wait; sign-in-required when the portal refuses the
   * token. The token is kept in memory only: never logged, in an error or in a status.
   */
  'start-portal-tunnel': {
    params: z.strictObject({
      /** https:// (or http://, wss://, ws://) and the portal's host, no credentials. */
      portalUrl: z.string().min(1).max(MAX_PORTAL_URL_CHARS),
      token: z
        .string()
        .min(1)
        .max(MAX_PORTAL_TOKEN_CHARS)
        .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces'),
      /** A PEM file of CAs trusted for the portal besides the system's. */
      caFile: z.string().min(1).max(4096).optional(),
      interfaceName: InterfaceNameParamSchema,
      dnsControl: z.string().max(32),
      /** Use the Internet resource when the portal offers one. */
      internetResource: z.boolean(),
      /** With the Internet resource: the LAN stays outside the tunnel. */
      lanBypass: z.boolean(),
      /** The device's name in the portal; the host name unless given. */
      deviceName: z.string().min(1).max(255).optional(),
    }),
    result: TunnelStatusSchema,
  },
  /**
   * Stops the tunnel. A daemon answers once it is down and keeps serving; a
   * foreground service (`up` without a daemon) answers at once and exits.
   */
  down: {
    params: NoParamsSchema,
    result: z.object({ stopping: z.literal(true), serviceExits: z.boolean() }),
  },
  /**
   * Replaces the DNS resources the stub answers with proxy addresses; an
   * empty list stops the stub and gives system DNS back to DNS= settings.
   * Answers with the DNS resources' status after the change.
   */
  'set-dns-resources': {
    params: z.strictObject({ resources: z.array(DnsResourceSchema).max(MAX_DNS_RESOURCES) }),
    result: DnsResourcesStatusSchema,
  },
} as const;

export type RequestKind = keyof typeof requestSchemas;
export type RequestParams<K extends RequestKind> = z.infer<(typeof requestSchemas)[K]['params']>;
export type RequestResult<K extends RequestKind> = z.infer<(typeof requestSchemas)[K]['result']>;

function requestVariant<K extends RequestKind>(kind: K) {
  return z.strictObject({
    id: RequestIdSchema,
    kind: z.literal(kind),
    params: requestSchemas[kind].params,
  });
}

export const RequestSchema = z.discriminatedUnion('kind', [
  requestVariant('status'),
  requestVariant('start-tunnel'),
  requestVariant('apply-tunnel'),
  requestVariant('start-portal-tunnel'),
  requestVariant('down'),
  requestVariant('set-dns-resources'),
]);
export type Request = z.infer<typeof RequestSchema>;

export const ERROR_CODES = [
  'bad-request',
  'unknown-request',
  'message-too-large',
  'unauthorized',
  /** The connecting uid holds as many connections as it may. */
  'too-many-connections',
  /** The peer may use the socket, but only root may do this. */
  'forbidden',
  'not-running',
  /** A tunnel is already up: one at a time. */
  'already-running',
  /** The tunnel could not start or take a change (the message says why). */
  'tunnel-failed',
  /** The portal refused the token: a new one is needed (the message says how). */
  'sign-in-required',
  'internal',
] as const;
export const ErrorCodeSchema = z.enum(ERROR_CODES);
export type ErrorCode = z.infer<typeof ErrorCodeSchema>;

/** The one error shape, in every failed response. */
export const ServiceErrorSchema = z.object({
  code: ErrorCodeSchema,
  message: z.string().max(2000),
});
export type ServiceError = z.infer<typeof ServiceErrorSchema>;

export const ResponseSchema = z.discriminatedUnion('ok', [
  z.object({ id: RequestIdSchema, ok: z.literal(true), result: z.unknown() }),
  /** `id` is null when the request was too broken to read one from. */
  z.object({ id: RequestIdSchema.nullable(), ok: z.literal(false), error: ServiceErrorSchema }),
]);
export type Response = z.infer<typeof ResponseSchema>;

export const HelloSchema = z.object({
  protocolVersion: z.number().int().min(1),
  serviceVersion: z.string().min(1).max(100),
});
export type Hello = z.infer<typeof HelloSchema>;

export const ServiceEventSchema = z.discriminatedUnion('event', [
  z.object({ event: z.literal('status-changed'), status: TunnelStatusSchema }),
]);
export type ServiceEvent = z.infer<typeof ServiceEventSchema>;

/** service → client */
export const ServiceMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('hello'), data: HelloSchema }),
  z.object({ type: z.literal('response'), data: ResponseSchema }),
  z.object({ type: z.literal('event'), data: ServiceEventSchema }),
]);
export type ServiceMessage = z.infer<typeof ServiceMessageSchema>;

/** client → service */
export const ClientMessageSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('request'), data: RequestSchema }),
]);
export type ClientMessage = z.infer<typeof ClientMessageSchema>;

export type ParseResult<T> = { ok: true; value: T } | { ok: false; message: string };

export type ClientMessageParseResult =
  | { ok: true; value: ClientMessage }
  | { ok: false; code: 'bad-request' | 'unknown-request'; message: string; id: RequestId | null };

/** Never throws: a refused message comes back with the request id when one could be read. */
export function parseClientMessage(input: unknown): ClientMessageParseResult {
  const parsed = ClientMessageSchema.safeParse(input);
  if (parsed.success) return { ok: true, value: parsed.data };
  const data = isRecord(input) ? input['data'] : undefined;
  const idField = isRecord(data) ? RequestIdSchema.safeParse(data['id']) : undefined;
  const id = idField?.success ? idField.data : null;
  const kind = isRecord(data) ? data['kind'] : undefined;
  if (
    isRecord(input) &&
    input['type'] === 'request' &&
    typeof kind === 'string' &&
    !isRequestKind(kind)
  ) {
    const known = Object.keys(requestSchemas).join(', ');
    return {
      ok: false,
      code: 'unknown-request',
      message: `unknown request "${shorten(kind)}" (known: ${known})`,
      id,
    };
  }
  return { ok: false, code: 'bad-request', message: describeIssues(parsed.error), id };
}

export function parseServiceMessage(input: unknown): ParseResult<ServiceMessage> {
  return toParseResult(ServiceMessageSchema.safeParse(input));
}

export function parseRequestResult<K extends RequestKind>(
  kind: K,
  input: unknown,
): ParseResult<RequestResult<K>> {
  const parsed = requestSchemas[kind].result.safeParse(input);
  // TypeScript cannot correlate the table entry with K; the schema is the one for K.
  if (parsed.success) return { ok: true, value: parsed.data as RequestResult<K> };
  return { ok: false, message: describeIssues(parsed.error) };
}

export function isRequestKind(kind: string): kind is RequestKind {
  return Object.hasOwn(requestSchemas, kind);
}

function toParseResult<T>(parsed: z.ZodSafeParseResult<T>): ParseResult<T> {
  return parsed.success
    ? { ok: true, value: parsed.data }
    : { ok: false, message: describeIssues(parsed.error) };
}

/** One line, bounded: the first few issues with their paths. */
function describeIssues(error: z.ZodError): string {
  const shown = error.issues.slice(0, 3).map((issue) => {
    const path = issue.path.length > 0 ? issue.path.map(String).join('.') : 'message';
    return `${shorten(path)}: ${issue.message}`;
  });
  const more = error.issues.length - shown.length;
  return more > 0 ? `${shown.join('; ')} (and ${more} more)` : shown.join('; ');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function shorten(text: string): string {
  return text.length > 60 ? `${text.slice(0, 60)}…` : text;
}
