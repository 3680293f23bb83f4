/**
 * The WireGuard whitepaper's constants, under its names (section 5.4 and 6).
 *
 * Every duration is in milliseconds, because every clock this package is
 * given counts milliseconds.
 */

export const CONSTRUCTION = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s';
export const IDENTIFIER = 'WireGuard v1 zx2c4 Jason@zx2c4.com';
export const LABEL_MAC1 = 'mac1----';
export const LABEL_COOKIE = 'cookie--';

export const REKEY_AFTER_MESSAGES = 2n ** 60n;
export const REJECT_AFTER_MESSAGES = 2n ** 64n - 2n ** 13n - 1n;
export const REKEY_AFTER_TIME = 120_000;
export const REJECT_AFTER_TIME = 180_000;
export const REKEY_ATTEMPT_TIME = 90_000;
export const REKEY_TIMEOUT = 5_000;
export const KEEPALIVE_TIMEOUT = 10_000;
export const COOKIE_REFRESH_TIME = 120_000;

/** Upper bound of the random delay added to each handshake retransmission. */
export const REKEY_TIMEOUT_JITTER_MAX = 333;
/** Retransmissions of one handshake attempt before giving up (REKEY_ATTEMPT_TIME / REKEY_TIMEOUT). */
export const MAX_TIMER_HANDSHAKES = REKEY_ATTEMPT_TIME / REKEY_TIMEOUT;
/** Initiations consumed from one peer faster than this are dropped (wireguard-go allows 50 per second). */
export const MIN_INITIATION_INTERVAL = 20;

export const MESSAGE_HANDSHAKE_INITIATION = 1;
export const MESSAGE_HANDSHAKE_RESPONSE = 2;
export const MESSAGE_HANDSHAKE_COOKIE = 3;
export const MESSAGE_TRANSPORT_DATA = 4;

export const MESSAGE_HANDSHAKE_INITIATION_SIZE = 148;
export const MESSAGE_HANDSHAKE_RESPONSE_SIZE = 92;
export const MESSAGE_HANDSHAKE_COOKIE_SIZE = 64;
export const MESSAGE_TRANSPORT_HEADER_SIZE = 16;
export const MESSAGE_TRANSPORT_MIN_SIZE = MESSAGE_TRANSPORT_HEADER_SIZE + 16;
/** The largest UDP payload; transport messages never exceed it. */
export const MESSAGE_MAX_SIZE = 65_535;
/** The largest inner packet that fits a transport message. */
export const MAX_CONTENT_SIZE = MESSAGE_MAX_SIZE - MESSAGE_TRANSPORT_MIN_SIZE;

/** Transport plaintext is zero-padded to a multiple of this. */
export const MESSAGE_PADDING_MULTIPLE = 16;

// The same bindings as the crypto module's, so both can be re-exported side by side.
export { HASH_LENGTH, KEY_LENGTH, MAC_LENGTH } from './crypto/primitives.ts';
export { AEAD_TAG_LENGTH } from './crypto/chacha20poly1305.ts';
export const COOKIE_LENGTH = 16;
export const COOKIE_NONCE_LENGTH = 24;
export const TIMESTAMP_LENGTH = 12;

/** Packets held per peer while a handshake is under way (wireguard-go stages as many). */
export const MAX_STAGED_PACKETS = 128;

/** Handshake messages waiting that put a device under load (wireguard-go: QueueHandshakeSize / 8). */
export const UNDER_LOAD_QUEUE_DEPTH = 128;
/** A loaded handshake queue keeps the device under load this long (wireguard-go's UnderLoadAfterTime). */
export const UNDER_LOAD_AFTER_TIME = 1_000;
/** Under load, handshake messages handled per second per source address, after a burst (wireguard-go's ratelimiter). */
export const HANDSHAKE_RATE_PER_SECOND = 20;
export const HANDSHAKE_RATE_BURST = 5;
/** Source addresses the rate limiter tracks at most; a new source beyond them is refused. */
export const MAX_RATE_LIMITED_SOURCES = 4096;
/** A source's bucket is forgotten after this long without a message (it is full again by then). */
export const RATE_LIMITER_IDLE_TIME = 1_000;
