/**
 * The IO shell around DnsStub: kernel UDP and TCP sockets on the sentinel
 * addresses (assigned locally, e.g. on tun-gatehouse), upstream sockets from
 * an injectable factory (the tunnel service marks them with SO_MARK so they
 * bypass the tunnel), and one timer for the stub's next deadline.
 *
 * A query that arrives over UDP is forwarded over UDP; one that arrives over
 * TCP is forwarded over a fresh TCP connection, so that answers too large
 * for UDP reach TCP clients whole.
 */
import dgram from 'node:dgram';
import type { RemoteInfo } from 'node:dgram';
import net from 'node:net';

import type { DnsStub, ForwardRequest, Upstream } from './stub.ts';
import { TcpMessageReader, frameTcpMessage } from './tcp-framing.ts';

export interface ListenAddress {
  address: string;
  /** 53 in production; 0 picks a free port (UDP and TCP may then differ). */
  port: number;
}

export interface UpstreamSocketFactory {
  /**
   * A UDP socket for talking to `upstream`; the server keeps one per
   * upstream address, so the factory may treat upstreams differently (e.g.
   * mark only those that must bypass the tunnel).
   */
  udp(upstream: Upstream): dgram.Socket;
  /** A TCP connection being opened to `upstream`. */
  tcp(upstream: Upstream): net.Socket;
}

export interface DnsStubServerOptions {
  stub: DnsStub;
  listen: readonly ListenAddress[];
  upstreamSockets?: UpstreamSocketFactory;
  now?: () => number;
  /** A TCP client that sends nothing for this long is disconnected. */
  tcpIdleTimeoutMs?: number;
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
  | { transport: 'tcp'; socket: net.Socket; upstreamConnection?: net.Socket };

const DEFAULT_TCP_IDLE_TIMEOUT_MS = 10_000;

class StubServer implements DnsStubServer {
  readonly addresses: BoundAddress[] = [];
  readonly #stub: DnsStub;
  readonly #factory: UpstreamSocketFactory;
  readonly #now: () => number;
  readonly #tcpIdleTimeoutMs: number;
  readonly #udpListeners: dgram.Socket[] = [];
  readonly #tcpListeners: net.Server[] = [];
  readonly #tcpClients = new Set<net.Socket>();
  readonly #clients = new Map<number, Client>();
  readonly #upstreamUdp = new Map<string, dgram.Socket>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: DnsStubServerOptions) {
    this.#stub = options.stub;
    this.#factory = options.upstreamSockets ?? plainUpstreamSockets;
    this.#now = options.now ?? (() => performance.now());
    this.#tcpIdleTimeoutMs = options.tcpIdleTimeoutMs ?? DEFAULT_TCP_IDLE_TIMEOUT_MS;
  }

  async listen(addresses: readonly ListenAddress[]): Promise<void> {
    for (const { address, port } of addresses) {
      const udp = dgram.createSocket(net.isIPv6(address) ? 'udp6' : 'udp4');
      this.#udpListeners.push(udp);
      udp.on('error', () => undefined);
      udp.on('message', (message, remote) => this.#onUdpQuery(udp, message, remote));
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(port, address, () => {
          udp.off('error', reject);
          resolve();
        });
      });
      this.addresses.push({ transport: 'udp', address, port: udp.address().port });

      const tcp = net.createServer((socket) => this.#onTcpClient(socket));
      this.#tcpListeners.push(tcp);
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen({ host: address, port }, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
      tcp.on('error', () => undefined);
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
    for (const client of this.#clients.values()) {
      if (client.transport === 'tcp') client.upstreamConnection?.destroy();
    }
    this.#clients.clear();
    for (const socket of this.#tcpClients) socket.destroy();
    for (const socket of [...this.#udpListeners, ...this.#upstreamUdp.values()]) {
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    }
    for (const server of this.#tcpListeners) {
      await new Promise<void>((resolve) =>
        server.listening ? server.close(() => resolve()) : resolve(),
      );
    }
  }

  #onUdpQuery(socket: dgram.Socket, message: Buffer, remote: RemoteInfo): void {
    this.#handleQuery(message, { transport: 'udp', socket, remote });
  }

  #onTcpClient(socket: net.Socket): void {
    this.#tcpClients.add(socket);
    const reader = new TcpMessageReader();
    socket.setTimeout(this.#tcpIdleTimeoutMs, () => socket.destroy());
    socket.on('error', () => undefined);
    socket.on('close', () => this.#tcpClients.delete(socket));
    socket.on('data', (chunk) => {
      for (const message of reader.push(chunk))
        this.#handleQuery(message, { transport: 'tcp', socket });
    });
  }

  #handleQuery(message: Buffer, client: Client): void {
    if (this.#closed) return;
    const outcome = this.#stub.handleQuery(message, this.#now());
    if (outcome.kind === 'reply') this.#deliver(client, outcome.message);
    if (outcome.kind === 'forward') {
      this.#clients.set(outcome.forward.forwardId, client);
      this.#send(outcome.forward, client);
    }
    this.#schedule();
  }

  #send(forward: ForwardRequest, client: Client): void {
    if (client.transport === 'udp') {
      this.#upstreamSocket(forward.upstream).send(
        forward.message,
        forward.upstream.port,
        forward.upstream.address,
      );
      return;
    }
    client.upstreamConnection?.destroy();
    const connection = this.#factory.tcp(forward.upstream);
    client.upstreamConnection = connection;
    const reader = new TcpMessageReader();
    connection.on('error', () => connection.destroy());
    connection.setTimeout(this.#tcpIdleTimeoutMs, () => connection.destroy());
    connection.on('data', (chunk) => {
      for (const reply of reader.push(chunk)) {
        this.#onUpstreamReply(forward.forwardId, forward.upstream, reply);
      }
    });
    connection.write(frameTcpMessage(forward.message));
  }

  #upstreamSocket(upstream: Upstream): dgram.Socket {
    const existing = this.#upstreamUdp.get(upstream.address);
    if (existing !== undefined) return existing;
    const socket = this.#factory.udp(upstream);
    socket.on('error', () => undefined);
    socket.on('message', (message, remote) => {
      if (message.length < 2) return;
      this.#onUpstreamReply(
        message.readUInt16BE(0),
        { address: remote.address, port: remote.port },
        message,
      );
    });
    this.#upstreamUdp.set(upstream.address, socket);
    return socket;
  }

  #onUpstreamReply(forwardId: number, from: Upstream, message: Buffer): void {
    if (this.#closed) return;
    const reply = this.#stub.handleUpstreamReply(forwardId, from, message);
    if (reply === undefined) return;
    this.#finish(forwardId, reply);
    this.#schedule();
  }

  #finish(forwardId: number, reply: Uint8Array): void {
    const client = this.#clients.get(forwardId);
    this.#clients.delete(forwardId);
    if (client === undefined) return;
    if (client.transport === 'tcp') client.upstreamConnection?.destroy();
    this.#deliver(client, reply);
  }

  #deliver(client: Client, message: Uint8Array): void {
    if (client.transport === 'udp') {
      client.socket.send(message, client.remote.port, client.remote.address);
    } else if (!client.socket.destroyed) {
      client.socket.write(frameTcpMessage(message));
    }
  }

  #schedule(): void {
    clearTimeout(this.#timer);
    const deadline = this.#stub.nextDeadline();
    if (deadline === undefined || this.#closed) return;
    this.#timer = setTimeout(() => this.#onTimer(), Math.max(0, deadline - this.#now()));
  }

  #onTimer(): void {
    for (const event of this.#stub.handleTimeouts(this.#now())) {
      if (event.kind === 'reply') {
        this.#finish(event.forwardId, event.message);
        continue;
      }
      const client = this.#clients.get(event.forward.forwardId);
      if (client !== undefined) this.#send(event.forward, client);
    }
    this.#schedule();
  }
}
