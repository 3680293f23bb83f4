/**
 * Signing in as a person does, in Debian's Chromium (playwright-core,
 * headless) run inside a namespace: it opens the portal's sign-in page with
 * the desktop client's parameters (`?as=gui-client&nonce=N&state=S`), fills
 * the form, and the redirect to the gatehouse:// deep link is caught from the
 * sign-in response's Location, as the desktop app's URL handler would get it.
 * The client token is the nonce followed by the link's fragment.
 *
 * Chromium trusts the run's portal certificate through an SPKI pin
 * (`--ignore-certificate-errors-spki-list`, honoured with a user data dir):
 * a certificate with another key is still refused.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
const CALLBACK_ORIGIN = 'gatehouse://handle_client_sign_in_callback';

export interface BrowserSignInOptions {
  /** The namespace Chromium runs in (it must reach `origin`). */
  namespace: string;
  /** https://HOST[:PORT] of the portal. */
  origin: string;
  account: string;
  username: string;
  password: string;
  /** base64 SHA-256 of the portal certificate's public key. */
  spkiSha256: string;
  /** A directory for Chromium's profile and its launcher; the caller removes it. */
  directory: string;
  timeoutMs?: number;
}

export interface BrowserSignIn {
  /** nonce + fragment: a secret, never printed. */
  token: string;
  accountSlug: string;
  actorName: string;
  /** The page's heading (e.g. "Sign in to Demo Lab"). */
  heading: string;
  browserVersion: string;
  /** From opening the page to the caught deep link. */
  milliseconds: number;
}

export interface SignInCallback {
  accountSlug: string;
  actorName: string;
  fragment: string;
}

/**
 * The deep link's fields, checked: the gatehouse:// callback, the state the
 * client sent, an account and a fragment. Throws saying what is wrong (never
 * quoting the fragment).
 */
export function parseSignInCallback(location: string, expectedState: string): SignInCallback {
  let link: URL;
  try {
    link = new URL(location);
  } catch {
    throw new Error('the sign-in redirect is not a URL');
  }
  if (`${link.protocol}//${link.host}` !== CALLBACK_ORIGIN) {
    throw new Error(
      `the sign-in redirect goes to ${link.protocol}//${link.host}, not ${CALLBACK_ORIGIN}`,
    );
  }
  const state = link.searchParams.get('state');
  if (state !== expectedState) {
    throw new Error('the deep link carries another state than the one the client sent');
  }
  const fragment = link.searchParams.get('fragment') ?? '';
  const accountSlug = link.searchParams.get('account_slug') ?? '';
  if (fragment === '') throw new Error('the deep link carries no fragment');
  if (accountSlug === '') throw new Error('the deep link carries no account_slug');
  return { accountSlug, actorName: link.searchParams.get('actor_name') ?? '', fragment };
}

/** A nonce or state as the desktop client makes them: 32 characters of base64url. */
export function signInNonce(): string {
  return randomBytes(24).toString('base64url');
}

export async function signInWithChromium(options: BrowserSignInOptions): Promise<BrowserSignIn> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM} (scripts/bootstrap.sh installs Debian's chromium)`);
  }
  const timeout = options.timeoutMs ?? 30_000;
  mkdirSync(options.directory, { recursive: true, mode: 0o700 });
  // playwright starts the browser as its child, talking over inherited pipes: a launcher that
  // enters the namespace first keeps them.
  const launcher = join(options.directory, 'chromium-in-namespace');
  writeFileSync(launcher, `#!/bin/sh\nexec ip netns exec ${options.namespace} ${CHROMIUM} "$@"\n`);
  chmodSync(launcher, 0o700);
  const context = await chromium.launchPersistentContext(join(options.directory, 'profile'), {
    executablePath: launcher,
    headless: true,
    timeout,
    args: ['--no-sandbox', `--ignore-certificate-errors-spki-list=${options.spkiSha256}`],
  });
  try {
    context.setDefaultTimeout(timeout);
    const page = context.pages()[0] ?? (await context.newPage());
    const nonce = signInNonce();
    const state = signInNonce();
    const started = performance.now();
    await page.goto(
      `${options.origin}/${encodeURIComponent(options.account)}?as=gui-client&nonce=${nonce}&state=${state}`,
    );
    const heading = ((await page.textContent('h1')) ?? '').trim();
    await page.fill('#username', options.username);
    await page.fill('#password', options.password);
    const signInResponse = page.waitForResponse((response) =>
      response.url().endsWith(`/${options.account}/sign_in`),
    );
    await page.click('button[type=submit]');
    const response = await signInResponse;
    const location = response.headers()['location'];
    if (response.status() !== 303 || location === undefined) {
      throw new Error(
        `signing in as ${options.username} answered ${response.status()}` +
          `${location === undefined ? ' without a Location' : ''}: ${(await page.textContent('.error').catch(() => null)) ?? ''}`,
      );
    }
    const callback = parseSignInCallback(location, state);
    return {
      token: nonce + callback.fragment,
      accountSlug: callback.accountSlug,
      actorName: callback.actorName,
      heading,
      browserVersion: context.browser()?.version() ?? 'unknown',
      milliseconds: performance.now() - started,
    };
  } finally {
    await context.close();
  }
}
