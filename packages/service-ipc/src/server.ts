/**
 * The tunnel service's control socket: a node-ipc server on a Unix socket
 * that greets each authorized peer with Hello, answers requests through a
 * typed handler map, pushes events, and survives any input.
 */

import { chmodSync, chownSync, lstatSync, unlinkSync } from 'node:fs';
import type { Server as NetServer, Socket } from 'node:net';
import { dirname } from 'node:path';
import { IPCModule } from 'node-ipc';
import {
  MAX_CLIENT_MESSAGE_BYTES,
  MAX_SERVICE_MESSAGE_BYTES,
  parseClientMessage,
  parseRequestResult,
  PROTOCOL_VERSION,
  type ErrorCode,
  type Hello,
  type Request,
  type RequestId,
  type RequestKind,
  type RequestParams,
  type RequestResult,
  type Response,
  type ServiceEvent,
} from '@gatehouse/protocol';
import {
  FRAME_ERROR_EVENT,
  FRAME_EVENT,
  FrameParser,
  FrameTooLargeError,
  type FrameError,
} from './frame-parser.ts';
import { silentLogger, type Logger } from './logger.ts';
import {
  readPeerCredentials,
  rootOnly,
  type AuthorizationPolicy,
  type PeerCredentials,
} from './peer-credentials.ts';
import { claimSocketPath, type SocketClaim } from './socket-claim.ts';

export interface RequestContext {
  peer: PeerCredentials;
}

export type RequestHandlers = {
  [K in RequestKind]: (
    params: RequestParams<K>,
    context: RequestContext,
  ) => Promise<RequestResult<K>> | RequestResult<K>;
};

/** Thrown by a handler to answer with a specific error code; anything else answers 'internal'. */
export class RequestError extends Error {
  override readonly name = 'RequestError';
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export interface ServiceServerOptions {
  socketPath: string;
  serviceVersion: string;
  handlers: RequestHandlers;
  /** Who may connect; root only unless told otherwise. */
  authorize?: AuthorizationPolicy;
  /** Group owning the socket (mode 0660); the service's own group unless given. */
  socketGroupId?: number;
  logger?: Logger;
}

export const SOCKET_MODE = 0o660;

export class ServiceServer {
  readonly socketPath: string;
  readonly #ipc: IPCModule;
  readonly #netServer: NetServer;
  readonly #claim: SocketClaim;
  readonly #socketInode: number;
  readonly #handlers: RequestHandlers;
  readonly #authorize: AuthorizationPolicy;
  readonly #hello: Hello;
  readonly #logger: Logger;
  readonly #connections = new Map<Socket, Connection>();
  #stopping: Promise<void> | undefined;

  /**
   * Claims the socket path (refusing if another service answers on it,
   * replacing a stale socket), listens, and restricts the socket's mode and
   * owner before anyone is served.
   */
  static async start(options: ServiceServerOptions): Promise<ServiceServer> {
    const logger = options.logger ?? silentLogger;
    const claim = await claimSocketPath(options.socketPath);
    if (claim.replacedStaleSocket) logger.info(`replaced a stale socket at ${options.socketPath}`);
    try {
      const ipc = createIpc(options.socketPath, logger);
      const netServer = await listen(ipc, options.socketPath);
      chmodSync(options.socketPath, SOCKET_MODE);
      chownSync(
        options.socketPath,
        process.geteuid?.() ?? 0,
        options.socketGroupId ?? process.getegid?.() ?? 0,
      );
      const inode = lstatSync(options.socketPath).ino;
      return new ServiceServer(options, ipc, netServer, claim, inode, logger);
    } catch (error) {
      claim.release();
      throw error;
    }
  }

  private constructor(
    options: ServiceServerOptions,
    ipc: IPCModule,
    netServer: NetServer,
    claim: SocketClaim,
    socketInode: number,
    logger: Logger,
  ) {
    this.socketPath = options.socketPath;
    this.#ipc = ipc;
    this.#netServer = netServer;
    this.#claim = claim;
    this.#socketInode = socketInode;
    this.#handlers = options.handlers;
    this.#authorize = options.authorize ?? rootOnly;
    this.#hello = { protocolVersion: PROTOCOL_VERSION, serviceVersion: options.serviceVersion };
    this.#logger = logger;

    const server = ipc.server;
    // node-ipc calls these from socket 'data' handlers: a throw would crash the service.
    server.on('connect', (socket: Socket) => this.#guard(() => this.#accept(socket)));
    server.on('close', (socket: Socket) => this.#connections.delete(socket));
    server.on(FRAME_EVENT, (data, socket) => this.#guard(() => this.#onFrame(data, socket)));
    server.on(FRAME_ERROR_EVENT, (data, socket) =>
      this.#guard(() => this.#onFrameError(data as FrameError, socket)),
    );
    server.on('error', (error: NodeJS.ErrnoException) => {
      // A client that exits right after its answer resets the connection: routine, not a fault.
      const routine = error.code === 'ECONNRESET' || error.code === 'EPIPE';
      this.#logger[routine ? 'debug' : 'warn'](`control socket: ${error.message}`);
    });
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Pushes an event to every authorized client. */
  broadcast(event: ServiceEvent): void {
    for (const [socket, connection] of this.#connections) {
      if (!connection.closing) this.#send(socket, 'event', event);
    }
  }

  /** Disconnects every client, stops listening and removes the socket file if it is still ours. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#netServer.once('close', () => resolve()));
    this.#ipc.server.stop();
    this.#connections.clear();
    await closed;
    this.#removeSocketFile();
    this.#claim.release();
  }

  #removeSocketFile(): void {
    try {
      if (lstatSync(this.socketPath).ino === this.#socketInode) unlinkSync(this.socketPath);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.#logger.warn(`could not remove ${this.socketPath}: ${(error as Error).message}`);
      }
    }
  }

  #accept(socket: Socket): void {
    const peer = readPeerCredentials(socket);
    if ('error' in peer) {
      this.#refuse(socket, `cannot identify the connecting process: ${peer.error}`);
      return;
    }
    const decision = this.#authorize(peer);
    if (!decision.allowed) {
      this.#logger.warn(
        `refused a control connection from pid ${peer.pid} uid ${peer.uid}: ${decision.reason}`,
      );
      this.#refuse(socket, decision.reason);
      return;
    }
    this.#connections.set(socket, { peer, closing: false });
    this.#logger.debug(`control connection from pid ${peer.pid} uid ${peer.uid}`);
    this.#send(socket, 'hello', this.#hello);
  }

  #refuse(socket: Socket, reason: string): void {
    this.#send(socket, 'response', failure(null, 'unauthorized', reason));
    closeAfterFlush(socket);
  }

  #onFrame(data: unknown, socket: Socket): void {
    const connection = this.#connections.get(socket);
    if (connection === undefined || connection.closing) return;
    const parsed = parseClientMessage(data);
    if (!parsed.ok) {
      this.#send(socket, 'response', failure(parsed.id, parsed.code, parsed.message));
      return;
    }
    void this.#answer(parsed.value.data, connection, socket);
  }

  #onFrameError(error: FrameError, socket: Socket): void {
    const connection = this.#connections.get(socket);
    if (connection === undefined || connection.closing) return;
    if (error.reason === 'too-large') {
      // The rest of an oversized frame cannot be told apart from new frames: hang up.
      this.#send(socket, 'response', failure(null, 'message-too-large', error.message));
      connection.closing = true;
      closeAfterFlush(socket);
      return;
    }
    this.#send(socket, 'response', failure(null, 'bad-request', error.message));
  }

  async #answer(request: Request, connection: Connection, socket: Socket): Promise<void> {
    let response: Response;
    try {
      // The handler map is indexed by the request's own kind; TypeScript cannot follow that.
      const handler = this.#handlers[request.kind] as (
        params: unknown,
        context: RequestContext,
      ) => unknown;
      const result = await handler(request.params, { peer: connection.peer });
      const checked = parseRequestResult(request.kind, result);
      if (checked.ok) {
        response = { id: request.id, ok: true, result: checked.value };
      } else {
        this.#logger.error(
          `the "${request.kind}" handler returned an invalid result: ${checked.message}`,
        );
        response = failure(
          request.id,
          'internal',
          `the service produced an invalid "${request.kind}" result`,
        );
      }
    } catch (error) {
      if (error instanceof RequestError) {
        response = failure(request.id, error.code, error.message);
      } else {
        this.#logger.error(
          `the "${request.kind}" handler failed: ${(error as Error)?.stack ?? String(error)}`,
        );
        response = failure(
          request.id,
          'internal',
          `the "${request.kind}" request failed inside the service`,
        );
      }
    }
    this.#send(socket, 'response', response);
  }

  #send(socket: Socket, type: 'hello' | 'response' | 'event', data: unknown): void {
    if (socket.destroyed || !socket.writable) return;
    try {
      this.#ipc.server.emit(socket, type, data);
    } catch (error) {
      if (!(error instanceof FrameTooLargeError)) throw error;
      this.#logger.error(error.message);
      if (type === 'response') {
        const id = (data as Response).id;
        this.#ipc.server.emit(
          socket,
          type,
          failure(id, 'internal', 'the answer is too large to send'),
        );
      }
    }
  }

  #guard(action: () => void): void {
    try {
      action();
    } catch (error) {
      this.#logger.error(`control socket: ${(error as Error)?.stack ?? String(error)}`);
    }
  }
}

interface Connection {
  peer: PeerCredentials;
  closing: boolean;
}

const CLIENT_MESSAGE_TIMEOUT_MS = 10_000;
const MAX_PENDING_WRITE_BYTES = 8 * MAX_SERVICE_MESSAGE_BYTES;
const MAX_CONNECTIONS = 32;
const CLOSE_GRACE_MS = 1000;

function createIpc(socketPath: string, logger: Logger): IPCModule {
  const ipc = new IPCModule();
  Object.assign(ipc.config, {
    // We claim and clean up the path ourselves: node-ipc would unlink a live socket.
    unlink: false,
    // A secure socket root would make the directory owner-only (0700), locking out a group.
    secureSocketRoot: false,
    socketRoot: `${dirname(socketPath)}/`,
    parser: new FrameParser({
      maxIncomingBytes: MAX_CLIENT_MESSAGE_BYTES,
      maxOutgoingBytes: MAX_SERVICE_MESSAGE_BYTES,
      maxPendingBytes: MAX_PENDING_WRITE_BYTES,
      messageTimeoutMs: CLIENT_MESSAGE_TIMEOUT_MS,
    }),
    maxConnections: MAX_CONNECTIONS,
    silent: false,
    logInColor: false,
    logPayloads: false,
    logger: (message: string) => logger.debug(`node-ipc: ${message}`),
  });
  return ipc;
}

function listen(ipc: IPCModule, socketPath: string): Promise<NetServer> {
  return new Promise((resolve, reject) => {
    let listening = false;
    ipc.serve(socketPath, () => {
      listening = true;
      const netServer = ipc.server.server;
      if (netServer === false) reject(new Error('node-ipc started without a server'));
      else resolve(netServer);
    });
    ipc.server.on('error', (error: Error) => {
      if (!listening) reject(new Error(`cannot listen on ${socketPath}: ${error.message}`));
    });
    ipc.server.start();
  });
}

function failure(id: RequestId | null, code: ErrorCode, message: string): Response {
  return { id, ok: false, error: { code, message } };
}

function closeAfterFlush(socket: Socket): void {
  socket.end();
  setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
}
