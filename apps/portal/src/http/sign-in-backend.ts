/**
 * What the HTTP side needs from storage and tokens, in its own words: find an account by slug,
 * a password identity by username, issue a client token, verify and revoke one. All
 * synchronous, like the storage under it. `storageSignInBackend` implements it over the
 * portal's PortalStorage and tokens module.
 */
import type { PortalStorage } from '../db/storage.ts';
import { issueToken, verifyToken } from '../tokens.ts';

export interface SignInAccount {
  id: string;
  slug: string;
  name: string;
}

export interface SignInIdentity {
  actorId: string;
  actorName: string;
  /** `scrypt$…`, or null when the identity has no password (then no password matches). */
  passwordHash: string | null;
}

export type ClientTokenKind = 'browser_client' | 'headless_client';

export interface IssueClientTokenInput {
  accountId: string;
  actorId: string;
  kind: ClientTokenKind;
  /** browser_client: the client's nonce, the token's prefix. */
  nonce?: string;
  now: number;
  expiresAt: number;
}

export interface IssuedClientToken {
  tokenId: string;
  /** The whole token text (nonce + fragment for a browser_client token). Never stored. */
  token: string;
  /** `.<id>.<secret>`: what the deep link carries. */
  fragment: string;
}

export interface VerifiedToken {
  id: string;
  accountId: string;
  kind: string;
  /** The actor the token signs in as (null for a gateway's token). */
  actorId: string | null;
}

export type TokenCheck =
  | { ok: true; token: VerifiedToken }
  | { ok: false; reason: 'malformed' | 'unknown' | 'expired' | 'revoked' };

export interface SignInBackend {
  findAccount(slug: string): SignInAccount | undefined;
  /** The user's password identity in the account; undefined for no such user (or a disabled one). */
  findPasswordIdentity(accountId: string, username: string): SignInIdentity | undefined;
  issueClientToken(input: IssueClientTokenInput): IssuedClientToken;
  verifyToken(text: string, now: number): TokenCheck;
  revokeToken(tokenId: string, now: number): void;
  /** Replaces the actor's password hash (a rehash with current parameters after a sign-in). */
  replacePasswordHash?(actorId: string, passwordHash: string, now: number): void;
}

/**
 * The SignInBackend over the portal's storage: accounts by slug; a user by email when the input
 * holds an "@", else by name — one lookup, never both, so a name cannot stand for another user's
 * email (service accounts and disabled users never sign in with a password); tokens through tokens.ts.
 */
export function storageSignInBackend(storage: PortalStorage): SignInBackend {
  return {
    findAccount(slug) {
      const account = storage.findAccountBySlug(slug);
      return account === undefined
        ? undefined
        : { id: account.id, slug: account.slug, name: account.name };
    },
    findPasswordIdentity(accountId, username) {
      const actor = username.includes('@')
        ? storage.findActorByEmail(accountId, username)
        : storage.findActorByName(accountId, username);
      if (actor === undefined || actor.kind !== 'user' || actor.disabledAt !== null) {
        return undefined;
      }
      const identity = storage.findPasswordIdentity(actor.id);
      return {
        actorId: actor.id,
        actorName: actor.name,
        passwordHash: identity?.passwordHash ?? null,
      };
    },
    issueClientToken(input) {
      const issued = issueToken(storage, {
        accountId: input.accountId,
        kind: input.kind,
        actorId: input.actorId,
        ...(input.nonce === undefined ? {} : { nonce: input.nonce }),
        now: input.now,
        expiresAt: input.expiresAt,
      });
      return { tokenId: issued.token.id, token: issued.text, fragment: issued.fragment };
    },
    verifyToken(text, now) {
      const verdict = verifyToken(storage, text, now);
      if (!verdict.ok) return verdict;
      const { id, accountId, kind, actorId } = verdict.token;
      return { ok: true, token: { id, accountId, kind, actorId } };
    },
    revokeToken(tokenId, now) {
      storage.revokeToken(tokenId, now);
    },
    replacePasswordHash(actorId, passwordHash, now) {
      storage.setPasswordIdentity(actorId, passwordHash, now);
    },
  };
}
