/**
 * The tunnel service's control socket: a node-ipc server on a Unix socket
 * that greets each authorized peer with Hello, answers requests through a
 * typed handler map, pushes events, and survives any input.
 */

import { lstatSync, unlinkSync } from 'node:fs';
import type { Server as NetServer, Socket } from 'node:net';
import { dirname } from 'node:path';
import { IPCModule } from 'node-ipc';
import { silentLogger, type Logger } from '@gatehouse/logging';
import {
  MAX_CLIENT_MESSAGE_BYTES,
  MAX_SERVICE_MESSAGE_BYTES,
  parseClientMessage,
  parseRequestResult,
  PROTOCOL_VERSION,
  type ControlSocketCounters,
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

export interface ControlSocketLimits {
  /** Connections at once in all; beyond it the kernel-accepted connection is dropped (and counted). */
  maxConnections: number;
  /** A connection that has sent no frame this long after connecting is closed. */
  firstFrameTimeoutMs: number;
  /** A client with more than this waiting to be sent to it has stopped reading: it is closed. */
  maxSendBacklogBytes: number;
  /**
   * Connections one uid may hold at once — root's too, so that a runaway
   * script cannot take all of maxConnections from the GUI.
   */
  maxConnectionsPerUid: number;
}

export const CONTROL_SOCKET_LIMITS: ControlSocketLimits = {
  maxConnections: 32,
  firstFrameTimeoutMs: 5000,
  // One full-size message waiting is enough to call a client stalled; it costs at most two.
  maxSendBacklogBytes: MAX_SERVICE_MESSAGE_BYTES,
  maxConnectionsPerUid: 8,
};

export interface ServiceServerOptions {
  socketPath: string;
  serviceVersion: string;
  handlers: RequestHandlers;
  /** Who may connect; root only unless told otherwise. */
  authorize?: AuthorizationPolicy;
  /** CONTROL_SOCKET_LIMITS unless told otherwise. */
  limits?: Partial<ControlSocketLimits>;
  logger?: Logger;
}

/**
 * The socket file's mode, fixed at bind by the umask (0117): a mode or owner
 * changed afterwards by path could land on whatever the path names by then,
 * and fchmod/fchown on a socket's descriptor leave the file unchanged on
 * Linux. Its group is the directory's when that is setgid, else the service's.
 */
export const SOCKET_MODE = 0o660;

export class ServiceServer {
  readonly socketPath: string;
  readonly #ipc: IPCModule;
  readonly #netServer: NetServer;
  readonly #claim: SocketClaim;
  readonly #socketInode: number;
  readonly #handlers: RequestHandlers;
  readonly #authorize: AuthorizationPolicy;
  readonly #limits: ControlSocketLimits;
  readonly #hello: Hello;
  readonly #logger: Logger;
  readonly #connections = new Map<Socket, Connection>();
  readonly #counters: ControlSocketCounters = {
    refusedConnections: 0,
    idleClosed: 0,
    slowClosed: 0,
    badRequests: 0,
    refusedRequests: 0,
    handlerErrors: 0,
    internalErrors: 0,
  };
  #stopping: Promise<void> | undefined;

  /**
   * Claims the socket path in a checked directory (refusing if another
   * service answers on it, replacing a stale socket) and listens on a socket
   * born with its final mode, before anyone can connect.
   */
  static async start(options: ServiceServerOptions): Promise<ServiceServer> {
    const logger = options.logger ?? silentLogger;
    const claim = await claimSocketPath(options.socketPath);
    if (claim.replacedStaleSocket) logger.info(`replaced a stale socket at ${options.socketPath}`);
    try {
      const limits = { ...CONTROL_SOCKET_LIMITS, ...options.limits };
      const ipc = createIpc(claim.pathInDirectory, limits, logger);
      const netServer = await listen(ipc, claim.pathInDirectory, options.socketPath);
      const inode = lstatSync(claim.pathInDirectory).ino;
      return new ServiceServer(options, limits, ipc, netServer, claim, inode, logger);
    } catch (error) {
      claim.release();
      throw error;
    }
  }

  private constructor(
    options: ServiceServerOptions,
    limits: ControlSocketLimits,
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
    this.#limits = limits;
    this.#hello = { protocolVersion: PROTOCOL_VERSION, serviceVersion: options.serviceVersion };
    this.#logger = logger;

    const server = ipc.server;
    // node-ipc calls these from socket 'data' handlers: a throw would crash the service.
    server.on('connect', (socket: Socket) =>
      this.#guard(
        () => this.#accept(socket),
        () => socket.destroy(),
      ),
    );
    server.on('close', (socket: Socket) => this.#guard(() => this.#forget(socket)));
    server.on(FRAME_EVENT, (data, socket) => this.#guard(() => this.#onFrame(data, socket)));
    server.on(FRAME_ERROR_EVENT, (data, socket) =>
      this.#guard(() => this.#onFrameError(data as FrameError, socket)),
    );
    server.on('error', (error: NodeJS.ErrnoException) => this.#guard(() => this.#onError(error)));
    netServer.on('drop', () =>
      this.#guard(() => {
        this.#counters.refusedConnections++;
        this.#logger.warn(
          `refused a control connection: the service already has ${this.#limits.maxConnections} (its limit)`,
        );
      }),
    );
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  /** What the socket refused, closed and caught so far (a copy). */
  get counters(): ControlSocketCounters {
    return { ...this.#counters };
  }

  /**
   * Pushes an event to every authorized client. `build` runs here so that
   * an event that cannot be built or sent costs that event, never its caller.
   */
  broadcast(build: () => ServiceEvent): void {
    let event: ServiceEvent;
    try {
      event = build();
    } catch (error) {
      this.#internalError('building an event failed', error);
      return;
    }
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
    for (const connection of this.#connections.values()) clearTimeout(connection.firstFrameTimer);
    this.#connections.clear();
    await closed;
    this.#removeSocketFile();
    this.#claim.release();
  }

  #removeSocketFile(): void {
    const path = this.#claim.pathInDirectory;
    try {
      if (lstatSync(path).ino === this.#socketInode) unlinkSync(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.#logger.warn(`could not remove ${this.socketPath}: ${(error as Error).message}`);
      }
    }
  }

  #accept(socket: Socket): void {
    const peer = readPeerCredentials(socket);
    if ('error' in peer) {
      this.#refuse(socket, 'unauthorized', `cannot identify the connecting process: ${peer.error}`);
      return;
    }
    const decision = this.#authorize(peer);
    if (!decision.allowed) {
      this.#refuse(socket, 'unauthorized', decision.reason, peer);
      return;
    }
    const held = [...this.#connections.values()].filter((c) => c.peer.uid === peer.uid).length;
    if (held >= this.#limits.maxConnectionsPerUid) {
      const reason = `uid ${peer.uid} already has ${held} control connections (the limit)`;
      this.#refuse(socket, 'too-many-connections', reason, peer);
      return;
    }
    const firstFrameTimer = setTimeout(
      () => this.#guard(() => this.#closeIdle(socket)),
      this.#limits.firstFrameTimeoutMs,
    );
    firstFrameTimer.unref();
    this.#connections.set(socket, { peer, closing: false, firstFrameTimer });
    this.#logger.debug(`control connection from pid ${peer.pid} uid ${peer.uid}`);
    this.#send(socket, 'hello', this.#hello);
  }

  #refuse(socket: Socket, code: ErrorCode, reason: string, peer?: PeerCredentials): void {
    this.#counters.refusedConnections++;
    const who = peer === undefined ? '' : ` from pid ${peer.pid} uid ${peer.uid}`;
    this.#logger.warn(`refused a control connection${who}: ${reason}`);
    this.#send(socket, 'response', failure(null, code, reason));
    closeAfterFlush(socket);
  }

  #closeIdle(socket: Socket): void {
    const connection = this.#connections.get(socket);
    if (connection === undefined || connection.closing) return;
    this.#counters.idleClosed++;
    this.#logger.warn(
      `closed a control connection from pid ${connection.peer.pid} uid ${connection.peer.uid}: ` +
        `no request within ${this.#limits.firstFrameTimeoutMs} ms of connecting`,
    );
    this.#close(connection);
    closeAfterFlush(socket);
  }

  #closeSlow(socket: Socket, connection: Connection): void {
    this.#counters.slowClosed++;
    this.#logger.warn(
      `closed a control connection from pid ${connection.peer.pid} uid ${connection.peer.uid}: ` +
        `it stopped reading (${socket.writableLength} bytes waiting to be sent)`,
    );
    this.#close(connection);
    socket.destroy();
  }

  #close(connection: Connection): void {
    connection.closing = true;
    clearTimeout(connection.firstFrameTimer);
  }

  #forget(socket: Socket): void {
    const connection = this.#connections.get(socket);
    if (connection !== undefined) clearTimeout(connection.firstFrameTimer);
    this.#connections.delete(socket);
  }

  /** The frame-level errors node-ipc reports without the socket: counted by their code. */
  #onError(error: NodeJS.ErrnoException): void {
    if (error.code === 'ERR_IPC_MESSAGE_TIMEOUT') this.#counters.idleClosed++;
    else if (error.code === 'ERR_IPC_BACKPRESSURE') this.#counters.slowClosed++;
    // A client that exits right after its answer resets the connection: routine, not a fault.
    const routine = error.code === 'ECONNRESET' || error.code === 'EPIPE';
    this.#logger[routine ? 'debug' : 'warn'](`control socket: ${error.message}`);
  }

  /** The connection's first frame of any kind ends its wait for one. */
  #framed(socket: Socket): Connection | undefined {
    const connection = this.#connections.get(socket);
    if (connection === undefined || connection.closing) return undefined;
    clearTimeout(connection.firstFrameTimer);
    return connection;
  }

  #onFrame(data: unknown, socket: Socket): void {
    const connection = this.#framed(socket);
    if (connection === undefined) return;
    const parsed = parseClientMessage(data);
    if (!parsed.ok) {
      this.#counters.badRequests++;
      this.#send(socket, 'response', failure(parsed.id, parsed.code, parsed.message));
      return;
    }
    void this.#answer(parsed.value.data, connection, socket).catch((error: unknown) =>
      this.#internalError(`answering "${parsed.value.data.kind}" failed`, error),
    );
  }

  #onFrameError(error: FrameError, socket: Socket): void {
    const connection = this.#framed(socket);
    if (connection === undefined) return;
    this.#counters.badRequests++;
    if (error.reason === 'too-large') {
      // The rest of an oversized frame cannot be told apart from new frames: hang up.
      this.#send(socket, 'response', failure(null, 'message-too-large', error.message));
      this.#close(connection);
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
        this.#counters.handlerErrors++;
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
        if (error.code === 'bad-request') this.#counters.badRequests++;
        else this.#counters.refusedRequests++;
        if (error.code === 'forbidden') {
          const { pid, uid } = connection.peer;
          this.#logger.warn(
            `refused a "${request.kind}" request from pid ${pid} uid ${uid}: ${error.message}`,
          );
        }
        response = failure(request.id, error.code, error.message);
      } else {
        this.#counters.handlerErrors++;
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
    const connection = this.#connections.get(socket);
    if (connection !== undefined && socket.writableLength > this.#limits.maxSendBacklogBytes) {
      this.#closeSlow(socket, connection);
      return;
    }
    try {
      this.#ipc.server.emit(socket, type, data);
    } catch (error) {
      this.#internalError(`sending a "${type}" message failed`, error);
      if (type === 'response') {
        const id = (data as Response).id;
        const reason =
          error instanceof FrameTooLargeError
            ? 'the answer is too large to send'
            : 'the answer could not be sent';
        this.#guard(() => this.#ipc.server.emit(socket, type, failure(id, 'internal', reason)));
      }
    }
  }

  /** Runs a callback node-ipc or a timer calls: a throw is logged and counted, then `recover` runs. */
  #guard(action: () => void, recover?: () => void): void {
    try {
      action();
    } catch (error) {
      this.#internalError('control socket', error);
      recover?.();
    }
  }

  #internalError(what: string, error: unknown): void {
    this.#counters.internalErrors++;
    this.#logger.error(`${what}: ${(error as Error)?.stack ?? String(error)}`);
  }
}

interface Connection {
  peer: PeerCredentials;
  closing: boolean;
  /** Until the connection's first frame: then it is a client, even one that only listens for events. */
  firstFrameTimer: NodeJS.Timeout;
}

const CLIENT_MESSAGE_TIMEOUT_MS = 10_000;
const CLOSE_GRACE_MS = 1000;
/** The socket is born 0660: group and owner may connect, others may not. */
const SOCKET_UMASK = 0o777 & ~SOCKET_MODE;

function createIpc(bindPath: string, limits: ControlSocketLimits, logger: Logger): IPCModule {
  const ipc = new IPCModule();
  Object.assign(ipc.config, {
    // We claim and clean up the path ourselves: node-ipc would unlink a live socket.
    unlink: false,
    // A secure socket root would make the directory owner-only (0700), locking out a group.
    secureSocketRoot: false,
    socketRoot: `${dirname(bindPath)}/`,
    parser: new FrameParser({
      maxIncomingBytes: MAX_CLIENT_MESSAGE_BYTES,
      maxOutgoingBytes: MAX_SERVICE_MESSAGE_BYTES,
      // Beyond ours by a frame, so that #send always closes (and counts) a slow client first.
      maxPendingBytes: limits.maxSendBacklogBytes + MAX_SERVICE_MESSAGE_BYTES,
      messageTimeoutMs: CLIENT_MESSAGE_TIMEOUT_MS,
    }),
    maxConnections: limits.maxConnections,
    silent: false,
    logInColor: false,
    logPayloads: false,
    logger: (message: string) => logger.debug(`node-ipc: ${message}`),
  });
  return ipc;
}

/** Binds under SOCKET_UMASK: net.Server.listen binds synchronously, so no other file is made meanwhile. */
function listen(ipc: IPCModule, bindPath: string, socketPath: string): Promise<NetServer> {
  return new Promise((resolve, reject) => {
    let listening = false;
    ipc.serve(bindPath, () => {
      listening = true;
      const netServer = ipc.server.server;
      if (netServer === false) reject(new Error('node-ipc started without a server'));
      else resolve(netServer);
    });
    ipc.server.on('error', (error: Error) => {
      if (!listening) reject(new Error(`cannot listen on ${socketPath}: ${error.message}`));
    });
    const umask = process.umask(SOCKET_UMASK);
    try {
      ipc.server.start();
    } finally {
      process.umask(umask);
    }
  });
}

function failure(id: RequestId | null, code: ErrorCode, message: string): Response {
  return { id, ok: false, error: { code, message } };
}

function closeAfterFlush(socket: Socket): void {
  socket.end();
  setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
}
