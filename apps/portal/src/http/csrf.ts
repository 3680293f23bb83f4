/**
 * CSRF protection for the sign-in form: a signed double-submit token.
 *
 * The page sets a random cookie (HttpOnly, SameSite=Strict, Secure and `__Host-` prefixed when
 * the portal is served over TLS) and puts HMAC-SHA256(key, account slug ‖ cookie) into a hidden
 * form field, with the time the form was issued in the MAC's input (`<issued at>.<MAC>`). A POST
 * is accepted only with both, the field matching the cookie's MAC for the account posted to,
 * and the form at most 12 hours old (CSRF_TOKEN_MAX_AGE_MS). Another site can neither read the cookie nor mint the MAC, and
 * SameSite=Strict keeps the browser from sending the cookie with a cross-site POST at all.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export const CSRF_FIELD = 'csrf_token';
const COOKIE_PLAIN = 'gatehouse_csrf';
const COOKIE_SECURE = '__Host-gatehouse_csrf';
const COOKIE_VALUE = /^[A-Za-z0-9_-]{43}$/;
/** A form token: its issue time (epoch ms, decimal) and the MAC. */
const FIELD_TEXT = /^(\d{1,16})\.([A-Za-z0-9_-]{43})$/;
/** A form token older than this is refused (the page says to reload the form): 12 hours. */
export const CSRF_TOKEN_MAX_AGE_MS = 12 * 60 * 60 * 1000;
/** A token "issued" further in the future than this is refused too (another instance's clock). */
const CSRF_CLOCK_SKEW_MS = 60 * 1000;
/** How long the browser keeps the cookie: as long as a form token lasts. */
const COOKIE_MAX_AGE_S = CSRF_TOKEN_MAX_AGE_MS / 1000;

export type CsrfVerdict = 'ok' | 'invalid' | 'expired';

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

  /**
   * The form field value for the cookie `cookieValue` on account `accountSlug`'s form, issued at
   * `now` (epoch ms): `<issued at, ms>.<MAC>`, the issue time inside the MAC's input.
   */
  formToken(cookieValue: string, accountSlug: string, now: number): string {
    const issuedAt = Math.max(0, Math.floor(now));
    return `${issuedAt}.${this.#mac(cookieValue, accountSlug, issuedAt)}`;
  }

  /**
   * Whether `fieldValue` is a form token of `cookieValue` for `accountSlug` (the MAC compared
   * in constant time) that is at most CSRF_TOKEN_MAX_AGE_MS old at `now`: 'ok', 'expired' (a
   * genuine token, too old — or issued in the future beyond a minute's clock skew), or
   * 'invalid'.
   */
  verify(
    cookieValue: string | undefined,
    fieldValue: string | undefined,
    accountSlug: string,
    now: number,
  ): CsrfVerdict {
    if (cookieValue === undefined || fieldValue === undefined) return 'invalid';
    const match = FIELD_TEXT.exec(fieldValue);
    if (match === null) return 'invalid';
    const issuedAt = Number(match[1]);
    if (!Number.isSafeInteger(issuedAt)) return 'invalid';
    const expected = Buffer.from(this.#mac(cookieValue, accountSlug, issuedAt), 'base64url');
    const given = Buffer.from(match[2]!, 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return 'invalid';
    const age = now - issuedAt;
    if (age > CSRF_TOKEN_MAX_AGE_MS || age < -CSRF_CLOCK_SKEW_MS) return 'expired';
    return 'ok';
  }

  #mac(cookieValue: string, accountSlug: string, issuedAt: number): string {
    return createHmac('sha256', this.#key)
      .update(`gatehouse-csrf\0${accountSlug}\0${cookieValue}\0${issuedAt}`)
      .digest('base64url');
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
