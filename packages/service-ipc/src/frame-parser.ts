/**
 * Framing for the control socket, plugged into node-ipc as its parser.
 *
 * The wire format is node-ipc's own (JSON `{type, data}` frames ended by a
 * form feed), so a stock node-ipc client can talk to the service. What
 * differs from node-ipc's parsers: a bad frame never throws (node-ipc would
 * drop the connection without a word), and no frame can choose the event
 * node-ipc dispatches — its own lifecycle events (`connect`, `error`, …)
 * included. Every frame becomes exactly one of two local events.
 */

import type { IpcParser } from 'node-ipc';

/** Dispatched with the decoded JSON value of a frame; still to be validated. */
export const FRAME_EVENT = 'gatehouse.frame';
/** Dispatched with a FrameError for a frame that could not be decoded. */
export const FRAME_ERROR_EVENT = 'gatehouse.frame-error';

/** Thrown by `encode` for a message larger than the receiving side accepts. */
export class FrameTooLargeError extends Error {
  override readonly name = 'FrameTooLargeError';
}

export interface FrameError {
  reason: 'too-large' | 'invalid-json';
  message: string;
}

const DELIMITER = '\f';

export class FrameParser implements IpcParser {
  readonly raw = false;
  readonly encoding = 'utf8';
  readonly profile = 'gatehouse';
  readonly maxPendingBytes: number;
  /** node-ipc drops a connection whose partial frame waits longer than this. */
  readonly messageTimeout: number;
  readonly #maxIncomingBytes: number;
  readonly #maxOutgoingBytes: number;

  constructor(options: {
    maxIncomingBytes: number;
    maxOutgoingBytes: number;
    maxPendingBytes: number;
    messageTimeoutMs: number;
  }) {
    this.#maxIncomingBytes = options.maxIncomingBytes;
    this.#maxOutgoingBytes = options.maxOutgoingBytes;
    this.maxPendingBytes = options.maxPendingBytes;
    this.messageTimeout = options.messageTimeoutMs;
  }

  encode(type: string, data: unknown): string {
    const frame = JSON.stringify({ type, data });
    const bytes = Buffer.byteLength(frame);
    if (bytes > this.#maxOutgoingBytes) {
      throw new FrameTooLargeError(
        `a "${type}" message of ${bytes} bytes exceeds the limit of ${this.#maxOutgoingBytes}`,
      );
    }
    return frame + DELIMITER;
  }

  read(
    buffer: string,
    data: string,
    receive: (message: { type: string; data: unknown }) => void,
  ): string {
    const combined = buffer + data;
    let start = 0;
    for (
      let end = combined.indexOf(DELIMITER);
      end !== -1;
      end = combined.indexOf(DELIMITER, start)
    ) {
      receive(this.#decode(combined.slice(start, end)));
      start = end + DELIMITER.length;
    }
    const remainder = combined.slice(start);
    if (Buffer.byteLength(remainder) > this.#maxIncomingBytes) {
      receive(this.#tooLarge());
      return '';
    }
    return remainder;
  }

  #decode(frame: string): { type: string; data: unknown } {
    if (Buffer.byteLength(frame) > this.#maxIncomingBytes) return this.#tooLarge();
    try {
      return { type: FRAME_EVENT, data: JSON.parse(frame) as unknown };
    } catch {
      const error: FrameError = {
        reason: 'invalid-json',
        message: 'the message is not valid JSON',
      };
      return { type: FRAME_ERROR_EVENT, data: error };
    }
  }

  #tooLarge(): { type: string; data: FrameError } {
    const message = `the message is larger than ${this.#maxIncomingBytes} bytes`;
    return { type: FRAME_ERROR_EVENT, data: { reason: 'too-large', message } };
  }
}
