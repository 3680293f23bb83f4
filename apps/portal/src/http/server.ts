/**
 * The portal's HTTP(S) server: HTTPS when given a certificate and key (`--tls-cert`/`--tls-key`,
 * PEM files), plain HTTP otherwise. It sets the limits the request handler relies on — request
 * line and headers at most `maxHeaderSize` bytes (larger → 431), headers within 10 s, a whole
 * request within 30 s — and answers requests Node's parser refuses (malformed, oversized
 * headers) with a problem-details body, counting each.
 *
 * The server's 'upgrade' event (the WebSocket endpoints) is the caller's.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import type { Logger } from '@gatehouse/logging';
import { problemBody, PROBLEM_CONTENT_TYPE } from './problem.ts';

export const DEFAULT_MAX_HEADER_SIZE = 16 * 1024;

export interface TlsMaterial {
  cert: string | Buffer;
  key: string | Buffer;
}

export interface TlsFileOptions {
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
}

/**
 * The certificate and key named by `--tls-cert`/`--tls-key`, undefined when neither is given.
 * Throws an Error saying what is wrong when only one is given or a file cannot be read.
 */
export function loadTlsFiles(options: TlsFileOptions): TlsMaterial | undefined {
  const { tlsCert, tlsKey } = options;
  if (tlsCert === undefined && tlsKey === undefined) return undefined;
  if (tlsCert === undefined || tlsKey === undefined) {
    throw new Error('--tls-cert and --tls-key go together: give both or neither');
  }
  const read = (flag: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (error) {
      throw new Error(`${flag} ${path}: ${(error as Error).message}`, { cause: error });
    }
  };
  const cert = read('--tls-cert', tlsCert);
  const key = read('--tls-key', tlsKey);
  if (!cert.includes('-----BEGIN CERTIFICATE-----')) {
    throw new Error(`--tls-cert ${tlsCert}: no PEM certificate in it`);
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key.toString('latin1'))) {
    throw new Error(`--tls-key ${tlsKey}: no PEM private key in it`);
  }
  return { cert, key };
}

export interface PortalServerOptions {
  /** HTTPS with this certificate and key; plain HTTP when undefined. */
  tls?: TlsMaterial | undefined;
  /** Request line plus headers, bytes (Node's maxHeaderSize); default 16 KiB. */
  maxHeaderSize?: number;
  logger?: Logger;
}

export interface PortalServer {
  server: http.Server | https.Server;
  tls: boolean;
  /** Requests Node's parser refused, by status sent (400, 408, 413, 431…). */
  clientErrors(): Readonly<Record<string, number>>;
}

/** Status for a parser error code (llhttp's HPE_* names, node's ERR_HTTP_*). */
function statusForClientError(code: string | undefined): number {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return 431;
    case 'ERR_HTTP_REQUEST_TIMEOUT':
    case 'ERR_HTTP_HEADERS_TIMEOUT':
      return 408;
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return 413;
    default:
      return 400;
  }
}

function clientErrorCode(status: number): string {
  if (status === 431) return 'headers_too_large';
  if (status === 408) return 'request_timeout';
  if (status === 413) return 'payload_too_large';
  return 'bad_request';
}

/**
 * A server (not listening yet) running `listener` for requests. TLS handshake failures are
 * counted under "tls_handshake" and cost nothing else.
 */
export function createPortalServer(
  options: PortalServerOptions,
  listener: http.RequestListener,
): PortalServer {
  const maxHeaderSize = options.maxHeaderSize ?? DEFAULT_MAX_HEADER_SIZE;
  const base = { maxHeaderSize, headersTimeout: 10_000, requestTimeout: 30_000 };
  const server =
    options.tls === undefined
      ? http.createServer(base, listener)
      : https.createServer(
          { ...base, cert: options.tls.cert, key: options.tls.key, minVersion: 'TLSv1.2' },
          listener,
        );
  const counts: Record<string, number> = {};
  const count = (name: string): void => {
    counts[name] = (counts[name] ?? 0) + 1;
  };
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    const status = statusForClientError(error.code);
    count(String(status));
    options.logger?.debug(
      `http: refused a request the parser could not take (${error.code ?? error.message}) with ${status}`,
    );
    const pending = (socket as { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
    if (!socket.writable || pending?.headersSent === true) {
      // A response is under way on this socket (or it is gone): nothing sensible to add.
      socket.destroy();
      return;
    }
    const body = problemBody(status, clientErrorCode(status), describe(status));
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}\r\n` +
        `Content-Type: ${PROBLEM_CONTENT_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n${body}`,
    );
  });
  if (options.tls !== undefined) {
    server.on('tlsClientError', () => count('tls_handshake'));
  }
  return { server, tls: options.tls !== undefined, clientErrors: () => ({ ...counts }) };
}

function describe(status: number): string {
  switch (status) {
    case 431:
      return 'The request line and headers are larger than this server accepts.';
    case 408:
      return 'The request did not arrive in time.';
    case 413:
      return 'The request is larger than this server accepts.';
    default:
      return 'The request is not valid HTTP/1.1.';
  }
}
