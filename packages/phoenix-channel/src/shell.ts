/**
 * The IO shell around PhoenixChannel: one WebSocket (the `ws` package) to a URL, the token in an
 * `X-Authorization: Bearer` header, TLS verified against the system store (plus a CA file), and a timer that calls
 * handleTimeout when the machine asks. Everything the machine decides comes out of its effects;
 * the shell only carries them out and reports what the socket does.
 */

import type { ClientRequest, IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';
import { MAX_PORTAL_FRAME_CHARS } from '@gatehouse/protocol';
import WebSocket from 'ws';
import {
  type ChannelEvent,
  type ChannelState,
  type ChannelStats,
  PhoenixChannel,
  type PhoenixChannelOptions,
} from './channel.ts';
import { portalTrustedCas } from './trust.ts';

/** The most of an error response's body the shell reads (problem details are small). */
const MAX_ERROR_BODY_BYTES = 16 * 1024;

export interface PhoenixSocketOptions extends PhoenixChannelOptions {
  /** ws:// or wss:// URL of the channel's WebSocket (e.g. https://portal/client/websocket as wss). */
  url: string;
  /** The bearer token; sent as `X-Authorization: Bearer <token>` and never logged. */
  token?: string;
  /** CA certificates (PEM) trusted for a wss:// server in addition to the system store. */
  ca?: string | Buffer | (string | Buffer)[];
  /**
   * A PEM file of CA certificates trusted in addition to the system store (`--ca-file`, or
   * `GATEHOUSE_CA_FILE` through resolvePortalCa). Read by the constructor: a missing file or
   * one with no PEM certificate throws a CaFileError saying so.
   */
  caFile?: string;
  userAgent?: string;
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** Every event of the channel (joined, message, reply, disconnected, signed-out…). */
  onEvent: (event: ChannelEvent) => void;
  /** A monotonic clock in ms; performance.now unless given. */
  now?: () => number;
}

/**
 * A Phoenix channel over a real WebSocket. start() connects; the channel reconnects on its own
 * until close() or a refused token (the `signed-out` event).
 */
export class PhoenixSocket {
  readonly channel: PhoenixChannel;
  readonly #options: PhoenixSocketOptions;
  readonly #now: () => number;
  #socket: WebSocket | undefined;
  /** Sockets the machine dropped that have not finished closing. */
  readonly #closing = new Set<WebSocket>();
  #timer: NodeJS.Timeout | undefined;
  #timerAt: number | undefined;
  #closedResolve: (() => void) | undefined;
  readonly #closed: Promise<void>;
  #driving = false;
  /** What a wss:// server is verified against: the system roots plus ca and caFile. */
  readonly #ca: (string | Buffer)[];

  constructor(options: PhoenixSocketOptions) {
    this.#options = options;
    this.#ca = portalTrustedCas({
      ...(options.caFile === undefined ? {} : { caFile: options.caFile }),
      ...(options.ca === undefined ? {} : { extra: options.ca }),
    });
    this.#now = options.now ?? (() => performance.now());
    this.channel = new PhoenixChannel(options);
    this.#closed = new Promise((resolve) => {
      this.#closedResolve = resolve;
    });
  }

  get state(): ChannelState {
    return this.channel.state;
  }

  get stats(): Readonly<ChannelStats> {
    return this.channel.stats;
  }

  /** Settles when the channel has ended (close() or signed-out) and its socket is gone. */
  get ended(): Promise<void> {
    return this.#closed;
  }

  start(): void {
    this.channel.connect(this.#now());
    this.#drive();
  }

  /** Pushes an event; the ref its reply will carry, or undefined when it was not taken. */
  push(event: string, payload: unknown): string | undefined {
    const ref = this.channel.push(event, payload);
    this.#drive();
    return ref;
  }

  /** Leaves the topic and closes the socket; resolves once it is closed. */
  close(): Promise<void> {
    this.channel.close(this.#now());
    this.#drive();
    return this.#closed;
  }

  #drive(): void {
    if (this.#driving) return; // an effect's callback fed the machine; the loop below picks it up
    this.#driving = true;
    try {
      for (
        let effect = this.channel.pollEffect();
        effect !== undefined;
        effect = this.channel.pollEffect()
      ) {
        switch (effect.type) {
          case 'connect':
            this.#open();
            break;
          case 'send':
            if (this.#socket?.readyState === WebSocket.OPEN) this.#socket.send(effect.text);
            break;
          case 'close':
            this.#drop(effect.code, effect.reason);
            break;
          case 'event':
            try {
              this.#options.onEvent(effect.event);
            } catch {
              // The application's handler failing must not stop the channel.
            }
            break;
        }
      }
    } finally {
      this.#driving = false;
    }
    this.#schedule();
    const state = this.channel.state;
    if (
      (state === 'closed' || state === 'signed-out') &&
      this.#socket === undefined &&
      this.#closing.size === 0
    ) {
      if (this.#timer !== undefined) clearTimeout(this.#timer);
      this.#closedResolve?.();
    }
  }

  #schedule(): void {
    const at = this.channel.pollTimeout();
    if (at === this.#timerAt) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = at;
    if (at === undefined) return;
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        this.#timerAt = undefined;
        this.channel.handleTimeout(this.#now());
        this.#drive();
      },
      Math.max(0, Math.ceil(at - this.#now())),
    );
  }

  #open(): void {
    const headers: Record<string, string> = { ...this.#options.headers };
    if (this.#options.token !== undefined)
      headers['X-Authorization'] = `Bearer ${this.#options.token}`;
    if (this.#options.userAgent !== undefined) headers['User-Agent'] = this.#options.userAgent;
    const socket = new WebSocket(this.#options.url, {
      headers,
      // Given explicitly, so the system store is used rather than Node's bundled roots alone.
      ca: this.#ca,
      maxPayload: MAX_PORTAL_FRAME_CHARS,
      perMessageDeflate: false,
    });
    this.#socket = socket;
    let opened = false;
    let failed = false;
    const current = (): boolean => this.#socket === socket;
    socket.on('open', () => {
      if (!current()) return;
      opened = true;
      this.channel.handleConnected(this.#now());
      this.#drive();
    });
    socket.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      if (!current()) return;
      if (isBinary) this.channel.handleBinaryFrame(this.#now());
      else this.channel.handleFrame(rawText(data), this.#now());
      this.#drive();
    });
    socket.on('unexpected-response', (request: ClientRequest, response: IncomingMessage) => {
      failed = true;
      readBounded(response, MAX_ERROR_BODY_BYTES, (body) => {
        request.destroy();
        if (!current()) return;
        this.#socket = undefined;
        this.channel.handleConnectFailed(this.#now(), {
          status: response.statusCode,
          body,
          retryAfterMs: retryAfterMs(response.headers['retry-after']),
          reason: `the server answered the upgrade with HTTP ${response.statusCode ?? '?'}`,
        });
        this.#drive();
      });
    });
    socket.on('error', (error: Error) => {
      if (!current() || failed) return;
      failed = true;
      this.#socket = undefined;
      socket.terminate();
      if (opened)
        this.channel.handleDisconnected(this.#now(), `the WebSocket failed: ${error.message}`);
      else
        this.channel.handleConnectFailed(this.#now(), {
          reason: `could not connect: ${error.message}`,
        });
      this.#drive();
    });
    socket.on('close', (code: number, reason: Buffer) => {
      if (!current()) {
        if (this.#closing.delete(socket)) this.#drive(); // close() may be waiting for it
        return;
      }
      this.#socket = undefined;
      const why = reason.length > 0 ? `: ${reason.toString('utf8').slice(0, 120)}` : '';
      this.channel.handleDisconnected(this.#now(), `the WebSocket closed (${code}${why})`);
      this.#drive();
    });
  }

  /** Closes the current socket on the machine's word; its later events are ignored. */
  #drop(code: number, reason: string): void {
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket === undefined || socket.readyState === WebSocket.CLOSED) return;
    this.#closing.add(socket);
    if (socket.readyState === WebSocket.OPEN) socket.close(code, reason);
    else socket.terminate();
    // Give a clean close a moment, then make sure the socket is gone.
    setTimeout(() => {
      if (socket.readyState !== WebSocket.CLOSED) socket.terminate();
      if (this.#closing.delete(socket)) this.#drive();
    }, 1_000).unref();
  }
}

function rawText(data: WebSocket.RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString('utf8');
  return data.toString('utf8');
}

function readBounded(response: IncomingMessage, limit: number, done: (body: string) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let finished = false;
  const finish = (): void => {
    if (finished) return;
    finished = true;
    done(Buffer.concat(chunks).toString('utf8'));
  };
  response.on('data', (chunk: Buffer) => {
    if (size >= limit) return;
    chunks.push(chunk.subarray(0, limit - size));
    size += chunk.length;
    if (size >= limit) finish();
  });
  response.on('end', finish);
  response.on('error', finish);
  response.on('close', finish);
}

/** Retry-After in seconds (the date form is not used by the portal), as ms; undefined otherwise. */
export function retryAfterMs(header: string | string[] | undefined): number | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || !/^\d{1,6}$/.test(value.trim())) return undefined;
  return Math.min(Number(value.trim()), 3_600) * 1_000;
}
