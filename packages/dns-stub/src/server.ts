/**
 * The IO shell around DnsStub: kernel UDP and TCP sockets on the sentinel
 * addresses (assigned locally, e.g. on tun-gatehouse), upstream sockets from
 * an injectable factory (the tunnel service marks them with SO_MARK so they
 * bypass the tunnel), and one timer for the stub's next deadline.
 *
 * A query that arrives over UDP is forwarded over UDP; one that arrives over
 * TCP is forwarded over a fresh TCP connection, so that answers too large
 * for UDP reach TCP clients whole. Each forward has its own upstream
 * sockets (one per upstream tried), so queries a TCP client pipelines (glibc
 * sends A and AAAA on one connection) are all answered.
 */
import dgram from 'node:dgram';
import type { RemoteInfo } from 'node:dgram';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import { silentLogger, type Logger } from '@gatehouse/logging';

import type { DnsStub, ForwardRequest, Upstream } from './stub.ts';
import { TcpMessageReader, frameTcpMessage } from './tcp-framing.ts';

export interface ListenAddress {
  address: string;
  /** 53 in production; 0 picks a free port (UDP and TCP may then differ). */
  port: number;
}

export interface UpstreamSocketFactory {
  /**
   * A fresh UDP socket for one forwarded query to `upstream` (a random
   * source port per query, RFC 5452); the factory may treat upstreams
   * differently (e.g. mark only those that must bypass the tunnel).
   */
  udp(upstream: Upstream): dgram.Socket;
  /** A TCP connection being opened to `upstream`. */
  tcp(upstream: Upstream): net.Socket;
}

/** Whether an address is one of this host's own (loopback, or assigned to a local interface). */
export type LocalAddressTest = (address: string) => boolean;

export interface DnsStubServerOptions {
  stub: DnsStub;
  listen: readonly ListenAddress[];
  upstreamSockets?: UpstreamSocketFactory;
  /** Queries from other sources (tunnel peers, LAN neighbours) are dropped; default: the host's interfaces. */
  isLocalAddress?: LocalAddressTest;
  now?: () => number;
  logger?: Logger;
  /** TCP clients at once; more are disconnected at once. */
  maxTcpClients?: number;
  /** A TCP client gets this long from connecting, or from a message's first byte, to send the whole message. */
  tcpMessageDeadlineMs?: number;
  /** A TCP connection with no traffic for this long is closed. */
  tcpIdleTimeoutMs?: number;
  /** A TCP client that has left this many bytes of replies unread (beyond the kernel's buffers) is closed. */
  maxTcpUnreadBytes?: number;
}

export interface BoundAddress {
  transport: 'udp' | 'tcp';
  address: string;
  port: number;
}

export interface DnsStubServer {
  readonly addresses: readonly BoundAddress[];
  close(): Promise<void>;
}

export const plainUpstreamSockets: UpstreamSocketFactory = {
  udp: (upstream) => dgram.createSocket(net.isIPv6(upstream.address) ? 'udp6' : 'udp4'),
  tcp: (upstream) => net.connect({ host: upstream.address, port: upstream.port }),
};

export const DEFAULT_MAX_TCP_CLIENTS = 64;
export const DEFAULT_TCP_MESSAGE_DEADLINE_MS = 5_000;
export const DEFAULT_TCP_IDLE_TIMEOUT_MS = 10_000;
/**
 * A client that keeps sending queries stays under the idle timeout; one that
 * never reads its replies would make them pile up in the service's memory.
 */
export const DEFAULT_MAX_TCP_UNREAD_BYTES = 64 * 1024;
/** How stale the host's address list may be when a query comes from an address not in it. */
const LOCAL_ADDRESSES_REFRESH_MS = 1_000;

/** The host's own addresses from its interfaces, looked up again when an unknown one asks. */
export function systemLocalAddresses(
  now: () => number = () => performance.now(),
): LocalAddressTest {
  let known = new Set<string>();
  let refreshedAt = -Infinity;
  return (address) => {
    const plain = unmappedAddress(address);
    if (net.isIPv4(plain) && plain.startsWith('127.')) return true;
    if (known.has(plain)) return true;
    if (now() - refreshedAt < LOCAL_ADDRESSES_REFRESH_MS) return false;
    refreshedAt = now();
    known = new Set(
      Object.values(networkInterfaces()).flatMap((entries) =>
        (entries ?? []).map((entry) => entry.address.replace(/%.*$/, '')),
      ),
    );
    return known.has(plain);
  };
}

/** `::ffff:192.0.2.1` as a dual-stack socket reports an IPv4 peer: `192.0.2.1`. */
function unmappedAddress(address: string): string {
  return address.toLowerCase().startsWith('::ffff:') && net.isIPv4(address.slice(7))
    ? address.slice(7)
    : address;
}

/**
 * Whose budget a query spends: its source address, except that all of
 * 127.0.0.0/8 is one client (a local process may send from any of them).
 */
function rateLimitedClient(source: string): string {
  const plain = unmappedAddress(source);
  return net.isIPv4(plain) && plain.startsWith('127.') ? '127.0.0.0/8' : plain;
}

export async function startDnsStubServer(options: DnsStubServerOptions): Promise<DnsStubServer> {
  const server = new StubServer(options);
  try {
    await server.listen(options.listen);
  } catch (error) {
    await server.close();
    throw error;
  }
  return server;
}

type Client =
  | { transport: 'udp'; socket: dgram.Socket; remote: RemoteInfo }
  | { transport: 'tcp'; socket: net.Socket };

/** A forwarded query: whom to answer, and the upstream sockets it opened (one per upstream tried). */
interface Exchange {
  client: Client;
  upstreamSockets: Array<dgram.Socket | net.Socket>;
}

class StubServer implements DnsStubServer {
  readonly addresses: BoundAddress[] = [];
  readonly #stub: DnsStub;
  readonly #factory: UpstreamSocketFactory;
  readonly #isLocal: LocalAddressTest;
  readonly #now: () => number;
  readonly #logger: Logger;
  readonly #maxTcpClients: number;
  readonly #tcpMessageDeadlineMs: number;
  readonly #tcpIdleTimeoutMs: number;
  readonly #maxTcpUnreadBytes: number;
  readonly #udpListeners: dgram.Socket[] = [];
  readonly #tcpListeners: net.Server[] = [];
  readonly #tcpClients = new Set<net.Socket>();
  /** By forward id. */
  readonly #exchanges = new Map<number, Exchange>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: DnsStubServerOptions) {
    this.#stub = options.stub;
    this.#factory = options.upstreamSockets ?? plainUpstreamSockets;
    this.#now = options.now ?? (() => performance.now());
    this.#isLocal = options.isLocalAddress ?? systemLocalAddresses(this.#now);
    this.#logger = options.logger ?? silentLogger;
    this.#maxTcpClients = options.maxTcpClients ?? DEFAULT_MAX_TCP_CLIENTS;
    this.#tcpMessageDeadlineMs = options.tcpMessageDeadlineMs ?? DEFAULT_TCP_MESSAGE_DEADLINE_MS;
    this.#tcpIdleTimeoutMs = options.tcpIdleTimeoutMs ?? DEFAULT_TCP_IDLE_TIMEOUT_MS;
    this.#maxTcpUnreadBytes = options.maxTcpUnreadBytes ?? DEFAULT_MAX_TCP_UNREAD_BYTES;
  }

  async listen(addresses: readonly ListenAddress[]): Promise<void> {
    for (const { address, port } of addresses) {
      const udp = dgram.createSocket(net.isIPv6(address) ? 'udp6' : 'udp4');
      this.#udpListeners.push(udp);
      udp.on('error', (error) => this.#socketError('a listening UDP socket', error));
      udp.on('message', (message, remote) =>
        this.#guard('a UDP query', () => this.#onUdpQuery(udp, message, remote)),
      );
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(port, address, () => {
          udp.off('error', reject);
          resolve();
        });
      });
      this.addresses.push({ transport: 'udp', address, port: udp.address().port });

      const tcp = net.createServer((socket) =>
        this.#guard(
          'a TCP connection',
          () => this.#onTcpClient(socket),
          () => socket.destroy(),
        ),
      );
      tcp.maxConnections = this.#maxTcpClients;
      tcp.on('drop', () => this.#stub.countRefusal('tcp-client-cap'));
      this.#tcpListeners.push(tcp);
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen({ host: address, port }, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
      // Accept failures (EMFILE) arrive here; the server keeps listening.
      tcp.on('error', (error) => this.#socketError('a TCP listener', error));
      const bound = tcp.address();
      this.addresses.push({
        transport: 'tcp',
        address,
        port: typeof bound === 'object' && bound ? bound.port : port,
      });
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    const upstreamUdp: dgram.Socket[] = [];
    for (const { upstreamSockets } of this.#exchanges.values()) {
      for (const socket of upstreamSockets) {
        if (socket instanceof net.Socket) socket.destroy();
        else upstreamUdp.push(socket);
      }
    }
    this.#exchanges.clear();
    for (const socket of this.#tcpClients) socket.destroy();
    for (const socket of [...this.#udpListeners, ...upstreamUdp]) {
      await new Promise<void>((resolve) => {
        try {
          socket.close(() => resolve());
        } catch {
          resolve(); // closed already
        }
      });
    }
    for (const server of this.#tcpListeners) {
      await new Promise<void>((resolve) =>
        server.listening ? server.close(() => resolve()) : resolve(),
      );
    }
  }

  /** One bad input costs one message, never the stub (nor the tunnel service it runs in). */
  #guard(what: string, handle: () => void, cleanUp?: () => void): void {
    try {
      handle();
    } catch (error) {
      cleanUp?.();
      this.#stub.countRefusal('handler-error');
      this.#logger.error(
        `DNS stub: handling ${what} failed: ${(error as Error)?.message ?? error}`,
      );
    }
  }

  #socketError(what: string, error: Error): void {
    this.#stub.countRefusal('socket-error');
    this.#logger.warn(`DNS stub: ${what}: ${error.message}`);
  }

  #onUdpQuery(socket: dgram.Socket, message: Buffer, remote: RemoteInfo): void {
    if (!this.#isLocal(remote.address)) {
      this.#stub.countRefusal('not-local');
      return;
    }
    this.#handleQuery(message, remote.address, { transport: 'udp', socket, remote });
  }

  #onTcpClient(socket: net.Socket): void {
    socket.on('error', (error) => this.#socketError('a TCP client', error));
    const remote = socket.remoteAddress;
    if (remote === undefined || !this.#isLocal(remote)) {
      this.#stub.countRefusal('not-local');
      socket.destroy();
      return;
    }
    this.#tcpClients.add(socket);
    const reader = new TcpMessageReader();
    let deadline: NodeJS.Timeout | undefined;
    const armDeadline = () => {
      deadline = setTimeout(() => {
        this.#stub.countRefusal('tcp-deadline');
        socket.destroy();
      }, this.#tcpMessageDeadlineMs);
    };
    armDeadline();
    socket.setTimeout(this.#tcpIdleTimeoutMs, () => socket.destroy());
    socket.on('close', () => {
      clearTimeout(deadline);
      this.#tcpClients.delete(socket);
    });
    socket.on('data', (chunk) =>
      this.#guard('a TCP query', () => {
        const hadPartial = reader.bufferedBytes > 0;
        const messages = reader.push(chunk);
        if (messages.length > 0 || !hadPartial) {
          clearTimeout(deadline);
          deadline = undefined;
          if (reader.bufferedBytes > 0) armDeadline();
        }
        for (const message of messages)
          this.#handleQuery(message, remote, { transport: 'tcp', socket });
      }),
    );
  }

  #handleQuery(message: Buffer, source: string, client: Client): void {
    if (this.#closed) return;
    try {
      const outcome = this.#stub.handleQuery(message, this.#now(), rateLimitedClient(source));
      if (outcome.kind === 'reply') this.#deliver(client, outcome.message);
      if (outcome.kind === 'forward') {
        const exchange: Exchange = { client, upstreamSockets: [] };
        this.#exchanges.set(outcome.forward.forwardId, exchange);
        this.#send(outcome.forward, exchange);
      }
    } finally {
      // A forward whose socket could not be opened still times out into SERVFAIL.
      this.#schedule();
    }
  }

  #send(forward: ForwardRequest, exchange: Exchange): void {
    if (exchange.client.transport === 'udp') {
      const socket = this.#factory.udp(forward.upstream);
      exchange.upstreamSockets.push(socket);
      socket.on('error', (error) => this.#socketError('an upstream UDP socket', error));
      socket.on('message', (message, remote) =>
        this.#guard('an upstream reply', () =>
          this.#onUpstreamReply(
            forward.forwardId,
            { address: remote.address, port: remote.port },
            message,
          ),
        ),
      );
      socket.send(forward.message, forward.upstream.port, forward.upstream.address);
      return;
    }
    const connection = this.#factory.tcp(forward.upstream);
    exchange.upstreamSockets.push(connection);
    const reader = new TcpMessageReader();
    connection.on('error', (error) => {
      this.#socketError('an upstream TCP connection', error);
      connection.destroy();
    });
    connection.setTimeout(this.#tcpIdleTimeoutMs, () => connection.destroy());
    connection.on('data', (chunk) =>
      this.#guard('an upstream TCP reply', () => {
        for (const reply of reader.push(chunk)) {
          this.#onUpstreamReply(forward.forwardId, forward.upstream, reply);
        }
      }),
    );
    connection.write(frameTcpMessage(forward.message));
  }

  #onUpstreamReply(forwardId: number, from: Upstream, message: Buffer): void {
    if (this.#closed) return;
    const reply = this.#stub.handleUpstreamReply(forwardId, from, message);
    if (reply === undefined) return;
    this.#finish(forwardId, reply);
    this.#schedule();
  }

  #finish(forwardId: number, reply: Uint8Array): void {
    const exchange = this.#exchanges.get(forwardId);
    this.#exchanges.delete(forwardId);
    if (exchange === undefined) return;
    for (const socket of exchange.upstreamSockets) {
      if (socket instanceof net.Socket) socket.destroy();
      else socket.close();
    }
    this.#deliver(exchange.client, reply);
  }

  #deliver(client: Client, message: Uint8Array): void {
    if (client.transport === 'udp') {
      client.socket.send(message, client.remote.port, client.remote.address);
      return;
    }
    if (client.socket.destroyed) return;
    if (client.socket.writableLength >= this.#maxTcpUnreadBytes) {
      this.#stub.countRefusal('tcp-unread-replies');
      client.socket.destroy();
      return;
    }
    client.socket.write(frameTcpMessage(message));
  }

  #schedule(): void {
    clearTimeout(this.#timer);
    const deadline = this.#stub.nextDeadline();
    if (deadline === undefined || this.#closed) return;
    this.#timer = setTimeout(
      () => this.#guard('the DNS stub timer', () => this.#onTimer()),
      Math.max(0, deadline - this.#now()),
    );
    // The reclaim deadline is minutes away: it must not keep a process alive on its own.
    this.#timer.unref();
  }

  #onTimer(): void {
    try {
      for (const event of this.#stub.handleTimeouts(this.#now())) {
        if (event.kind === 'reply') {
          this.#finish(event.forwardId, event.message);
          continue;
        }
        const exchange = this.#exchanges.get(event.forward.forwardId);
        if (exchange !== undefined) this.#send(event.forward, exchange);
      }
    } finally {
      this.#schedule();
    }
  }
}
