/**
 * STUN and TURN share the WireGuard socket: their datagrams are told apart
 * by their first bytes (RFC 7983) before anything is taken for a WireGuard
 * message. WireGuard's types 1–4 have zero in bytes 1–3, so a STUN header
 * (length field in bytes 2–3) over one would claim a 20-byte message.
 */

/** RFC 8489 §6: bytes 4–7 of every STUN message. */
export const STUN_MAGIC_COOKIE = 0x2112a442;
export const STUN_HEADER_BYTES = 20;
/** RFC 8656 §12.4: channel number and length in front of the data. */
export const CHANNEL_DATA_HEADER_BYTES = 4;

/** Whether `length` bytes at `data[offset]` are a STUN message or TURN ChannelData, not WireGuard. */
export function isRelayDatagram(data: Uint8Array, offset: number, length: number): boolean {
  const first = data[offset]! & 0xc0;
  if (first === 0x40) {
    // ChannelData: channel numbers 0x4000–0x7FFF.
    return (
      length >= CHANNEL_DATA_HEADER_BYTES &&
      CHANNEL_DATA_HEADER_BYTES + ((data[offset + 2]! << 8) | data[offset + 3]!) <= length
    );
  }
  return (
    first === 0 &&
    length >= STUN_HEADER_BYTES &&
    STUN_HEADER_BYTES + ((data[offset + 2]! << 8) | data[offset + 3]!) === length &&
    ((data[offset + 4]! << 24) |
      (data[offset + 5]! << 16) |
      (data[offset + 6]! << 8) |
      data[offset + 7]!) >>>
      0 ===
      STUN_MAGIC_COOKIE
  );
}
