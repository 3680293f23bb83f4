/**
 * The portal's HTTP side: the sign-in pages, the sign-in POST, a client's sign-out.
 *
 *   GET  /                              which account (a form; `?account=` redirects to it)
 *   GET  /<account>?as=gui-client&nonce=…&state=…   the sign-in form for the GUI client
 *   GET  /<account>?as=headless-client  the sign-in form whose result is a token to paste
 *   POST /<account>/sign_in             checks the form, then a 303 to the client's deep link
 *                                       (gui-client) or the token page (headless-client)
 *   DELETE or POST /<account>/sign_out  `Authorization: Bearer <token>`: revokes that token
 *
 * Refusals are HTML pages for browsers (`Accept: text/html`) and RFC 9457 problem details
 * otherwise; each is counted by reason. A refused request changes nothing.
 */
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { z } from 'zod';
import { isAddress } from '@gatehouse/addresses';
import { silentLogger, type Logger } from '@gatehouse/logging';
import { readBody } from './body.ts';
import { CSRF_FIELD, CSRF_TOKEN_MAX_AGE_MS, CsrfProtection } from './csrf.ts';
import {
  accountPage,
  errorPage,
  headlessTokenPage,
  signInPage,
  type SignInParams,
} from './pages.ts';
import { hashPasswordAsync, passwordHashNeedsUpgrade, verifyPasswordAsync } from './passwords.ts';
import { sendProblem } from './problem.ts';
import {
  signInUserKey,
  sourceAddressKey,
  TokenBucketLimiter,
  type RateLimitOptions,
} from './rate-limit.ts';
import { setNoStore, setSecurityHeaders } from './security-headers.ts';
import type { PortalStorage } from '../db/storage.ts';
import { DEFAULT_CLIENT_TOKEN_LIFETIME_MS } from '../tokens.ts';
import { storageSignInBackend, type SignInBackend } from './sign-in-backend.ts';

export { DEFAULT_CLIENT_TOKEN_LIFETIME_MS };
export const DEFAULT_BODY_LIMIT = 16 * 1024;
/**
 * Failed sign-ins per account and user name (the name as typed, normalised): 10 at once, then
 * one every 30 s. Keyed by user so one attacker guessing at one name locks out only that name,
 * not everyone in the account; successful sign-ins cost nothing.
 */
export const DEFAULT_ACCOUNT_RATE_LIMIT: RateLimitOptions = {
  burst: 10,
  refillMs: 30_000,
  maxKeys: 100_000,
};
/** Failed sign-ins per source address (IPv6 by /64): 20 at once, then one every 15 s. */
export const DEFAULT_ADDRESS_RATE_LIMIT: RateLimitOptions = { burst: 20, refillMs: 15_000 };

export const DEEP_LINK_BASE = 'gatehouse://handle_client_sign_in_callback';

export interface PortalHttpOptions {
  /** Lifetime of a token made by signing in (default 7 days). */
  clientTokenLifetimeMs?: number;
  /**
   * The URL people reach the portal at (e.g. https://portal.example.com). Its origin is the one
   * a sign-in POST's Origin header must match, and an https one marks cookies Secure even
   * behind a TLS-terminating proxy. Without it the request's Host header gives the origin.
   */
  publicUrl?: string;
  /** Largest request body, bytes (default 16 KiB; larger → 413). */
  bodyLimit?: number;
  /** Failed sign-ins per account and user name (see DEFAULT_ACCOUNT_RATE_LIMIT). */
  accountRateLimit?: RateLimitOptions;
  /** Failed sign-ins per source address (see DEFAULT_ADDRESS_RATE_LIMIT). */
  addressRateLimit?: RateLimitOptions;
  /** 32+ bytes shared by every instance of the same portal; random per process if omitted. */
  csrfKey?: Uint8Array;
  /**
   * Behind a reverse proxy: take the source address for rate limits from the last entry of
   * X-Forwarded-For (the one the proxy added) instead of the connection's. Off by default — a
   * client could otherwise pick its own address.
   */
  trustProxy?: boolean;
}

export interface PortalHttpDeps {
  /** The portal's storage; sign-in reads accounts and users from it and stores token rows. */
  storage?: PortalStorage;
  /** Instead of storage: the few operations sign-in needs (tests, other stores). */
  backend?: SignInBackend;
  /** Epoch milliseconds. */
  now?: () => number;
  logger?: Logger;
  options?: PortalHttpOptions;
  /** Called after sign-out revoked a token, so live sessions with it can be closed. */
  onTokenRevoked?: (tokenId: string) => void;
}

export const REFUSAL_REASONS = [
  'bad_request',
  'not_found',
  'method_not_allowed',
  'unsupported_media_type',
  'payload_too_large',
  'forbidden_origin',
  'csrf',
  'rate_limited',
  'wrong_credentials',
  'invalid_token',
  'not_a_client_token',
  'internal_error',
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

export interface PortalHttpCounters {
  requests: number;
  pages: number;
  signInAttempts: number;
  signInsGui: number;
  signInsHeadless: number;
  signOuts: number;
  refused: Record<RefusalReason, number>;
}

export interface PortalHttp {
  /** The handler for `req` if it is a portal HTTP route, null if the path is someone else's. */
  route(req: IncomingMessage): RequestListener | null;
  /** Runs the route for `req` and returns true, or returns false (nothing written). */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  /** `handle`, with a 404 problem for everything else. */
  listener: RequestListener;
  counters(): PortalHttpCounters;
}

/** Account slugs as they appear in a path. */
const SLUG_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$/;
const NONCE = /^[A-Za-z0-9_-]{16,128}$/;
/** The client's opaque state: printable ASCII, no spaces. */
const STATE = /^[\x21-\x7e]{1,512}$/;

const asSchema = z.enum(['gui-client', 'headless-client']);

const signInQuerySchema = z.discriminatedUnion('as', [
  z.object({
    as: z.literal('gui-client'),
    nonce: z
      .string({ error: 'nonce: required for gui-client' })
      .regex(NONCE, 'nonce: 16 to 128 of A-Z a-z 0-9 _ -'),
    state: z
      .string({ error: 'state: required for gui-client' })
      .regex(STATE, 'state: 1 to 512 printable ASCII characters, no spaces'),
  }),
  z.object({
    as: z.literal('headless-client'),
    nonce: z.undefined({ error: 'nonce: only for gui-client' }).optional(),
    state: z.undefined({ error: 'state: only for gui-client' }).optional(),
  }),
]);

const credentialsSchema = z.object({
  [CSRF_FIELD]: z.string().max(200),
  username: z.string().min(1, 'username: required').max(256, 'username: at most 256 characters'),
  password: z.string().min(1, 'password: required').max(1024, 'password: at most 1024 characters'),
});

/** The ?as=&nonce=&state= of a query, or why not. */
function parseSignInParams(
  get: (name: string) => string | undefined,
): { ok: true; params: SignInParams } | { ok: false; error: string } {
  const raw = { as: get('as'), nonce: get('nonce'), state: get('state') };
  if (raw.as === undefined) {
    return {
      ok: false,
      error:
        'This page is opened by a Gatehouse client (as=gui-client with its nonce and state). For a token to paste into a headless client, add ?as=headless-client to the address.',
    };
  }
  if (!asSchema.safeParse(raw.as).success) {
    return { ok: false, error: 'as: must be gui-client or headless-client.' };
  }
  const parsed = signInQuerySchema.safeParse(raw);
  if (!parsed.success) {
    return { ok: false, error: parsed.error.issues.map((issue) => issue.message).join('; ') };
  }
  const params: SignInParams = { as: parsed.data.as };
  if (parsed.data.as === 'gui-client') {
    params.nonce = parsed.data.nonce;
    params.state = parsed.data.state;
  }
  return { ok: true, params };
}

/** Single-valued parameters; a repeated one is an error (which of two would we believe?). */
function singleValued(
  params: URLSearchParams,
): { ok: true; get: (name: string) => string | undefined } | { ok: false; name: string } {
  const seen = new Map<string, string>();
  for (const [name, value] of params) {
    if (seen.has(name)) return { ok: false, name };
    seen.set(name, value);
  }
  return { ok: true, get: (name) => seen.get(name) };
}

/** Percent-encodes all but RFC 3986's unreserved characters (encodeURIComponent leaves !'()*). */
function percentEncode(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/** The deep link a GUI client's sign-in ends with; every value percent-encoded. */
export function deepLink(fields: {
  accountSlug: string;
  actorName: string;
  fragment: string;
  state: string;
}): string {
  const pairs: [string, string][] = [
    ['account_slug', fields.accountSlug],
    ['actor_name', fields.actorName],
    ['fragment', fields.fragment],
    ['state', fields.state],
  ];
  return `${DEEP_LINK_BASE}?${pairs.map(([k, v]) => `${k}=${percentEncode(v)}`).join('&')}`;
}

export function createPortalHttpHandler(deps: PortalHttpDeps): PortalHttp {
  const backend =
    deps.backend ?? (deps.storage === undefined ? undefined : storageSignInBackend(deps.storage));
  if (backend === undefined)
    throw new TypeError('createPortalHttpHandler needs storage or a backend');
  const now = deps.now ?? (() => Date.now());
  const logger = deps.logger ?? silentLogger;
  const options = deps.options ?? {};
  const lifetimeMs = options.clientTokenLifetimeMs ?? DEFAULT_CLIENT_TOKEN_LIFETIME_MS;
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const accountLimiter = new TokenBucketLimiter(
    options.accountRateLimit ?? DEFAULT_ACCOUNT_RATE_LIMIT,
  );
  const addressLimiter = new TokenBucketLimiter(
    options.addressRateLimit ?? DEFAULT_ADDRESS_RATE_LIMIT,
  );
  const csrf = new CsrfProtection(options.csrfKey);
  const publicOrigin = options.publicUrl === undefined ? undefined : new URL(options.publicUrl);
  if (publicOrigin !== undefined && !['http:', 'https:'].includes(publicOrigin.protocol)) {
    throw new Error(`publicUrl must be http or https, not ${options.publicUrl}`);
  }
  if (!Number.isFinite(lifetimeMs) || lifetimeMs <= 0) {
    throw new RangeError(`clientTokenLifetimeMs must be positive, not ${lifetimeMs}`);
  }

  const counters: PortalHttpCounters = {
    requests: 0,
    pages: 0,
    signInAttempts: 0,
    signInsGui: 0,
    signInsHeadless: 0,
    signOuts: 0,
    refused: Object.fromEntries(REFUSAL_REASONS.map((r) => [r, 0])) as Record<
      RefusalReason,
      number
    >,
  };

  const isSecure = (req: IncomingMessage): boolean =>
    (req.socket as TLSSocket).encrypted === true || publicOrigin?.protocol === 'https:';

  const wantsHtml = (req: IncomingMessage): boolean =>
    (req.headers.accept ?? '').toLowerCase().includes('text/html');

  interface Refusal {
    status: number;
    reason: RefusalReason;
    /** The problem-details `code`. */
    code: string;
    title: string;
    message: string;
    retryHref?: string;
    headers?: Record<string, string>;
    /** Close the connection after answering (the body was not read). */
    close?: boolean;
  }

  const refuse = (req: IncomingMessage, res: ServerResponse, refusal: Refusal): void => {
    counters.refused[refusal.reason] += 1;
    if (res.headersSent) {
      res.end();
      return;
    }
    if (refusal.close === true) res.setHeader('Connection', 'close');
    if (wantsHtml(req)) {
      const input: Parameters<typeof errorPage>[0] = {
        title: refusal.title,
        message: refusal.message,
      };
      if (refusal.retryHref !== undefined) input.retryHref = refusal.retryHref;
      sendHtml(res, refusal.status, errorPage(input), refusal.headers);
    } else {
      sendProblem(res, refusal.status, refusal.code, refusal.message, refusal.headers);
    }
  };

  const sendHtml = (
    res: ServerResponse,
    status: number,
    html: string,
    headers: Record<string, string> = {},
  ): void => {
    setNoStore(res);
    res.writeHead(status, {
      'Content-Type': 'text/html; charset=utf-8',
      'Content-Length': String(Buffer.byteLength(html)),
      ...headers,
    });
    res.end(html);
  };

  const methodNotAllowed = (
    req: IncomingMessage,
    res: ServerResponse,
    allowed: readonly string[],
  ): void =>
    refuse(req, res, {
      status: 405,
      reason: 'method_not_allowed',
      code: 'method_not_allowed',
      title: 'Method not allowed',
      message: `${req.method ?? '?'} is not accepted here; this address takes ${allowed.join(', ')}.`,
      headers: { Allow: allowed.join(', ') },
    });

  const badRequest = (
    req: IncomingMessage,
    res: ServerResponse,
    message: string,
    retryHref?: string,
  ): void => {
    const refusal: Refusal = {
      status: 400,
      reason: 'bad_request',
      code: 'bad_request',
      title: 'Bad request',
      message,
    };
    if (retryHref !== undefined) refusal.retryHref = retryHref;
    refuse(req, res, refusal);
  };

  const noSuchAccount = (req: IncomingMessage, res: ServerResponse, slug: string): void =>
    refuse(req, res, {
      status: 404,
      reason: 'not_found',
      code: 'account_not_found',
      title: 'No such account',
      message: `There is no account "${slug}" on this portal. Check the account name.`,
      retryHref: '/',
    });

  const internalError = (req: IncomingMessage, res: ServerResponse, error: unknown): void => {
    logger.error(`http: ${req.method ?? '?'} request failed: ${(error as Error)?.message}`);
    refuse(req, res, {
      status: 500,
      reason: 'internal_error',
      code: 'internal_error',
      title: 'Something went wrong',
      message: 'The portal could not complete this request. Nothing was changed; try again.',
      close: true,
    });
  };

  /** The client's address: the connection's, or the proxy's X-Forwarded-For entry (trustProxy). */
  const sourceAddress = (req: IncomingMessage): string | undefined => {
    const forwarded = req.headers['x-forwarded-for'];
    if (options.trustProxy === true && typeof forwarded === 'string') {
      const last = forwarded.split(',').at(-1)!.trim();
      if (isAddress(last)) return last;
    }
    return req.socket.remoteAddress;
  };

  /** The origin this request was made to: the public URL's, or from the Host header. */
  const expectedOrigin = (req: IncomingMessage): string | undefined => {
    if (publicOrigin !== undefined) return publicOrigin.origin;
    const host = req.headers.host;
    if (host === undefined) return undefined;
    return `${isSecure(req) ? 'https' : 'http'}://${host.toLowerCase()}`;
  };

  const signInHref = (slug: string, params: Partial<SignInParams>): string => {
    const query = new URLSearchParams();
    if (params.as !== undefined) query.set('as', params.as);
    if (params.nonce !== undefined) query.set('nonce', params.nonce);
    if (params.state !== undefined) query.set('state', params.state);
    const text = query.toString();
    return `/${encodeURIComponent(slug)}${text === '' ? '' : `?${text}`}`;
  };

  /** The CSRF cookie of `req`, or a new one set on `res`. */
  const csrfCookie = (req: IncomingMessage, res: ServerResponse): string => {
    const secure = isSecure(req);
    const existing = csrf.cookieFrom(req.headers.cookie, secure);
    if (existing !== undefined) return existing;
    const value = csrf.newCookieValue();
    res.setHeader('Set-Cookie', csrf.setCookieHeader(value, secure));
    return value;
  };

  // GET /
  const rootRoute = (req: IncomingMessage, res: ServerResponse, url: URL): void => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      methodNotAllowed(req, res, ['GET', 'HEAD']);
      return;
    }
    const single = singleValued(url.searchParams);
    if (!single.ok) {
      badRequest(req, res, `The parameter ${single.name} is given more than once.`, '/');
      return;
    }
    const get = single.get;
    const carried: Partial<SignInParams> = {};
    const as = get('as');
    if (as === 'gui-client' || as === 'headless-client') carried.as = as;
    const nonce = get('nonce');
    if (nonce !== undefined && NONCE.test(nonce)) carried.nonce = nonce;
    const state = get('state');
    if (state !== undefined && STATE.test(state)) carried.state = state;
    const account = get('account');
    if (account === undefined) {
      counters.pages += 1;
      sendHtml(res, 200, accountPage(carried));
      return;
    }
    const slug = account.trim();
    if (!SLUG_SEGMENT.test(slug)) {
      counters.refused.bad_request += 1;
      sendHtml(
        res,
        400,
        accountPage(carried, 'An account name is letters, digits, "-" and "_" (up to 100).'),
      );
      return;
    }
    res.writeHead(303, { Location: signInHref(slug, carried), 'Content-Length': '0' });
    res.end();
  };

  // GET /<account>
  const signInPageRoute = (
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    slug: string,
  ): void => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      methodNotAllowed(req, res, ['GET', 'HEAD']);
      return;
    }
    const single = singleValued(url.searchParams);
    if (!single.ok) {
      badRequest(req, res, `The parameter ${single.name} is given more than once.`);
      return;
    }
    const parsed = parseSignInParams(single.get);
    if (!parsed.ok) {
      badRequest(req, res, parsed.error);
      return;
    }
    const account = backend.findAccount(slug);
    if (account === undefined) {
      noSuchAccount(req, res, slug);
      return;
    }
    const cookie = csrfCookie(req, res);
    counters.pages += 1;
    sendHtml(
      res,
      200,
      signInPage({
        accountSlug: account.slug,
        accountName: account.name,
        params: parsed.params,
        csrfToken: csrf.formToken(cookie, account.slug, now()),
      }),
    );
  };

  // POST /<account>/sign_in
  const signInPostRoute = async (
    req: IncomingMessage,
    res: ServerResponse,
    slug: string,
  ): Promise<void> => {
    if (req.method !== 'POST') {
      methodNotAllowed(req, res, ['POST']);
      return;
    }
    const mediaType = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (mediaType !== 'application/x-www-form-urlencoded') {
      refuse(req, res, {
        status: 415,
        reason: 'unsupported_media_type',
        code: 'unsupported_media_type',
        title: 'Unsupported form encoding',
        message: 'The sign-in form is sent as application/x-www-form-urlencoded.',
        headers: { 'Accept-Post': 'application/x-www-form-urlencoded' },
        close: true,
      });
      return;
    }
    const body = await readBody(req, bodyLimit);
    if (!body.ok) {
      if (body.reason === 'aborted') {
        counters.refused.bad_request += 1;
        res.destroy();
        return;
      }
      if (body.reason === 'too_large') {
        refuse(req, res, {
          status: 413,
          reason: 'payload_too_large',
          code: 'payload_too_large',
          title: 'Form too large',
          message: `The sign-in form may be at most ${bodyLimit} bytes.`,
          close: true,
        });
        return;
      }
      badRequest(req, res, 'The Content-Length header is not a number.');
      return;
    }
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(body.body);
    } catch {
      badRequest(req, res, 'The form is not UTF-8 text.');
      return;
    }
    const single = singleValued(new URLSearchParams(text));
    if (!single.ok) {
      badRequest(req, res, `The form field ${single.name} is given more than once.`);
      return;
    }
    const parsedParams = parseSignInParams(single.get);
    if (!parsedParams.ok) {
      badRequest(req, res, parsedParams.error);
      return;
    }
    const params = parsedParams.params;
    const retryHref = signInHref(slug, params);
    const credentials = credentialsSchema.safeParse({
      [CSRF_FIELD]: single.get(CSRF_FIELD),
      username: single.get('username'),
      password: single.get('password'),
    });
    if (!credentials.success) {
      badRequest(
        req,
        res,
        credentials.error.issues
          .map((issue) =>
            issue.path[0] === CSRF_FIELD ? 'the form is missing its CSRF token' : issue.message,
          )
          .join('; '),
        retryHref,
      );
      return;
    }

    // Origin "null" is what a browser sends under Referrer-Policy: no-referrer, so only a named
    // other origin is refused here; Sec-Fetch-Site (sent regardless of the referrer policy)
    // refuses cross-site and same-site posts. The CSRF token below is the check that matters.
    const origin = req.headers.origin;
    const fetchSite = req.headers['sec-fetch-site'];
    const foreignOrigin =
      origin !== undefined && origin !== 'null' && origin.toLowerCase() !== expectedOrigin(req);
    const foreignSite = fetchSite === 'cross-site' || fetchSite === 'same-site';
    if (foreignOrigin || foreignSite) {
      refuse(req, res, {
        status: 403,
        reason: 'forbidden_origin',
        code: 'forbidden_origin',
        title: 'Sign-in refused',
        message: 'The form was sent from another site. Open the sign-in page of this portal.',
        retryHref,
      });
      return;
    }
    const cookie = csrf.cookieFrom(req.headers.cookie, isSecure(req));
    const csrfVerdict = csrf.verify(cookie, credentials.data[CSRF_FIELD], slug, now());
    if (csrfVerdict === 'expired') {
      refuse(req, res, {
        status: 403,
        reason: 'csrf',
        code: 'csrf_token_expired',
        title: 'This form has expired',
        message: `The sign-in form was opened more than ${CSRF_TOKEN_MAX_AGE_MS / 3_600_000} hours ago. Reload the sign-in page and sign in again.`,
        retryHref,
      });
      return;
    }
    if (csrfVerdict !== 'ok') {
      refuse(req, res, {
        status: 403,
        reason: 'csrf',
        code: 'csrf_token_invalid',
        title: 'Sign-in refused',
        message:
          'This form has expired or did not come from this portal (its CSRF token does not match). Reload the sign-in page and try again.',
        retryHref,
      });
      return;
    }

    counters.signInAttempts += 1;
    const time = now();
    const accountKey = signInUserKey(slug, credentials.data.username);
    const addressKey = sourceAddressKey(sourceAddress(req));
    const byAccount = accountLimiter.check(accountKey, time);
    const byAddress = addressLimiter.check(addressKey, time);
    if (!byAccount.allowed || !byAddress.allowed) {
      const retryAfterMs = Math.max(
        byAccount.allowed ? 0 : byAccount.retryAfterMs,
        byAddress.allowed ? 0 : byAddress.retryAfterMs,
      );
      if (!byAccount.allowed) accountLimiter.noteRefused();
      if (!byAddress.allowed) addressLimiter.noteRefused();
      const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
      logger.warn(
        `http: sign-in attempts to account ${slug} rate-limited (${byAccount.allowed ? 'source address' : 'account'})`,
      );
      refuse(req, res, {
        status: 429,
        reason: 'rate_limited',
        code: 'rate_limited',
        title: 'Too many sign-in attempts',
        message: `Too many sign-in attempts. Wait ${seconds} seconds, then try again.`,
        headers: { 'Retry-After': String(seconds) },
        retryHref,
      });
      return;
    }
    // Only failed attempts are charged. The attempt is reserved now, before the password check,
    // so that guesses sent at once cannot all pass the check above while their hashes run; a
    // right password gives it back.
    accountLimiter.take(accountKey, time);
    addressLimiter.take(addressKey, time);

    const account = backend.findAccount(slug);
    if (account === undefined) {
      noSuchAccount(req, res, slug);
      return;
    }
    const identity = backend.findPasswordIdentity(account.id, credentials.data.username);
    const matches = await verifyPasswordAsync(credentials.data.password, identity?.passwordHash);
    if (matches && identity !== undefined) {
      const after = now();
      accountLimiter.refund(accountKey, after);
      addressLimiter.refund(addressKey, after);
    }
    if (!matches || identity === undefined) {
      counters.refused.wrong_credentials += 1;
      logger.info(`http: a sign-in to account ${account.slug} failed (wrong username or password)`);
      sendHtml(
        res,
        401,
        signInPage({
          accountSlug: account.slug,
          accountName: account.name,
          params,
          csrfToken: csrf.formToken(csrfCookie(req, res), account.slug, now()),
          error: 'The username or password is not correct.',
          username: credentials.data.username,
        }),
      );
      return;
    }

    if (identity.passwordHash !== null && passwordHashNeedsUpgrade(identity.passwordHash)) {
      // Made with weaker parameters than new hashes get: replace it now that we have the password.
      const upgraded = await hashPasswordAsync(credentials.data.password);
      backend.replacePasswordHash?.(identity.actorId, upgraded, now());
      logger.info(`http: ${identity.actorName}'s password hash upgraded to the current parameters`);
    }

    const issuedAt = now();
    const expiresAt = issuedAt + lifetimeMs;
    if (params.as === 'gui-client') {
      const issued = backend.issueClientToken({
        accountId: account.id,
        actorId: identity.actorId,
        kind: 'browser_client',
        nonce: params.nonce!,
        now: issuedAt,
        expiresAt,
      });
      counters.signInsGui += 1;
      logger.info(
        `http: ${identity.actorName} signed in to ${account.slug} (gui-client, token ${issued.tokenId})`,
      );
      const location = deepLink({
        accountSlug: account.slug,
        actorName: identity.actorName,
        fragment: issued.fragment,
        state: params.state!,
      });
      setNoStore(res);
      res.writeHead(303, { Location: location, 'Content-Length': '0' });
      res.end();
      return;
    }
    const issued = backend.issueClientToken({
      accountId: account.id,
      actorId: identity.actorId,
      kind: 'headless_client',
      now: issuedAt,
      expiresAt,
    });
    counters.signInsHeadless += 1;
    logger.info(
      `http: ${identity.actorName} signed in to ${account.slug} (headless-client, token ${issued.tokenId})`,
    );
    sendHtml(
      res,
      200,
      headlessTokenPage({
        accountName: account.name,
        actorName: identity.actorName,
        token: issued.token,
        expiresAt,
      }),
    );
  };

  // DELETE|POST /<account>/sign_out
  const signOutRoute = (req: IncomingMessage, res: ServerResponse, slug: string): void => {
    if (req.method !== 'DELETE' && req.method !== 'POST') {
      methodNotAllowed(req, res, ['DELETE', 'POST']);
      return;
    }
    const header = req.headers.authorization ?? req.headers['x-authorization'];
    const value = Array.isArray(header) ? undefined : header;
    const match = value === undefined ? null : /^Bearer ([\x21-\x7e]{1,1024})$/i.exec(value.trim());
    const invalid = (detail: string): void => {
      counters.refused.invalid_token += 1;
      sendProblem(res, 401, 'invalid_token', detail, {
        'WWW-Authenticate': 'Bearer error="invalid_token"',
      });
    };
    if (match === null) {
      invalid('Sign-out needs the token in an "Authorization: Bearer <token>" header.');
      return;
    }
    const result = backend.verifyToken(match[1]!, now());
    if (!result.ok) {
      invalid(`The token is not valid (${result.reason}).`);
      return;
    }
    const account = backend.findAccount(slug);
    if (account === undefined || account.id !== result.token.accountId) {
      invalid('The token is not valid (unknown).');
      return;
    }
    if (result.token.kind !== 'browser_client' && result.token.kind !== 'headless_client') {
      counters.refused.not_a_client_token += 1;
      sendProblem(
        res,
        403,
        'not_a_client_token',
        'Only a client token signs out this way; an operator revokes other tokens with `gatehouse-portal token revoke`.',
      );
      return;
    }
    backend.revokeToken(result.token.id, now());
    counters.signOuts += 1;
    logger.info(`http: token ${result.token.id} signed out of ${account.slug}`);
    deps.onTokenRevoked?.(result.token.id);
    res.writeHead(204, { 'Cache-Control': 'no-store' });
    res.end();
  };

  const guard =
    (run: (req: IncomingMessage, res: ServerResponse) => void | Promise<void>): RequestListener =>
    (req, res) => {
      counters.requests += 1;
      setSecurityHeaders(res, isSecure(req));
      try {
        const pending = run(req, res);
        if (pending !== undefined)
          pending.catch((error: unknown) => internalError(req, res, error));
      } catch (error) {
        internalError(req, res, error);
      }
    };

  const route = (req: IncomingMessage): RequestListener | null => {
    const target = req.url ?? '';
    if (!target.startsWith('/')) {
      return guard((rq, rs) => badRequest(rq, rs, 'The request target must be a path.'));
    }
    let url: URL;
    try {
      url = new URL(target, 'http://portal.invalid');
    } catch {
      return guard((rq, rs) => badRequest(rq, rs, 'The request target is not a valid path.'));
    }
    let segments = url.pathname.split('/').slice(1);
    if (segments.length > 1 && segments.at(-1) === '') segments = segments.slice(0, -1);
    if (segments.length === 1 && segments[0] === '')
      return guard((rq, rs) => rootRoute(rq, rs, url));
    let decoded: string[];
    try {
      decoded = segments.map((segment) => decodeURIComponent(segment));
    } catch {
      return null;
    }
    const slug = decoded[0]!;
    if (!SLUG_SEGMENT.test(slug)) return null;
    if (decoded.length === 1) return guard((rq, rs) => signInPageRoute(rq, rs, url, slug));
    if (decoded.length === 2 && decoded[1] === 'sign_in') {
      return guard((rq, rs) => signInPostRoute(rq, rs, slug));
    }
    if (decoded.length === 2 && decoded[1] === 'sign_out') {
      return guard((rq, rs) => signOutRoute(rq, rs, slug));
    }
    return null;
  };

  const handle = (req: IncomingMessage, res: ServerResponse): boolean => {
    const listener = route(req);
    if (listener === null) return false;
    listener(req, res);
    return true;
  };

  const listener: RequestListener = (req, res) => {
    if (handle(req, res)) return;
    counters.requests += 1;
    counters.refused.not_found += 1;
    setSecurityHeaders(res, isSecure(req));
    sendProblem(res, 404, 'not_found', 'Nothing is served at this address.');
  };

  return {
    route,
    handle,
    listener,
    counters: () => ({ ...counters, refused: { ...counters.refused } }),
  };
}
