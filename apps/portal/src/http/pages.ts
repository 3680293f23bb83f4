/**
 * The portal's HTML pages: plain forms, no script. Every value put into a page goes through
 * `escapeHtml`; the one stylesheet is inline and allowed by its hash in the CSP, so the policy
 * needs neither 'unsafe-inline' nor a route for assets.
 */
import { createHash } from 'node:crypto';

const STYLE = `body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem;color:#1b1f24;background:#fafafa}
h1{font-size:1.4rem}label{display:block;margin:.8rem 0 .2rem}
input[type=text],input[type=password]{width:100%;padding:.5rem;box-sizing:border-box;font-size:1rem}
button{margin-top:1rem;padding:.5rem 1.2rem;font-size:1rem}
.error{background:#fde8e8;border:1px solid #e0a0a0;padding:.6rem;border-radius:4px}
textarea{width:100%;font-family:monospace;font-size:.9rem;box-sizing:border-box}
.muted{color:#555;font-size:.9rem}`;

/** The CSP source that allows the inline stylesheet. */
export const STYLE_HASH_SOURCE = `'sha256-${createHash('sha256').update(STYLE).digest('base64')}'`;

/** Text safe inside HTML element content and double-quoted attribute values. */
export function escapeHtml(text: string): string {
  return text
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function layout(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${escapeHtml(title)} · Gatehouse</title>
<style>${STYLE}</style>
</head>
<body>
${body}
</body>
</html>
`;
}

function hidden(name: string, value: string | undefined): string {
  if (value === undefined) return '';
  return `<input type="hidden" name="${escapeHtml(name)}" value="${escapeHtml(value)}">\n`;
}

export interface SignInParams {
  as: 'gui-client' | 'headless-client';
  nonce?: string;
  state?: string;
}

/** `/`: which account to sign in to. Sign-in parameters already in the URL are carried along. */
export function accountPage(params: Partial<SignInParams>, error?: string): string {
  return layout(
    'Sign in',
    `<h1>Sign in to Gatehouse</h1>
${error === undefined ? '' : `<p class="error" role="alert">${escapeHtml(error)}</p>\n`}<form method="get" action="/">
<label for="account">Account</label>
<input type="text" id="account" name="account" autocomplete="organization" required autofocus maxlength="100">
${hidden('as', params.as)}${hidden('nonce', params.nonce)}${hidden('state', params.state)}<button type="submit">Continue</button>
</form>`,
  );
}

export interface SignInPageInput {
  accountSlug: string;
  accountName: string;
  params: SignInParams;
  csrfToken: string;
  error?: string;
  username?: string;
}

/** `/<account>`: the username/password form. */
export function signInPage(input: SignInPageInput): string {
  const { accountSlug, accountName, params } = input;
  const action = `/${encodeURIComponent(accountSlug)}/sign_in`;
  const what =
    params.as === 'gui-client'
      ? 'Signing in returns you to the Gatehouse client.'
      : 'Signing in shows a token to paste into a headless client.';
  return layout(
    `Sign in to ${accountName}`,
    `<h1>Sign in to ${escapeHtml(accountName)}</h1>
<p class="muted">${escapeHtml(what)}</p>
${input.error === undefined ? '' : `<p class="error" role="alert">${escapeHtml(input.error)}</p>\n`}<form method="post" action="${escapeHtml(action)}">
${hidden('csrf_token', input.csrfToken)}${hidden('as', params.as)}${hidden('nonce', params.nonce)}${hidden('state', params.state)}<label for="username">Email or name</label>
<input type="text" id="username" name="username" autocomplete="username" required maxlength="256" value="${escapeHtml(input.username ?? '')}"${input.username === undefined ? ' autofocus' : ''}>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required maxlength="1024"${input.username === undefined ? '' : ' autofocus'}>
<button type="submit">Sign in</button>
</form>`,
  );
}

export interface HeadlessTokenPageInput {
  accountName: string;
  actorName: string;
  token: string;
  expiresAt: number;
}

/** After a headless sign-in: the token, shown this once. */
export function headlessTokenPage(input: HeadlessTokenPageInput): string {
  return layout(
    'Your token',
    `<h1>Signed in to ${escapeHtml(input.accountName)}</h1>
<p>Signed in as ${escapeHtml(input.actorName)}. Paste this token into the headless client. It is shown only this once and expires ${escapeHtml(new Date(input.expiresAt).toISOString())}.</p>
<textarea id="token" readonly rows="4" spellcheck="false">${escapeHtml(input.token)}</textarea>
<p class="muted">Keep it secret: it signs in as you.</p>`,
  );
}

export interface ErrorPageInput {
  title: string;
  message: string;
  /** A link back (e.g. to the form), if there is a sensible one. */
  retryHref?: string;
}

/** A refusal, for people. */
export function errorPage(input: ErrorPageInput): string {
  const retry =
    input.retryHref === undefined
      ? ''
      : `\n<p><a href="${escapeHtml(input.retryHref)}">Try again</a></p>`;
  return layout(
    input.title,
    `<h1>${escapeHtml(input.title)}</h1>
<p class="error" role="alert">${escapeHtml(input.message)}</p>${retry}`,
  );
}
