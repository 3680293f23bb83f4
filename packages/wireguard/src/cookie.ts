/**
 * MAC1, MAC2 and cookie replies (whitepaper section 5.4.4 and 5.4.7).
 *
 * MAC1 proves the sender knows our public key. Under load we also demand
 * MAC2, keyed with a cookie: a MAC of the sender's address under a secret
 * that rotates every COOKIE_REFRESH_TIME. A sender without a valid MAC2 gets
 * the cookie in an XChaCha20-Poly1305 cookie reply and retries with it.
 */

import { COOKIE_NONCE_LENGTH, COOKIE_REFRESH_TIME, LABEL_COOKIE, LABEL_MAC1 } from './constants.ts';
import {
  MAC_LENGTH,
  constantTimeEqual,
  hash,
  mac,
  xaeadOpen,
  xaeadSeal,
} from './crypto/primitives.ts';
import { endpointBytes } from './endpoint.ts';
import type { Endpoint } from './endpoint.ts';
import { mac1Offset, mac2Offset, writeCookieReply } from './messages.ts';
import type { CookieReply } from './messages.ts';

export type RandomBytes = (length: number) => Uint8Array;

/** The receiving side: checks MACs on handshake messages sent to us and issues cookies. */
export class CookieChecker {
  readonly #mac1Key: Uint8Array;
  readonly #cookieKey: Uint8Array;
  readonly #randomBytes: RandomBytes;
  #secret: Uint8Array | undefined;
  #secretCreatedMs = 0;

  constructor(localPublicKey: Uint8Array, randomBytes: RandomBytes) {
    this.#mac1Key = mac1Key(localPublicKey);
    this.#cookieKey = cookieKey(localPublicKey);
    this.#randomBytes = randomBytes;
  }

  isMac1Valid(message: Uint8Array): boolean {
    return hasValidMac1(this.#mac1Key, message, 0, message.length);
  }

  /** False when the secret the cookie would have come from has expired. */
  isMac2Valid(message: Uint8Array, source: Endpoint, nowMs: number): boolean {
    const secret = this.#secret;
    if (secret === undefined || nowMs - this.#secretCreatedMs >= COOKIE_REFRESH_TIME) return false;
    const cookie = cookieFor(secret, source);
    if (cookie === undefined) return false;
    const offset = mac2Offset(message);
    const expected = mac(cookie, message.subarray(0, offset));
    return constantTimeEqual(expected, message.subarray(offset));
  }

  /** A cookie reply to a handshake message whose sender index was `senderIndex`. */
  createReply(
    message: Uint8Array,
    senderIndex: number,
    source: Endpoint,
    nowMs: number,
  ): Uint8Array | undefined {
    if (this.#secret === undefined || nowMs - this.#secretCreatedMs >= COOKIE_REFRESH_TIME) {
      this.#secret?.fill(0);
      this.#secret = this.#randomBytes(32);
      this.#secretCreatedMs = nowMs;
    }
    const cookie = cookieFor(this.#secret, source);
    if (cookie === undefined) return undefined;
    const offset = mac1Offset(message);
    const nonce = this.#randomBytes(COOKIE_NONCE_LENGTH);
    const encryptedCookie = xaeadSeal(
      this.#cookieKey,
      nonce,
      cookie,
      message.subarray(offset, offset + 16),
    );
    return writeCookieReply({ receiverIndex: senderIndex, nonce, encryptedCookie });
  }
}

/** The sending side, one per peer: stamps MACs on our handshake messages to that peer. */
export class CookieGenerator {
  readonly #mac1Key: Uint8Array;
  readonly #cookieKey: Uint8Array;
  #lastMac1: Uint8Array | undefined;
  #cookie: Uint8Array | undefined;
  #cookieReceivedMs = 0;

  constructor(remotePublicKey: Uint8Array) {
    this.#mac1Key = mac1Key(remotePublicKey);
    this.#cookieKey = cookieKey(remotePublicKey);
  }

  /** Fills MAC1, and MAC2 when we hold a fresh cookie (zeros otherwise). */
  stampMacs(message: Uint8Array, nowMs: number): void {
    const offset1 = mac1Offset(message);
    const mac1 = mac(this.#mac1Key, message.subarray(0, offset1));
    message.set(mac1, offset1);
    this.#lastMac1 = mac1;
    const offset2 = mac2Offset(message);
    if (this.#cookie !== undefined && nowMs - this.#cookieReceivedMs < COOKIE_REFRESH_TIME) {
      message.set(mac(this.#cookie, message.subarray(0, offset2)), offset2);
    } else {
      message.fill(0, offset2);
    }
  }

  /**
   * Takes the cookie from a reply to our latest handshake message. False if
   * it does not decrypt against that message's MAC1 (forged, stale, or a
   * second reply to the same message).
   */
  consumeReply(reply: CookieReply, nowMs: number): boolean {
    if (this.#lastMac1 === undefined) return false;
    const cookie = xaeadOpen(this.#cookieKey, reply.nonce, reply.encryptedCookie, this.#lastMac1);
    if (cookie === null) return false;
    this.#cookie = cookie;
    this.#cookieReceivedMs = nowMs;
    this.#lastMac1 = undefined;
    return true;
  }
}

/**
 * The key of MAC1 on handshake messages to `publicKey`. Anyone who knows
 * the public key can compute it: it only screens out senders who do not.
 */
export function mac1Key(publicKey: Uint8Array): Uint8Array {
  return hash(new TextEncoder().encode(LABEL_MAC1), publicKey);
}

/** Whether the handshake message at `offset` in `bytes` carries a valid MAC1 under `key`. */
export function hasValidMac1(
  key: Uint8Array,
  bytes: Uint8Array,
  offset: number,
  length: number,
): boolean {
  const message = bytes.subarray(offset, offset + length);
  const at = mac1Offset(message);
  return constantTimeEqual(
    mac(key, message.subarray(0, at)),
    message.subarray(at, at + MAC_LENGTH),
  );
}

function cookieKey(publicKey: Uint8Array): Uint8Array {
  return hash(new TextEncoder().encode(LABEL_COOKIE), publicKey);
}

function cookieFor(secret: Uint8Array, source: Endpoint): Uint8Array {
  return mac(secret, endpointBytes(source));
}
