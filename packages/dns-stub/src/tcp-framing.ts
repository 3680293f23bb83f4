/**
 * DNS over TCP framing (RFC 1035 §4.2.2, RFC 7766): every message carries a
 * two-byte big-endian length prefix, and a read may hold part of a message
 * or several of them.
 */

export const MAX_DNS_MESSAGE_LENGTH = 0xffff;

export function frameTcpMessage(message: Uint8Array): Buffer {
  if (message.length > MAX_DNS_MESSAGE_LENGTH)
    throw new Error(`DNS message too long for TCP: ${message.length} bytes`);
  const framed = Buffer.allocUnsafe(2 + message.length);
  framed.writeUInt16BE(message.length, 0);
  framed.set(message, 2);
  return framed;
}

/** Collects reads from one TCP stream and yields each complete message once. */
export class TcpMessageReader {
  #pending: Buffer = Buffer.alloc(0);

  /** The messages completed by `chunk`, in order; an incomplete tail waits for the next chunk. */
  push(chunk: Uint8Array): Buffer[] {
    this.#pending =
      this.#pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#pending, chunk]);
    const messages: Buffer[] = [];
    while (this.#pending.length >= 2) {
      const length = this.#pending.readUInt16BE(0);
      if (this.#pending.length < 2 + length) break;
      messages.push(Buffer.from(this.#pending.subarray(2, 2 + length)));
      this.#pending = this.#pending.subarray(2 + length);
    }
    return messages;
  }

  /** Bytes of an unfinished message (a stream that ends here was cut short). */
  get bufferedBytes(): number {
    return this.#pending.length;
  }
}
