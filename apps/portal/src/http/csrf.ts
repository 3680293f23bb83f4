/**
 * CSRF protection for the sign-in form: a signed double-submit token.
 *
 * The page sets a random cookie (HttpOnly, SameSite=Strict, Secure and `__Host-` prefixed when
 * the portal is served over TLS) and puts HMAC-SHA256(key, account slug ‖ cookie) into a hidden
 * form field. A POST is accepted only with both, and the field matching the cookie's MAC for
 * the account posted to. Another site can neither read the cookie nor mint the MAC, and
 * SameSite=Strict keeps the browser from sending the cookie with a cross-site POST at all.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export const CSRF_FIELD = 'csrf_token';
const COOKIE_PLAIN = 'gatehouse_csrf';
const COOKIE_SECURE = '__Host-gatehouse_csrf';
const COOKIE_VALUE = /^[A-Za-z0-9_-]{43}$/;
const MAC_TEXT = /^[A-Za-z0-9_-]{43}$/;
/** How long the browser keeps the cookie: a form left open this long still posts. */
const COOKIE_MAX_AGE_S = 12 * 60 * 60;

export class CsrfProtection {
  readonly #key: Buffer;

  /** `key`: 32+ bytes shared by every instance serving the same portal; random if omitted. */
  constructor(key: Uint8Array = randomBytes(32)) {
    if (key.length < 32) throw new RangeError('the CSRF key must be at least 32 bytes');
    this.#key = Buffer.from(key);
  }

  cookieName(secure: boolean): string {
    return secure ? COOKIE_SECURE : COOKIE_PLAIN;
  }

  /** The cookie value a request carries, if well formed. */
  cookieFrom(cookieHeader: string | undefined, secure: boolean): string | undefined {
    const value = readCookie(cookieHeader, this.cookieName(secure));
    return value !== undefined && COOKIE_VALUE.test(value) ? value : undefined;
  }

  /** A fresh cookie value. */
  newCookieValue(): string {
    return randomBytes(32).toString('base64url');
  }

  /** The Set-Cookie header value for `value`. */
  setCookieHeader(value: string, secure: boolean): string {
    const attributes = [
      `${this.cookieName(secure)}=${value}`,
      'Path=/',
      `Max-Age=${COOKIE_MAX_AGE_S}`,
      'HttpOnly',
      'SameSite=Strict',
    ];
    if (secure) attributes.push('Secure');
    return attributes.join('; ');
  }

  /** The form field value for the cookie `cookieValue` on account `accountSlug`'s form. */
  formToken(cookieValue: string, accountSlug: string): string {
    return createHmac('sha256', this.#key)
      .update(`gatehouse-csrf\0${accountSlug}\0${cookieValue}`)
      .digest('base64url');
  }

  /** Whether `fieldValue` is the form token of `cookieValue` for `accountSlug` (constant time). */
  verify(
    cookieValue: string | undefined,
    fieldValue: string | undefined,
    accountSlug: string,
  ): boolean {
    if (cookieValue === undefined || fieldValue === undefined || !MAC_TEXT.test(fieldValue)) {
      return false;
    }
    const expected = Buffer.from(this.formToken(cookieValue, accountSlug), 'base64url');
    const given = Buffer.from(fieldValue, 'base64url');
    return given.length === expected.length && timingSafeEqual(given, expected);
  }
}

/** The value of cookie `name` in a Cookie header; the first when repeated. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const index = part.indexOf('=');
    if (index < 0) continue;
    if (part.slice(0, index).trim() === name) return part.slice(index + 1).trim();
  }
  return undefined;
}
