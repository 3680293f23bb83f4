/**
 * Test support for the portal's HTTP side: a real server on 127.0.0.1 port 0, a raw HTTP/1.1
 * client (so tests can send what fetch would refuse to), and helpers that walk the sign-in form.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import {
  createPortalHttpHandler,
  type PortalHttp,
  type PortalHttpDeps,
} from '../src/http/handler.ts';
import { createPortalServer, type PortalServer, type TlsMaterial } from '../src/http/server.ts';
import { hashPassword } from '../src/http/passwords.ts';
import type { SignInBackend, TokenCheck } from '../src/http/sign-in-backend.ts';

export interface Harness {
  portal: PortalHttp;
  server: PortalServer;
  port: number;
  origin: string;
  close(): Promise<void>;
}

export async function startHarness(
  deps: PortalHttpDeps,
  serverOptions: { tls?: TlsMaterial; maxHeaderSize?: number } = {},
): Promise<Harness> {
  const portal = createPortalHttpHandler(deps);
  const server = createPortalServer(serverOptions, portal.listener);
  await new Promise<void>((resolve) => server.server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as AddressInfo).port;
  return {
    portal,
    server,
    port,
    origin: `${server.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.server.closeAllConnections();
        server.server.close(() => resolve());
      }),
  };
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface RequestInput {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** https with this CA. */
  ca?: string | Buffer;
  /** https with the default CAs. */
  https?: boolean;
}

/** One request on its own connection. */
export function request(port: number, input: RequestInput): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const options = {
      host: '127.0.0.1',
      port,
      method: input.method ?? 'GET',
      path: input.path,
      headers: input.headers ?? {},
      agent: false as const,
    };
    const onResponse = (res: http.IncomingMessage): void => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        }),
      );
      res.on('error', reject);
    };
    const req =
      input.ca === undefined && input.https !== true
        ? http.request(options, onResponse)
        : https.request(
            {
              ...options,
              ...(input.ca === undefined ? {} : { ca: input.ca }),
              servername: 'localhost',
            },
            onResponse,
          );
    req.on('error', reject);
    if (input.body !== undefined) req.end(input.body);
    else req.end();
  });
}

/** The value of hidden input `name` in an HTML page. */
export function hiddenField(html: string, name: string): string | undefined {
  const match = new RegExp(`<input type="hidden" name="${name}" value="([^"]*)">`).exec(html);
  return match === null ? undefined : decodeEntities(match[1]!);
}

export function decodeEntities(text: string): string {
  return text
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&quot;', '"')
    .replaceAll('&#39;', "'")
    .replaceAll('&amp;', '&');
}

/** The `name=value` of a Set-Cookie header (without attributes). */
export function cookiePair(headers: http.IncomingHttpHeaders): string {
  const setCookie = headers['set-cookie'];
  assert.ok(setCookie !== undefined && setCookie.length === 1, 'one Set-Cookie header');
  return setCookie[0]!.split(';')[0]!;
}

export interface FormSession {
  cookie: string;
  csrfToken: string;
  page: Reply;
}

/** GETs the sign-in page and returns its cookie and CSRF field. */
export async function openSignInPage(port: number, path: string): Promise<FormSession> {
  const page = await request(port, { path, headers: { Accept: 'text/html' } });
  assert.equal(page.status, 200, page.body);
  const csrfToken = hiddenField(page.body, 'csrf_token');
  assert.ok(csrfToken !== undefined, 'the page has a CSRF field');
  return { cookie: cookiePair(page.headers), csrfToken, page };
}

export function form(fields: Record<string, string>): string {
  return new URLSearchParams(fields).toString();
}

/** POSTs a sign-in form. */
export function postSignIn(
  port: number,
  slug: string,
  fields: Record<string, string>,
  headers: Record<string, string> = {},
): Promise<Reply> {
  return request(port, {
    method: 'POST',
    path: `/${slug}/sign_in`,
    headers: {
      'Content-Type': 'application/x-www-form-urlencoded',
      Accept: 'text/html',
      ...headers,
    },
    body: form(fields),
  });
}

/** A clock tests move by hand. */
export class ManualClock {
  time: number;
  constructor(time: number) {
    this.time = time;
  }
  now = (): number => this.time;
  advance(ms: number): void {
    this.time += ms;
  }
}

/**
 * What the tests set up and look at: an account with users, the backend the handler runs on,
 * and a snapshot of everything stored (to show a refused request changed nothing).
 */
export interface Fixture {
  backend: SignInBackend;
  account: { id: string; slug: string; name: string };
  addUser(username: string, name: string, password: string): { actorId: string };
  addAccount(slug: string, name: string): { id: string; slug: string; name: string };
  /** Every stored row, as text; equal snapshots mean nothing changed. */
  snapshot(): string;
  tokenCount(): number;
  verify(token: string, now: number): TokenCheck;
  close(): void;
}

/** An in-memory Fixture (until the SQLite storage is wired in). */
export function createMemoryFixture(): Fixture {
  const accounts = new Map<string, { id: string; slug: string; name: string }>();
  const users = new Map<
    string,
    { accountId: string; actorId: string; actorName: string; passwordHash: string }
  >();
  const tokens = new Map<
    string,
    {
      id: string;
      hash: string;
      accountId: string;
      actorId: string;
      kind: string;
      expiresAt: number;
      revokedAt: number | null;
    }
  >();
  const sha = (text: string): string => createHash('sha256').update(text).digest('hex');
  const addAccount = (slug: string, name: string) => {
    const account = { id: randomUUID(), slug, name };
    accounts.set(slug, account);
    return account;
  };
  const account = addAccount('acme', 'Acme Corp');
  const backend: SignInBackend = {
    findAccount: (slug) => accounts.get(slug),
    findPasswordIdentity: (accountId, username) => {
      const user = users.get(`${accountId}/${username}`);
      return user === undefined
        ? undefined
        : { actorId: user.actorId, actorName: user.actorName, passwordHash: user.passwordHash };
    },
    issueClientToken: (input) => {
      const id = randomBytes(16).toString('base64url');
      const fragment = `.${id}.${randomBytes(32).toString('base64url')}`;
      const token = (input.nonce ?? 'gh') + fragment;
      tokens.set(id, {
        id,
        hash: sha(token),
        accountId: input.accountId,
        actorId: input.actorId,
        kind: input.kind,
        expiresAt: input.expiresAt,
        revokedAt: null,
      });
      return { tokenId: id, token, fragment };
    },
    verifyToken: (text, now) => {
      const parts = text.split('.');
      if (parts.length !== 3) return { ok: false, reason: 'malformed' };
      const row = tokens.get(parts[1]!);
      if (row === undefined || row.hash !== sha(text)) return { ok: false, reason: 'unknown' };
      if (row.revokedAt !== null) return { ok: false, reason: 'revoked' };
      if (row.expiresAt <= now) return { ok: false, reason: 'expired' };
      return {
        ok: true,
        token: { id: row.id, accountId: row.accountId, kind: row.kind, actorId: row.actorId },
      };
    },
    revokeToken: (id, now) => {
      const row = tokens.get(id);
      if (row !== undefined && row.revokedAt === null) row.revokedAt = now;
    },
  };
  return {
    backend,
    account,
    addAccount,
    addUser: (username, name, password) => {
      const actorId = randomUUID();
      users.set(`${account.id}/${username}`, {
        accountId: account.id,
        actorId,
        actorName: name,
        passwordHash: hashPassword(password),
      });
      return { actorId };
    },
    snapshot: () =>
      JSON.stringify([[...accounts.values()], [...users.entries()], [...tokens.values()]]),
    tokenCount: () => tokens.size,
    verify: (token, now) => backend.verifyToken(token, now),
    close: () => {},
  };
}

export const createFixture = createMemoryFixture;
