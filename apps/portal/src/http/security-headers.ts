/**
 * Headers on every response of the portal's pages and APIs. The CSP allows no script at all,
 * the one inline stylesheet by hash, forms only to this origin and (after the redirect the
 * sign-in POST answers with) to the gatehouse: scheme, and no framing; the referrer is never
 * sent, so the nonce and state in the sign-in URL cannot leak through it.
 */
import type { ServerResponse } from 'node:http';
import { STYLE_HASH_SOURCE } from './pages.ts';

export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  `style-src ${STYLE_HASH_SOURCE}`,
  "form-action 'self' gatehouse:",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

export function setSecurityHeaders(res: ServerResponse, tls: boolean): void {
  res.setHeader('Content-Security-Policy', CONTENT_SECURITY_POLICY);
  res.setHeader('X-Frame-Options', 'DENY');
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'no-referrer');
  res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
  res.setHeader('Cross-Origin-Resource-Policy', 'same-origin');
  res.setHeader('Permissions-Policy', 'camera=(), microphone=(), geolocation=()');
  if (tls) res.setHeader('Strict-Transport-Security', 'max-age=31536000');
}

/** Headers that keep a response out of every cache (pages with a token or a CSRF field). */
export function setNoStore(res: ServerResponse): void {
  res.setHeader('Cache-Control', 'no-store, max-age=0');
  res.setHeader('Pragma', 'no-cache');
  res.setHeader('Expires', '0');
}
