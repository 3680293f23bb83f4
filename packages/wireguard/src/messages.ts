/**
 * The four WireGuard messages on the wire: classification of a received
 * datagram, field views (subarrays, no copies) and builders.
 *
 * All integers are little-endian. Every message starts with a type byte and
 * three reserved bytes that must be zero, read together as one 32-bit type.
 */

import {
  AEAD_TAG_LENGTH,
  COOKIE_LENGTH,
  COOKIE_NONCE_LENGTH,
  KEY_LENGTH,
  MAC_LENGTH,
  MESSAGE_HANDSHAKE_COOKIE,
  MESSAGE_HANDSHAKE_COOKIE_SIZE,
  MESSAGE_HANDSHAKE_INITIATION,
  MESSAGE_HANDSHAKE_INITIATION_SIZE,
  MESSAGE_HANDSHAKE_RESPONSE,
  MESSAGE_HANDSHAKE_RESPONSE_SIZE,
  MESSAGE_MAX_SIZE,
  MESSAGE_TRANSPORT_DATA,
  MESSAGE_TRANSPORT_HEADER_SIZE,
  MESSAGE_TRANSPORT_MIN_SIZE,
  TIMESTAMP_LENGTH,
} from './constants.ts';

export type MessageClass =
  | 'initiation'
  | 'response'
  | 'cookie-reply'
  | 'transport'
  | 'malformed'
  | 'unknown-type'
  | 'too-large';

/**
 * What a datagram claims to be, after checking its type and size. The type
 * is the whole first little-endian word, as wireguard-go reads it: a known
 * type byte with a non-zero reserved byte is an unknown type.
 */
export function classifyMessage(datagram: Uint8Array): MessageClass {
  if (datagram.length > MESSAGE_MAX_SIZE) return 'too-large';
  if (datagram.length < 4) return 'malformed';
  const type = messageType(datagram, 0);
  const expected = EXACT_SIZES[type];
  if (expected === undefined && type !== MESSAGE_TRANSPORT_DATA) return 'unknown-type';
  if (type === MESSAGE_TRANSPORT_DATA) {
    return datagram.length >= MESSAGE_TRANSPORT_MIN_SIZE ? 'transport' : 'malformed';
  }
  if (datagram.length !== expected) return 'malformed';
  if (type === MESSAGE_HANDSHAKE_INITIATION) return 'initiation';
  if (type === MESSAGE_HANDSHAKE_RESPONSE) return 'response';
  return 'cookie-reply';
}

/** The message type: the first little-endian 32-bit word (type byte and three reserved zero bytes). */
export function messageType(bytes: Uint8Array, offset: number): number {
  return readUint32(bytes, offset);
}

export interface Initiation {
  senderIndex: number;
  ephemeral: Uint8Array;
  encryptedStatic: Uint8Array;
  encryptedTimestamp: Uint8Array;
}

export interface Response {
  senderIndex: number;
  receiverIndex: number;
  ephemeral: Uint8Array;
  encryptedNothing: Uint8Array;
}

export interface CookieReply {
  receiverIndex: number;
  nonce: Uint8Array;
  encryptedCookie: Uint8Array;
}

export const ENCRYPTED_STATIC_LENGTH = KEY_LENGTH + AEAD_TAG_LENGTH;
export const ENCRYPTED_TIMESTAMP_LENGTH = TIMESTAMP_LENGTH + AEAD_TAG_LENGTH;
export const ENCRYPTED_NOTHING_LENGTH = AEAD_TAG_LENGTH;
export const ENCRYPTED_COOKIE_LENGTH = COOKIE_LENGTH + AEAD_TAG_LENGTH;

/** Views into a classified initiation. */
export function readInitiation(message: Uint8Array): Initiation {
  return {
    senderIndex: readUint32(message, 4),
    ephemeral: message.subarray(8, 40),
    encryptedStatic: message.subarray(40, 88),
    encryptedTimestamp: message.subarray(88, 116),
  };
}

/** A complete initiation with zero MACs (see cookie.ts for filling them). */
export function writeInitiation(fields: Initiation): Uint8Array {
  const message = new Uint8Array(MESSAGE_HANDSHAKE_INITIATION_SIZE);
  message[0] = MESSAGE_HANDSHAKE_INITIATION;
  writeUint32(message, 4, fields.senderIndex);
  message.set(checked(fields.ephemeral, KEY_LENGTH, 'ephemeral'), 8);
  message.set(checked(fields.encryptedStatic, ENCRYPTED_STATIC_LENGTH, 'encrypted static'), 40);
  message.set(
    checked(fields.encryptedTimestamp, ENCRYPTED_TIMESTAMP_LENGTH, 'encrypted timestamp'),
    88,
  );
  return message;
}

export function readResponse(message: Uint8Array): Response {
  return {
    senderIndex: readUint32(message, 4),
    receiverIndex: readUint32(message, 8),
    ephemeral: message.subarray(12, 44),
    encryptedNothing: message.subarray(44, 60),
  };
}

export function writeResponse(fields: Response): Uint8Array {
  const message = new Uint8Array(MESSAGE_HANDSHAKE_RESPONSE_SIZE);
  message[0] = MESSAGE_HANDSHAKE_RESPONSE;
  writeUint32(message, 4, fields.senderIndex);
  writeUint32(message, 8, fields.receiverIndex);
  message.set(checked(fields.ephemeral, KEY_LENGTH, 'ephemeral'), 12);
  message.set(checked(fields.encryptedNothing, ENCRYPTED_NOTHING_LENGTH, 'encrypted nothing'), 44);
  return message;
}

export function readCookieReply(message: Uint8Array): CookieReply {
  return {
    receiverIndex: readUint32(message, 4),
    nonce: message.subarray(8, 32),
    encryptedCookie: message.subarray(32, 64),
  };
}

export function writeCookieReply(fields: CookieReply): Uint8Array {
  const message = new Uint8Array(MESSAGE_HANDSHAKE_COOKIE_SIZE);
  message[0] = MESSAGE_HANDSHAKE_COOKIE;
  writeUint32(message, 4, fields.receiverIndex);
  message.set(checked(fields.nonce, COOKIE_NONCE_LENGTH, 'nonce'), 8);
  message.set(checked(fields.encryptedCookie, ENCRYPTED_COOKIE_LENGTH, 'encrypted cookie'), 32);
  return message;
}

/** Offset of MAC1 in a handshake message; MAC2 follows it and ends the message. */
export function mac1Offset(message: Uint8Array): number {
  return message.length - 2 * MAC_LENGTH;
}

export function mac2Offset(message: Uint8Array): number {
  return message.length - MAC_LENGTH;
}

export function transportReceiverIndex(message: Uint8Array): number {
  return readUint32(message, 4);
}

export function transportCounterLow(message: Uint8Array): number {
  return readUint32(message, 8);
}

export function transportCounterHigh(message: Uint8Array): number {
  return readUint32(message, 12);
}

/** Writes the 16-byte transport header at `offset`. */
export function writeTransportHeader(
  target: Uint8Array,
  offset: number,
  receiverIndex: number,
  counterLow: number,
  counterHigh: number,
): void {
  target[offset] = MESSAGE_TRANSPORT_DATA;
  target[offset + 1] = 0;
  target[offset + 2] = 0;
  target[offset + 3] = 0;
  writeUint32(target, offset + 4, receiverIndex);
  writeUint32(target, offset + 8, counterLow);
  writeUint32(target, offset + 12, counterHigh);
}

export const TRANSPORT_PAYLOAD_OFFSET = MESSAGE_TRANSPORT_HEADER_SIZE;

export function readUint32(bytes: Uint8Array, offset: number): number {
  return (
    (bytes[offset]! |
      (bytes[offset + 1]! << 8) |
      (bytes[offset + 2]! << 16) |
      (bytes[offset + 3]! << 24)) >>>
    0
  );
}

function writeUint32(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = value & 0xff;
  bytes[offset + 1] = (value >>> 8) & 0xff;
  bytes[offset + 2] = (value >>> 16) & 0xff;
  bytes[offset + 3] = (value >>> 24) & 0xff;
}

const EXACT_SIZES: Record<number, number | undefined> = {
  [MESSAGE_HANDSHAKE_INITIATION]: MESSAGE_HANDSHAKE_INITIATION_SIZE,
  [MESSAGE_HANDSHAKE_RESPONSE]: MESSAGE_HANDSHAKE_RESPONSE_SIZE,
  [MESSAGE_HANDSHAKE_COOKIE]: MESSAGE_HANDSHAKE_COOKIE_SIZE,
};

function checked(bytes: Uint8Array, length: number, what: string): Uint8Array {
  if (bytes.length !== length) throw new RangeError(`${what} must be ${length} bytes`);
  return bytes;
}
