/**
 * Problem details for HTTP APIs (RFC 9457): every 4xx/5xx the portal sends to a program (not a
 * person's browser, which gets an HTML page) is `application/problem+json` with
 * `type` "about:blank", `title` the status's reason phrase, `status`, `detail` (a sentence for
 * people), and the extension member `code` (a stable snake_case word for programs, e.g.
 * `invalid_token`).
 *
 * `sendProblem` writes to a ServerResponse; `writeProblemToSocket` writes a whole HTTP/1.1
 * response to a raw socket, which is what a WebSocket upgrade handler has.
 */
import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export interface Problem {
  type: string;
  title: string;
  status: number;
  code: string;
  detail: string;
}

/** The problem object for `status`/`code`/`detail`. */
export function problem(status: number, code: string, detail: string): Problem {
  return { type: 'about:blank', title: STATUS_CODES[status] ?? 'Error', status, code, detail };
}

/** The JSON body for `status`/`code`/`detail`. */
export function problemBody(status: number, code: string, detail: string): string {
  return JSON.stringify(problem(status, code, detail));
}

/** Headers every problem response carries, plus `extraHeaders` (Retry-After, Allow, WWW-Authenticate…). */
function problemHeaders(
  body: string,
  extraHeaders: Readonly<Record<string, string>>,
): Record<string, string> {
  return {
    'Content-Type': PROBLEM_CONTENT_TYPE,
    'Content-Length': String(Buffer.byteLength(body)),
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    ...extraHeaders,
  };
}

/**
 * Sends a problem-details response and ends `res`. If headers were already sent, only ends it
 * (a response cannot change its status half way).
 */
export function sendProblem(
  res: ServerResponse,
  status: number,
  code: string,
  detail: string,
  extraHeaders: Readonly<Record<string, string>> = {},
): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const body = problemBody(status, code, detail);
  res.writeHead(status, problemHeaders(body, extraHeaders));
  res.end(body);
}

/**
 * Writes a problem-details HTTP/1.1 response to `socket` (e.g. refusing a WebSocket upgrade with
 * 401 `invalid_token`) and closes it once written. Header values must not hold CR or LF.
 */
export function writeProblemToSocket(
  socket: Duplex,
  status: number,
  code: string,
  detail: string,
  extraHeaders: Readonly<Record<string, string>> = {},
): void {
  if (socket.destroyed) return;
  const body = problemBody(status, code, detail);
  const headers = { ...problemHeaders(body, extraHeaders), Connection: 'close' };
  const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`];
  for (const [name, value] of Object.entries(headers)) {
    if (/[\r\n]/.test(name) || /[\r\n]/.test(value)) continue;
    lines.push(`${name}: ${value}`);
  }
  socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
}
