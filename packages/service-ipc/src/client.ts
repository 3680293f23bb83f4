/**
 * A client of the tunnel service's control socket (for the CLI now, the GUI
 * later): connects, checks the service's Hello, sends typed requests and
 * receives events. Failures come back as ServiceClientError with a message
 * meant for the person at the keyboard.
 *
 * This module is the package's `./client` entry: it must not load koffi
 * (native code the GUI's processes have no use for), so it imports nothing
 * of the server's side.
 */

import { lstatSync, realpathSync, type Stats } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { IPCModule, type IpcClient } from 'node-ipc';
import {
  MAX_CLIENT_MESSAGE_BYTES,
  MAX_SERVICE_MESSAGE_BYTES,
  parseRequestResult,
  parseServiceMessage,
  PROTOCOL_VERSION,
  type ErrorCode,
  type Hello,
  type RequestKind,
  type RequestParams,
  type RequestResult,
  type Response,
  type ServiceEvent,
} from '@gatehouse/protocol';
import { FRAME_ERROR_EVENT, FRAME_EVENT, FrameParser, type FrameError } from './frame-parser.ts';

export type ClientErrorCode =
  | ErrorCode
  | 'permission-denied'
  | 'untrusted'
  | 'unreachable'
  | 'incompatible'
  | 'timeout'
  | 'disconnected'
  | 'bad-response';

export class ServiceClientError extends Error {
  override readonly name = 'ServiceClientError';
  readonly code: ClientErrorCode;

  constructor(code: ClientErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export interface ServiceClientOptions {
  socketPath: string;
  /** How long to wait for the Hello, and for each answer unless a request says otherwise. */
  timeoutMs?: number;
  /** The uid the service runs as: the socket and its directory must be its own. Root unless told. */
  serviceUid?: number;
}

export const DEFAULT_CLIENT_TIMEOUT_MS = 5000;

export class ServiceClient {
  readonly socketPath: string;
  readonly #ipc = new IPCModule();
  readonly #connection: IpcClient;
  readonly #timeoutMs: number;
  readonly #pending = new Map<number, PendingRequest>();
  readonly #eventListeners = new Set<(event: ServiceEvent) => void>();
  #nextId = 1;
  #hello: Hello | undefined;
  #greeted: { resolve: () => void; reject: (error: ServiceClientError) => void } | undefined;
  #lastSocketError: NodeJS.ErrnoException | undefined;
  #closedWith: ServiceClientError | undefined;

  /** Resolves once the service has said Hello with a protocol version this client speaks. */
  static async connect(options: ServiceClientOptions): Promise<ServiceClient> {
    const distrust = distrustOf(options.socketPath, options.serviceUid ?? 0);
    if (distrust !== undefined) throw new ServiceClientError('untrusted', distrust);
    const client = new ServiceClient(options);
    await client.#waitForHello();
    return client;
  }

  private constructor(options: ServiceClientOptions) {
    this.socketPath = options.socketPath;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_CLIENT_TIMEOUT_MS;
    Object.assign(this.#ipc.config, {
      silent: true,
      maxRetries: 0,
      stopRetrying: true,
      parser: new FrameParser({
        maxIncomingBytes: MAX_SERVICE_MESSAGE_BYTES,
        maxOutgoingBytes: MAX_CLIENT_MESSAGE_BYTES,
        maxPendingBytes: 4 * MAX_CLIENT_MESSAGE_BYTES,
        messageTimeoutMs: this.#timeoutMs,
      }),
    });
    this.#ipc.connectTo(CONNECTION_ID, this.socketPath);
    const connection = this.#ipc.of[CONNECTION_ID];
    if (connection === undefined) throw new Error('node-ipc did not create a connection');
    this.#connection = connection;
    connection.on(FRAME_EVENT, (data) => this.#onFrame(data));
    connection.on(FRAME_ERROR_EVENT, (data) =>
      this.#fail(
        new ServiceClientError('bad-response', `the service sent ${(data as FrameError).message}`),
      ),
    );
    connection.on('error', (error: NodeJS.ErrnoException) => {
      this.#lastSocketError = error;
    });
    connection.on('disconnect', () => this.#fail(this.#disconnectError()));
  }

  get hello(): Hello {
    if (this.#hello === undefined) throw new Error('not connected yet');
    return this.#hello;
  }

  request<K extends RequestKind>(
    kind: K,
    params: RequestParams<K>,
    options: { timeoutMs?: number } = {},
  ): Promise<RequestResult<K>> {
    if (this.#closedWith !== undefined) return Promise.reject(this.#closedWith);
    const id = this.#nextId++;
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    return new Promise<RequestResult<K>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new ServiceClientError(
            'timeout',
            `no answer to "${kind}" from the tunnel service within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      this.#pending.set(id, {
        settle: (response) => {
          clearTimeout(timer);
          if (!response.ok) {
            reject(new ServiceClientError(response.error.code, response.error.message));
            return;
          }
          const result = parseRequestResult(kind, response.result);
          if (result.ok) resolve(result.value);
          else
            reject(
              new ServiceClientError(
                'bad-response',
                `the service's "${kind}" answer is invalid: ${result.message}`,
              ),
            );
        },
        fail: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      try {
        this.#connection.emit('request', { id, kind, params });
      } catch (error) {
        this.#pending.delete(id);
        clearTimeout(timer);
        reject(
          new ServiceClientError(
            'bad-request',
            `cannot send "${kind}": ${(error as Error).message}`,
          ),
        );
      }
    });
  }

  /** Returns a function that removes the listener. */
  onEvent(listener: (event: ServiceEvent) => void): () => void {
    this.#eventListeners.add(listener);
    return () => this.#eventListeners.delete(listener);
  }

  close(): void {
    this.#fail(
      new ServiceClientError('disconnected', 'the connection to the tunnel service was closed'),
    );
  }

  #waitForHello(): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#fail(
          new ServiceClientError(
            'timeout',
            `no greeting from the tunnel service on ${this.socketPath} within ${this.#timeoutMs} ms`,
          ),
        );
      }, this.#timeoutMs);
      this.#greeted = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
    });
  }

  #onFrame(data: unknown): void {
    const parsed = parseServiceMessage(data);
    if (!parsed.ok) {
      this.#fail(
        new ServiceClientError(
          'bad-response',
          `the service sent an invalid message: ${parsed.message}`,
        ),
      );
      return;
    }
    const message = parsed.value;
    if (message.type === 'hello') {
      this.#onHello(message.data);
    } else if (message.type === 'response') {
      this.#onResponse(message.data);
    } else if (this.#hello !== undefined) {
      for (const listener of this.#eventListeners) listener(message.data);
    }
  }

  #onHello(hello: Hello): void {
    if (hello.protocolVersion !== PROTOCOL_VERSION) {
      this.#fail(
        new ServiceClientError(
          'incompatible',
          `the tunnel service (${hello.serviceVersion}) speaks control protocol ${hello.protocolVersion}, ` +
            `this client speaks ${PROTOCOL_VERSION}: install matching versions`,
        ),
      );
      return;
    }
    this.#hello = hello;
    this.#greeted?.resolve();
    this.#greeted = undefined;
  }

  #onResponse(response: Response): void {
    if (response.id === null || typeof response.id === 'string') {
      // Not an answer to one of our requests: the service refused the connection or a frame.
      if (!response.ok)
        this.#fail(new ServiceClientError(response.error.code, response.error.message));
      return;
    }
    const pending = this.#pending.get(response.id);
    if (pending === undefined) return;
    this.#pending.delete(response.id);
    pending.settle(response);
  }

  #disconnectError(): ServiceClientError {
    const error = this.#lastSocketError;
    const path = this.socketPath;
    if (error === undefined) {
      return new ServiceClientError(
        'disconnected',
        `the tunnel service closed the connection on ${path}`,
      );
    }
    switch (error.code) {
      case 'ENOENT':
        return new ServiceClientError(
          'not-running',
          `the tunnel service is not running (no socket at ${path})`,
        );
      case 'ECONNREFUSED':
        return new ServiceClientError(
          'not-running',
          `the tunnel service is not running (nothing answers on ${path}; the socket is stale)`,
        );
      case 'EACCES':
      case 'EPERM':
        return new ServiceClientError(
          'permission-denied',
          `permission denied on ${path} (are you root / in the gatehouse group?)`,
        );
      default:
        return new ServiceClientError(
          'unreachable',
          `cannot reach the tunnel service at ${path}: ${error.message}`,
        );
    }
  }

  /** Ends the connection and everything waiting on it with one error; later calls change nothing. */
  #fail(error: ServiceClientError): void {
    if (this.#closedWith !== undefined) return;
    this.#closedWith = error;
    this.#greeted?.reject(error);
    this.#greeted = undefined;
    for (const pending of this.#pending.values()) pending.fail(error);
    this.#pending.clear();
    this.#ipc.disconnect(CONNECTION_ID);
  }
}

/**
 * Why the socket may not be the service's: anyone who can create it, or
 * replace it or any directory on its way, could pose as the service. The
 * socket's own directory must be the service's and closed to others; every
 * directory above it (symbolic links resolved) must belong to root or the
 * service and be closed to others unless sticky (as /tmp), where others
 * cannot rename what they do not own. A missing path is left to connect,
 * which reports that the service is not running.
 */
function distrustOf(socketPath: string, serviceUid: number): string | undefined {
  let directory: string;
  try {
    directory = realpathSync(dirname(socketPath));
  } catch {
    return undefined;
  }
  const checks: Check[] = [
    {
      path: join(directory, basename(socketPath)),
      kind: 'socket',
      owners: [serviceUid],
      foreignWriteBits: 0o002,
      stickyAllowed: false,
    },
    {
      path: directory,
      kind: 'directory',
      owners: [serviceUid],
      foreignWriteBits: 0o022,
      stickyAllowed: false,
    },
  ];
  for (let above = dirname(directory); ; above = dirname(above)) {
    checks.push({
      path: above,
      kind: 'directory',
      owners: [0, serviceUid],
      foreignWriteBits: 0o022,
      stickyAllowed: true,
    });
    if (above === dirname(above)) break;
  }
  for (const check of checks) {
    let stats: Stats;
    try {
      stats = lstatSync(check.path);
    } catch {
      return undefined;
    }
    const refuse = (what: string) =>
      `refusing ${socketPath}: ${check.path} ${what}, so it may not be the tunnel service's`;
    const isKind = check.kind === 'socket' ? stats.isSocket() : stats.isDirectory();
    if (!isKind) return refuse(`is not a ${check.kind}`);
    if (!check.owners.includes(stats.uid)) {
      return refuse(`is owned by uid ${stats.uid}, not by the service (uid ${serviceUid})`);
    }
    const sticky = (stats.mode & 0o1000) !== 0;
    if ((stats.mode & check.foreignWriteBits) !== 0 && !(check.stickyAllowed && sticky)) {
      const mode = (stats.mode & 0o7777).toString(8).padStart(4, '0');
      return refuse(`is writable by others (mode ${mode})`);
    }
  }
  return undefined;
}

interface Check {
  path: string;
  kind: 'socket' | 'directory';
  owners: number[];
  foreignWriteBits: number;
  /** A sticky directory lets others add entries but not rename or remove ours. */
  stickyAllowed: boolean;
}

interface PendingRequest {
  settle(response: Response): void;
  fail(error: ServiceClientError): void;
}

const CONNECTION_ID = 'gatehouse-tunnel-service';
