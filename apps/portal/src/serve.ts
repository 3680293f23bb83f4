/**
 * `gatehouse-portal serve`: one process serving the sign-in pages and the client and gateway
 * WebSocket endpoints over one SQLite database.
 *
 * runServe opens the storage, builds the HTTP handler and server (HTTPS with --tls-cert and
 * --tls-key), hands WebSocket upgrades to the channels, listens on `--listen HOST:PORT`
 * (default 127.0.0.1:8080: only this machine until told otherwise; put it behind a proxy or
 * give `--listen 0.0.0.0:443` with TLS to serve others), logs one "listening on" line, and on
 * SIGINT/SIGTERM closes every session (phx_close, then close code 1001), the server and the
 * database.
 */
import type { AddressInfo } from 'node:net';
import { silentLogger, type Logger } from '@gatehouse/logging';
import { openSqliteStorage } from './db/sqlite-storage.ts';
import type { PortalStorage } from './db/storage.ts';
import {
  createPortalHttpHandler,
  type PortalHttp,
  type PortalHttpOptions,
} from './http/handler.ts';
import { createPortalServer, loadTlsFiles, type PortalServer } from './http/server.ts';
import { storageSignInBackend } from './http/sign-in-backend.ts';
import { createChannelHub, type ChannelHub, type ChannelHubOptions } from './channels/hub.ts';
import { storageChannelBackend } from './channels/storage-backend.ts';

export const DEFAULT_LISTEN = '127.0.0.1:8080';

export interface ServeOptions {
  /** The SQLite database file (created with its migrations if missing); ':memory:' for tests. */
  database: string;
  /** `HOST:PORT` or `[V6]:PORT`; default 127.0.0.1:8080. Port 0 picks a free one. */
  listen?: string;
  /** PEM certificate and key files: HTTPS and WSS. Both or neither. */
  tlsCert?: string;
  tlsKey?: string;
  /** Upstream DNS servers told to clients in `init` (e.g. ["1.1.1.1", "2606:4700::1111"]). */
  upstreamDns?: string[];
  /** The search domain told to clients in `init`. */
  searchDomain?: string;
  /** The sign-in side's options (public URL, client token lifetime, rate limits…). */
  http?: PortalHttpOptions;
  /** The channels' limits. */
  channels?: ChannelHubOptions;
  logger?: Logger;
  /** Stop on SIGINT/SIGTERM (default true). */
  handleSignals?: boolean;
  now?: () => number;
}

export interface RunningPortal {
  storage: PortalStorage;
  http: PortalHttp;
  server: PortalServer;
  hub: ChannelHub;
  host: string;
  port: number;
  /** http(s)://host:port */
  url: string;
  /** Closes sessions, the server and the database; idempotent. */
  stop(): Promise<void>;
  /** Resolves once stopped (by stop() or a signal). */
  stopped: Promise<void>;
}

/** `HOST:PORT` / `[V6]:PORT` → host and port, or throws saying what is wrong. */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = match === null ? NaN : Number(match[3]);
  if (match === null || !Number.isInteger(port) || port > 65535) {
    throw new Error(`--listen ${text}: expected HOST:PORT or [IPv6]:PORT (port 0-65535)`);
  }
  return { host: (match[1] ?? match[2]) as string, port };
}

export async function runServe(options: ServeOptions): Promise<RunningPortal> {
  const logger = options.logger ?? silentLogger;
  const now = options.now ?? Date.now;
  const { host, port } = parseListen(options.listen ?? DEFAULT_LISTEN);
  const tls = loadTlsFiles({ tlsCert: options.tlsCert, tlsKey: options.tlsKey });
  const storage = openSqliteStorage(options.database);
  const channelBackend = storageChannelBackend(storage, {
    upstreamDns: options.upstreamDns ?? [],
    searchDomain: options.searchDomain ?? null,
  });
  const channels = createChannelHub({
    backend: channelBackend,
    logger,
    now,
    options: options.channels ?? {},
  });
  const http = createPortalHttpHandler({
    backend: storageSignInBackend(storage),
    now,
    logger,
    options: options.http ?? {},
    onTokenRevoked: (tokenId) => channels.mapper.tokenRevoked(tokenId),
  });
  const server = createPortalServer({ tls, logger }, http.listener);
  server.server.on('upgrade', (req, socket, head) => channels.handleUpgrade(req, socket, head));
  try {
    await new Promise<void>((resolve, reject) => {
      server.server.once('error', reject);
      server.server.listen(port, host, () => {
        server.server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    await channels.close();
    storage.close();
    throw new Error(`--listen ${host}:${port}: ${(error as Error).message}`, { cause: error });
  }
  const address = server.server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `${server.tls ? 'https' : 'http'}://${shownHost}:${address.port}`;
  logger.info(`portal: listening on ${url}${server.tls ? ' (TLS)' : ''}`);

  let resolveStopped!: () => void;
  const stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
  let stopping: Promise<void> | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    logger.info(`portal: ${signal}, stopping`);
    void stop();
  };
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (options.handleSignals !== false) {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      const closed = new Promise<void>((resolve) => server.server.close(() => resolve()));
      await channels.close();
      server.server.closeAllConnections();
      await closed;
      storage.close();
      logger.info('portal: stopped');
      resolveStopped();
    })();
    return stopping;
  };
  if (options.handleSignals !== false) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  return {
    storage,
    http,
    server,
    hub: channels,
    host: address.address,
    port: address.port,
    url,
    stop,
    stopped,
  };
}
