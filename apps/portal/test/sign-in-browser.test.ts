/**
 * Sign-in through the page in Debian's real Chromium (playwright-core, headless): the form is
 * filled and submitted as a person would, the redirect to the gatehouse:// deep link is caught
 * from the sign-in response's Location header (and the navigation Chromium attempts to it), and
 * the token it carries (nonce + fragment) is accepted by token verification. The pages must
 * raise no CSP violation (the inline stylesheet's hash, form-action to gatehouse:).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test, type TestContext } from 'node:test';
import { skipLoudly } from '@gatehouse/test-support';
import { chromium, type Browser } from 'playwright-core';
import { createFixture, startHarness } from './http-support.ts';

const CHROMIUM = '/usr/bin/chromium';
const NONCE = 'browserNonce_0123456789-abcdef';
const STATE = 'browser-state-42';

async function launch(t: TestContext): Promise<Browser | undefined> {
  if (!existsSync(CHROMIUM)) {
    skipLoudly(t, `no Chromium at ${CHROMIUM} (scripts/bootstrap.sh installs Debian's chromium)`);
    return undefined;
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox'],
  });
  t.after(() => browser.close());
  return browser;
}

async function setup(t: TestContext) {
  const fixture = createFixture();
  const user = fixture.addUser('alice@example.com', 'Alice Example', 'browser password');
  const harness = await startHarness({ backend: fixture.backend });
  t.after(async () => {
    await harness.close();
    fixture.close();
  });
  return { fixture, user, harness };
}

void test('Chromium: sign in on the page, the deep link carries a token that verifies', async (t) => {
  const browser = await launch(t);
  if (browser === undefined) return;
  const { fixture, user, harness } = await setup(t);
  const context = await browser.newContext();
  const page = await context.newPage();
  const cspViolations: string[] = [];
  page.on('console', (message) => {
    if (/Content Security Policy|Refused to/i.test(message.text())) {
      cspViolations.push(message.text());
    }
  });
  const externalNavigations: string[] = [];
  page.on('request', (request) => {
    if (request.url().startsWith('gatehouse:')) externalNavigations.push(request.url());
  });

  // Start at / like a person who only knows the portal's address.
  await page.goto(`${harness.origin}/?as=gui-client&nonce=${NONCE}&state=${STATE}`);
  await page.fill('#account', 'acme');
  await Promise.all([page.waitForURL(/\/acme\?/), page.click('button[type=submit]')]);
  assert.equal(
    new URL(page.url()).search,
    `?as=gui-client&nonce=${NONCE}&state=${STATE}`,
    'the sign-in parameters were carried',
  );
  assert.equal(await page.textContent('h1'), 'Sign in to Acme Corp');
  // The stylesheet applied (its CSP hash is right): the body is not the default font.
  const fontFamily = await page.locator('body').evaluate(
    // Runs in the page; typed loosely because this project's lib has no DOM.
    (body) =>
      (
        globalThis as unknown as { getComputedStyle(e: unknown): { fontFamily: string } }
      ).getComputedStyle(body).fontFamily,
  );
  assert.match(fontFamily, /system-ui/);

  // A wrong password first: the page says so.
  await page.fill('#username', 'alice@example.com');
  await page.fill('#password', 'not it');
  const wrong = page.waitForResponse((r) => r.url().endsWith('/acme/sign_in'));
  await page.click('button[type=submit]');
  assert.equal((await wrong).status(), 401);
  await page.waitForSelector('.error');
  assert.equal(await page.textContent('.error'), 'The username or password is not correct.');
  assert.equal(await page.inputValue('#username'), 'alice@example.com');

  // Then the right one; the sign-in response is a 303 to the deep link.
  await page.fill('#password', 'browser password');
  const signInResponse = page.waitForResponse(
    (response) => response.url().endsWith('/acme/sign_in') && response.status() === 303,
  );
  await page.click('button[type=submit]');
  const response = await signInResponse;
  const location = response.headers()['location'];
  assert.ok(location !== undefined, 'the 303 has a Location');
  const link = new URL(location);
  assert.equal(`${link.protocol}//${link.host}`, 'gatehouse://handle_client_sign_in_callback');
  assert.equal(link.searchParams.get('account_slug'), 'acme');
  assert.equal(link.searchParams.get('actor_name'), 'Alice Example');
  assert.equal(link.searchParams.get('state'), STATE);
  const fragment = link.searchParams.get('fragment');
  assert.ok(fragment !== null);

  const check = fixture.verify(NONCE + fragment, Date.now());
  assert.ok(check.ok, JSON.stringify(check));
  assert.equal(check.token.kind, 'browser_client');
  assert.equal(check.token.actorId, user.actorId);

  // Chromium tried to follow it (it knows no handler for gatehouse:, so it goes nowhere).
  await page.waitForTimeout(200);
  assert.ok(
    externalNavigations.length === 0 || externalNavigations[0] === location,
    `an attempted navigation goes to the deep link itself: ${externalNavigations.join(', ')}`,
  );
  assert.deepEqual(cspViolations, [], 'no CSP violation on the pages');
  assert.equal(harness.portal.counters().signInsGui, 1);
  assert.equal(harness.portal.counters().refused.wrong_credentials, 1);
});

void test('Chromium: the headless sign-in shows the token once; a cross-site form post is refused', async (t) => {
  const browser = await launch(t);
  if (browser === undefined) return;
  const { fixture, harness } = await setup(t);
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${harness.origin}/acme?as=headless-client`);
  await page.fill('#username', 'alice@example.com');
  await page.fill('#password', 'browser password');
  const signedIn = page.waitForResponse((r) => r.url().endsWith('/acme/sign_in'));
  await page.click('button[type=submit]');
  assert.equal((await signedIn).status(), 200);
  await page.waitForSelector('#token');
  const token = await page.inputValue('#token');
  const check = fixture.verify(token, Date.now());
  assert.ok(check.ok, JSON.stringify(check));
  assert.equal(check.token.kind, 'headless_client');

  // Going back does not show it again: the page was not cached (no-store) and the form is fresh.
  await page.goBack();
  const html = await page.content();
  assert.ok(!html.includes(token), 'the token is not on the page after going back');

  // Another origin (localhost instead of 127.0.0.1: a different site for cookies) posts a form
  // to the portal with the victim's CSRF field copied in: no cookie travels, so 403.
  const before = fixture.tokenCount();
  const crossSite = await context.newPage();
  const csrfField = await page
    .locator('input[name=csrf_token]')
    .getAttribute('value')
    .catch(() => null);
  await crossSite.route('http://attacker.test/', (route) =>
    route.fulfill({
      contentType: 'text/html',
      body: `<form id="f" method="post" action="${harness.origin}/acme/sign_in">
<input name="csrf_token" value="${csrfField ?? 'x'}"><input name="as" value="headless-client">
<input name="username" value="alice@example.com"><input name="password" value="browser password">
<button id="go" type="submit">go</button></form>`,
    }),
  );
  await crossSite.goto('http://attacker.test/');
  const refused = crossSite.waitForResponse((r) => r.url().endsWith('/acme/sign_in'));
  await crossSite.click('#go');
  assert.equal((await refused).status(), 403);
  assert.equal(fixture.tokenCount(), before, 'no token made for the cross-site post');
});
