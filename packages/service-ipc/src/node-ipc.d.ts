// The part of node-ipc 14.0.0's API this package uses (it ships no types).
// Read from its source: services/IPC.js, dao/socketServer.js, dao/client.js.
declare module 'node-ipc' {
  import type { Server as NetServer, Socket } from 'node:net';

  /** What node-ipc asks of a custom parser (entities/EventParser.js). */
  export interface IpcParser {
    readonly raw: false;
    readonly encoding: 'utf8';
    readonly profile: string;
    readonly maxPendingBytes: number;
    readonly messageTimeout: number;
    encode(type: string, data: unknown): string;
    read(
      buffer: string,
      data: string,
      receive: (message: { type: string; data: unknown }) => void,
    ): string;
  }

  export interface IpcConfig {
    silent: boolean;
    logger: (message: string) => void;
    logInColor: boolean;
    logPayloads: boolean;
    unlink: boolean;
    secureSocketRoot: boolean;
    socketRoot: string;
    parser: IpcParser | string;
    maxConnections: number;
    maxRetries: number;
    stopRetrying: boolean;
    readableAll: boolean;
    writableAll: boolean;
  }

  export interface IpcServer {
    server: NetServer | false;
    sockets: Socket[];
    on(event: 'connect', handler: (socket: Socket) => void): this;
    on(event: 'close', handler: (socket: Socket) => void): this;
    on(event: 'error', handler: (error: Error) => void): this;
    on(event: string, handler: (data: unknown, socket: Socket) => void): this;
    emit(socket: Socket, type: string, data: unknown): boolean;
    start(): void;
    stop(): void;
  }

  export interface IpcClient {
    socket: Socket | false;
    on(event: 'connect' | 'disconnect' | 'destroy', handler: () => void): this;
    on(event: 'error', handler: (error: NodeJS.ErrnoException) => void): this;
    on(event: string, handler: (data: unknown) => void): this;
    emit(type: string, data: unknown): boolean;
  }

  export class IPCModule {
    config: IpcConfig;
    server: IpcServer;
    of: Record<string, IpcClient | undefined>;
    serve(path: string, callback?: () => void): void;
    connectTo(id: string, path: string, callback?: () => void): void;
    disconnect(id: string): void;
  }
}
