/**
 * TAI64N timestamps, as carried (encrypted) in handshake initiations so a
 * responder can refuse a replayed initiation.
 */

import { TIMESTAMP_LENGTH } from './constants.ts';

/** 12 bytes: big-endian TAI64 seconds, then big-endian nanoseconds. */
export function tai64n(wallClockMs: number): Uint8Array {
  const unixSeconds = Math.floor(wallClockMs / 1000);
  const taiSeconds = unixSeconds + TAI_MINUS_UTC_IN_1970;
  const nanoseconds = (wallClockMs - unixSeconds * 1000) * 1_000_000;
  const timestamp = new Uint8Array(TIMESTAMP_LENGTH);
  const view = new DataView(timestamp.buffer);
  view.setUint32(0, TAI64_LABEL_BASE_HIGH + Math.floor(taiSeconds / 2 ** 32));
  view.setUint32(4, taiSeconds % 2 ** 32);
  view.setUint32(8, (Math.floor(nanoseconds) & ~NANOSECOND_WHITENING_MASK) >>> 0);
  return timestamp;
}

/** True when `candidate` is strictly later than `previous`. */
export function isLaterTimestamp(candidate: Uint8Array, previous: Uint8Array): boolean {
  for (let i = 0; i < TIMESTAMP_LENGTH; i++) {
    const difference = (candidate[i] ?? 0) - (previous[i] ?? 0);
    if (difference !== 0) return difference > 0;
  }
  return false;
}

/** TAI64 labels count from 2^62 (its upper 32 bits: 2^30). */
const TAI64_LABEL_BASE_HIGH = 2 ** 30;
const TAI_MINUS_UTC_IN_1970 = 10;

/**
 * Sub-16 ms precision is dropped, as wireguard-go does, so an initiation's
 * timestamp does not reveal the sender's clock finely.
 */
const NANOSECOND_WHITENING_MASK = 0xffffff;
