/**
 * Test support for the portal's HTTP side: a real server on 127.0.0.1 port 0, a raw HTTP/1.1
 * client (so tests can send what fetch would refuse to), and helpers that walk the sign-in form.
 */
import assert from 'node:assert/strict';
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
import {
  storageSignInBackend,
  type SignInBackend,
  type TokenCheck,
} from '../src/http/sign-in-backend.ts';
import { openSqliteStorage } from '../src/db/sqlite-storage.ts';
import type { PortalStorage } from '../src/db/storage.ts';

const FIXTURE_TIME = Date.UTC(2026, 0, 1);

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
  storage: PortalStorage;
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

/** A Fixture on the portal's SQLite storage in memory, with the account "acme". */
export function createFixture(): Fixture {
  const storage = openSqliteStorage(':memory:');
  const created = storage.createAccount({ slug: 'acme', name: 'Acme Corp', now: FIXTURE_TIME });
  const account = { id: created.id, slug: created.slug, name: created.name };
  const backend = storageSignInBackend(storage);
  return {
    storage,
    backend,
    account,
    addAccount: (slug, name) => {
      const other = storage.createAccount({ slug, name, now: FIXTURE_TIME });
      return { id: other.id, slug: other.slug, name: other.name };
    },
    addUser: (username, name, password) => {
      const actor = storage.createActor({
        accountId: account.id,
        kind: 'user',
        name,
        email: username,
        now: FIXTURE_TIME,
      });
      storage.setPasswordIdentity(actor.id, hashPassword(password), FIXTURE_TIME);
      return { actorId: actor.id };
    },
    snapshot: () => {
      const actors = storage.listActors();
      return JSON.stringify({
        accounts: storage.listAccounts(),
        actors,
        identities: actors.map((actor) => storage.findPasswordIdentity(actor.id) ?? null),
        tokens: storage.listTokens(),
        groups: storage.listGroups(),
        memberships: storage.listMemberships({}),
      });
    },
    tokenCount: () => storage.listTokens().length,
    verify: (token, now) => backend.verifyToken(token, now),
    close: () => storage.close(),
  };
}
