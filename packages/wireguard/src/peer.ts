/**
 * What the control thread keeps per peer beyond the shared transport
 * memory: configuration, the handshake under way, replay protection for
 * initiations, staged packets and counters.
 */

import { CookieGenerator } from './cookie.ts';
import type { Endpoint } from './endpoint.ts';
import type { InitiatorState } from './handshake.ts';

export const DROP_REASONS = [
  'malformed',
  'unknown-type',
  'too-large',
  'bad-mac1',
  'bad-mac2-under-load',
  'cookie-sent',
  /** Under load, a source address beyond its rate of handshake messages. */
  'source-rate-limited',
  /** Under load, a new source while the rate limiter's table was full. */
  'source-table-full',
  'bad-cookie',
  'unknown-receiver',
  'unknown-peer',
  'handshake-failed',
  'stale-timestamp',
  'handshake-rate-limited',
  'no-free-index',
  'replay',
  'decrypt-failed',
  'invalid-inner-packet',
  'expired-keypair',
  'queue-full',
  'no-endpoint',
  'handshake-timeout',
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

export function emptyDropCounts(): Record<DropReason, number> {
  return Object.fromEntries(DROP_REASONS.map((reason) => [reason, 0])) as Record<
    DropReason,
    number
  >;
}

/** Our initiation in flight, retransmitted until answered or REKEY_ATTEMPT_TIME runs out. */
export interface InitiationInFlight {
  state: InitiatorState;
  keypairSlot: number;
  attemptStartMs: number;
  retransmitAtMs: number;
}

export class PeerState {
  readonly publicKey: Uint8Array;
  readonly name: string;
  readonly slot: number;
  readonly presharedKey: Uint8Array;
  persistentKeepaliveMs: number;
  readonly cookies: CookieGenerator;
  /** The shared endpoint as last read, valid while its sequence stays `endpointSequence`. */
  endpoint: Endpoint | undefined;
  endpointSequence = 0;

  initiation: InitiationInFlight | undefined;
  /** TAI64N of the latest initiation accepted from this peer. */
  lastTimestamp: Uint8Array | undefined;
  lastInitiationConsumedMs: number | undefined;
  /** When keys were last derived; all key material is wiped 3 × REJECT_AFTER_TIME later. */
  lastSessionDerivedMs: number | undefined;
  lastHandshakeMs: number | undefined;
  lastHandshakeWallClockMs: number | undefined;
  /** Added to the "sent but nothing heard back" deadline; drawn anew each time it fires. */
  newHandshakeJitterMs: number;

  staged: Uint8Array[] = [];
  handshakes = 0;
  handshakeTxBytes = 0;
  handshakeRxBytes = 0;
  readonly drops = emptyDropCounts();

  constructor(options: {
    publicKey: Uint8Array;
    name: string;
    slot: number;
    presharedKey: Uint8Array;
    persistentKeepaliveMs: number;
    newHandshakeJitterMs: number;
  }) {
    this.publicKey = options.publicKey;
    this.name = options.name;
    this.slot = options.slot;
    this.presharedKey = options.presharedKey;
    this.persistentKeepaliveMs = options.persistentKeepaliveMs;
    this.newHandshakeJitterMs = options.newHandshakeJitterMs;
    this.cookies = new CookieGenerator(options.publicKey);
  }
}
