/**
 * Portal tokens: `<prefix>.<id>.<secret>`.
 *
 * - id: 16 random bytes, base64url (22 characters) — the row's key, for lookup;
 * - secret: 32 random bytes, base64url (43 characters);
 * - prefix: the client's nonce for a browser sign-in (the client holds `nonce`, the deep link
 *   carries only the fragment `.<id>.<secret>`, so the token is `nonce + fragment`), and the
 *   fixed "gh" for tokens an operator makes (service accounts, gateways) and headless sign-ins.
 *
 * The database keeps the id and the SHA-256 of the whole text, never the text: a leaked
 * database lets nobody sign in, and a deep link caught on its way lacks the nonce. Verification
 * looks the row up by id and compares hashes in constant time.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Id, Millis, PortalStorage, Token, TokenKind } from './db/storage.ts';

export const OPERATOR_TOKEN_PREFIX = 'gh';
/** Default lifetime of a token made by signing in. */
export const DEFAULT_CLIENT_TOKEN_LIFETIME_MS = 7 * 24 * 60 * 60 * 1000;

const ID_BYTES = 16;
const SECRET_BYTES = 32;
/** A browser client's nonce, which becomes the token's prefix. */
export const NONCE_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;
const PREFIX = /^[A-Za-z0-9_-]{1,128}$/;
const ID = /^[A-Za-z0-9_-]{22}$/;
const SECRET = /^[A-Za-z0-9_-]{43}$/;

export interface ParsedToken {
  prefix: string;
  id: string;
  secret: string;
}

/** The parts of a token text, or undefined when it is not one. */
export function parseToken(text: string): ParsedToken | undefined {
  if (typeof text !== 'string' || text.length > 256) return undefined;
  const parts = text.split('.');
  if (parts.length !== 3) return undefined;
  const [prefix, id, secret] = parts as [string, string, string];
  if (!PREFIX.test(prefix) || !ID.test(id) || !SECRET.test(secret)) return undefined;
  return { prefix, id, secret };
}

/** Lowercase hex SHA-256 of the whole token text: what the database keeps. */
export function hashToken(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

export interface GeneratedToken {
  id: string;
  /** `.<id>.<secret>` */
  fragment: string;
  /** `<prefix>.<id>.<secret>`: shown once, never stored. */
  text: string;
  hash: string;
}

/** A fresh random token with `prefix` (the nonce, or OPERATOR_TOKEN_PREFIX). */
export function generateToken(prefix: string = OPERATOR_TOKEN_PREFIX): GeneratedToken {
  if (!PREFIX.test(prefix)) throw new RangeError('token prefix: 1 to 128 of A-Z a-z 0-9 _ -');
  const id = randomBytes(ID_BYTES).toString('base64url');
  const secret = randomBytes(SECRET_BYTES).toString('base64url');
  const fragment = `.${id}.${secret}`;
  const text = `${prefix}${fragment}`;
  return { id, fragment, text, hash: hashToken(text) };
}

export interface IssueTokenInput {
  accountId: Id;
  kind: TokenKind;
  /** Every kind but gateway. */
  actorId?: Id;
  /** gateway only. */
  siteId?: Id;
  /** browser_client: the client's nonce (NONCE_PATTERN), required. Others: "gh". */
  nonce?: string;
  now: Millis;
  /** null: never expires. */
  expiresAt: Millis | null;
}

export interface IssuedToken {
  token: Token;
  /** The whole text: give it to its holder once; it is not stored. */
  text: string;
  fragment: string;
}

/** Makes a token and stores its row (id and hash). */
export function issueToken(storage: PortalStorage, input: IssueTokenInput): IssuedToken {
  let prefix = OPERATOR_TOKEN_PREFIX;
  if (input.kind === 'browser_client') {
    if (input.nonce === undefined || !NONCE_PATTERN.test(input.nonce)) {
      throw new RangeError('a browser_client token needs the nonce: 16 to 128 of A-Z a-z 0-9 _ -');
    }
    prefix = input.nonce;
  } else if (input.nonce !== undefined) {
    throw new RangeError(`a ${input.kind} token has no nonce`);
  }
  const generated = generateToken(prefix);
  const token = storage.createToken({
    id: generated.id,
    accountId: input.accountId,
    kind: input.kind,
    actorId: input.actorId ?? null,
    siteId: input.siteId ?? null,
    hash: generated.hash,
    expiresAt: input.expiresAt,
    now: input.now,
  });
  return { token, text: generated.text, fragment: generated.fragment };
}

export type TokenRefusal = 'malformed' | 'unknown' | 'expired' | 'revoked';

export type TokenVerdict = { ok: true; token: Token } | { ok: false; reason: TokenRefusal };

export interface VerifyTokenOptions {
  /** Record now as the token's last use when it verifies (default false). */
  markUsed?: boolean;
}

/** A hash to compare against when the id is unknown, so both paths do the same work. */
const DUMMY_HASH = Buffer.alloc(32);

/**
 * The token's row when `text` is a live token, else why not: malformed (not the format),
 * unknown (no such id, or the text does not hash to that row's hash), revoked (revoked, or its
 * actor disabled), expired (now ≥ expiresAt). The hash comparison is constant-time.
 */
export function verifyToken(
  storage: PortalStorage,
  text: string,
  now: Millis,
  options: VerifyTokenOptions = {},
): TokenVerdict {
  const parsed = parseToken(text);
  if (parsed === undefined) return { ok: false, reason: 'malformed' };
  const row = storage.findToken(parsed.id);
  const given = createHash('sha256').update(text, 'utf8').digest();
  const stored = row !== undefined ? Buffer.from(row.hash, 'hex') : DUMMY_HASH;
  const matches = stored.length === given.length && timingSafeEqual(stored, given);
  if (row === undefined || !matches) return { ok: false, reason: 'unknown' };
  if (row.revokedAt !== null) return { ok: false, reason: 'revoked' };
  if (row.actorId !== null) {
    const actor = storage.findActor(row.actorId);
    if (actor === undefined) return { ok: false, reason: 'unknown' };
    if (actor.disabledAt !== null) return { ok: false, reason: 'revoked' };
  }
  if (row.expiresAt !== null && now >= row.expiresAt) return { ok: false, reason: 'expired' };
  if (options.markUsed === true) {
    storage.markTokenUsed(row.id, now);
    return { ok: true, token: { ...row, lastUsedAt: now } };
  }
  return { ok: true, token: row };
}
