/**
 * The stub server's boundary: who may ask, TCP limits, a fresh source port
 * per forwarded query, and handlers that throw without stopping the stub.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import dnsPacket from 'dns-packet';

import type { BoundAddress, DnsStubServer, DnsStubServerOptions } from '../src/server.ts';
import { plainUpstreamSockets, startDnsStubServer, systemLocalAddresses } from '../src/server.ts';
import type { DnsStubOptions } from '../src/stub.ts';
import { DnsStub } from '../src/stub.ts';
import { frameTcpMessage, TcpMessageReader } from '../src/tcp-framing.ts';
import { answerData, encodeQuery, queryTcp, queryUdp } from './dns-client.ts';
import { startFakeUpstream, UPSTREAM_ADDRESS } from './fake-upstream.ts';

const STUB_ADDRESS = '127.0.0.51';
/** Stands in for a tunnel peer or a LAN neighbour: the tests' local-address test says it is not ours. */
const FOREIGN_SOURCE = '127.0.0.77';

function portOf(addresses: readonly BoundAddress[], transport: 'udp' | 'tcp'): number {
  const bound = addresses.find((address) => address.transport === transport);
  assert.ok(bound, `no ${transport} listener`);
  return bound.port;
}

interface Started {
  server: DnsStubServer;
  stub: DnsStub;
  udp: number;
  tcp: number;
  logged: string[];
}

async function withServer(
  options: Partial<DnsStubServerOptions> & { stubOptions?: DnsStubOptions; upstreamPort?: number },
  body: (started: Started) => Promise<void>,
): Promise<void> {
  const { stubOptions, upstreamPort, ...serverOptions } = options;
  const stub = new DnsStub(stubOptions);
  stub.setResources([{ id: 'r', pattern: '*.corp.example' }]);
  if (upstreamPort !== undefined)
    stub.setUpstreams([{ address: UPSTREAM_ADDRESS, port: upstreamPort }]);
  const logged: string[] = [];
  const server = await startDnsStubServer({
    stub,
    listen: [{ address: STUB_ADDRESS, port: 0 }],
    isLocalAddress: (address) => address !== FOREIGN_SOURCE,
    logger: {
      debug: (message) => logged.push(`debug ${message}`),
      info: (message) => logged.push(`info ${message}`),
      warn: (message) => logged.push(`warn ${message}`),
      error: (message) => logged.push(`error ${message}`),
    },
    ...serverOptions,
  });
  try {
    await body({
      server,
      stub,
      udp: portOf(server.addresses, 'udp'),
      tcp: portOf(server.addresses, 'tcp'),
      logged,
    });
  } finally {
    await server.close();
  }
}

/** Sends one query from `source`; resolves with whether any reply came within `waitMs`. */
async function answeredFrom(source: string, port: number, waitMs = 1000): Promise<boolean> {
  const socket = dgram.createSocket('udp4');
  try {
    await new Promise<void>((resolve) => socket.bind(0, source, resolve));
    const reply = new Promise<boolean>((resolve) => socket.once('message', () => resolve(true)));
    socket.send(encodeQuery('a.corp.example', 'A'), port, STUB_ADDRESS);
    return await Promise.race([reply, sleep(waitMs).then(() => false)]);
  } finally {
    socket.close();
  }
}

function closedWithin(socket: net.Socket, ms: number): Promise<boolean> {
  if (socket.destroyed) return Promise.resolve(true);
  return Promise.race([
    new Promise<boolean>((resolve) => socket.once('close', () => resolve(true))),
    sleep(ms).then(() => false),
  ]);
}

async function connectTcp(port: number, localAddress?: string): Promise<net.Socket> {
  const socket = net.connect({
    host: STUB_ADDRESS,
    port,
    ...(localAddress ? { localAddress } : {}),
  });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

void describe('DNS stub server: who may ask', () => {
  void it('answers local sources only; others are dropped and counted, over UDP and TCP', async () => {
    await withServer({}, async ({ stub, udp, tcp }) => {
      assert.equal(await answeredFrom('127.0.0.1', udp), true);
      assert.equal(await answeredFrom(FOREIGN_SOURCE, udp), false);
      const foreign = await connectTcp(tcp, FOREIGN_SOURCE);
      foreign.write(frameTcpMessage(encodeQuery('a.corp.example', 'A')));
      assert.equal(await closedWithin(foreign, 2000), true, 'the foreign TCP client is closed');
      assert.equal(stub.stats.refused['not-local'], 2);
    });
  });

  void it("the system's test knows loopback and the host's interface addresses, nothing else", () => {
    const isLocal = systemLocalAddresses();
    const own = Object.values(networkInterfaces())
      .flatMap((entries) => entries ?? [])
      .map((entry) => entry.address);
    for (const address of ['127.0.0.1', '127.0.0.51', '::ffff:127.0.0.1', ...own])
      assert.equal(isLocal(address), true, address);
    for (const address of ['192.0.2.1', '2001:db8::1', '::ffff:192.0.2.1'])
      assert.equal(isLocal(address), false, address);
  });
});

void describe('DNS stub server: TCP clients are capped and timed out', () => {
  void it('closes a client that drips a byte at a time past the message deadline', async () => {
    await withServer({ tcpMessageDeadlineMs: 300 }, async ({ stub, tcp }) => {
      const socket = await connectTcp(tcp);
      const framed = frameTcpMessage(encodeQuery('slow.corp.example', 'A'));
      const started = performance.now();
      for (let index = 0; index < 20 && !socket.destroyed; index++) {
        socket.write(framed.subarray(index, index + 1));
        await sleep(100);
      }
      assert.equal(await closedWithin(socket, 1000), true);
      assert.ok(performance.now() - started < 1500, 'closed long before the message was whole');
      assert.equal(stub.stats.refused['tcp-deadline'], 1);
    });
  });

  void it('closes a client that connects and sends nothing', async () => {
    await withServer({ tcpMessageDeadlineMs: 200 }, async ({ stub, tcp }) => {
      const socket = await connectTcp(tcp);
      assert.equal(await closedWithin(socket, 1500), true);
      assert.equal(stub.stats.refused['tcp-deadline'], 1);
    });
  });

  void it('takes at most maxTcpClients at once; the next is closed and counted, later ones served', async () => {
    await withServer({ maxTcpClients: 2 }, async ({ stub, tcp }) => {
      const first = await connectTcp(tcp);
      const second = await connectTcp(tcp);
      const third = await connectTcp(tcp);
      assert.equal(await closedWithin(third, 2000), true);
      assert.equal(stub.stats.refused['tcp-client-cap'], 1);
      first.destroy();
      second.destroy();
      await sleep(50);
      const reply = await queryTcp(STUB_ADDRESS, tcp, encodeQuery('x.corp.example', 'A'));
      assert.equal(answerData(reply).length, 4);
    });
  });

  void it('closes a client that keeps asking but never reads its replies, and serves the others', async () => {
    await withServer({}, async ({ stub, tcp }) => {
      const socket = await connectTcp(tcp);
      socket.pause();
      // Answered at once and free of rate limits: only unread replies can pile up.
      const batch = Buffer.concat(
        Array.from({ length: 1000 }, (_, n) =>
          frameTcpMessage(encodeQuery('use-application-dns.net', 'A', n)),
        ),
      );
      const deadline = performance.now() + 20_000;
      let sent = 0;
      while (!socket.destroyed && performance.now() < deadline && sent < 256 * 1024 * 1024) {
        if (!socket.write(batch))
          await Promise.race([new Promise((resolve) => socket.once('drain', resolve)), sleep(100)]);
        sent += batch.length;
        await sleep(1);
      }
      assert.equal(await closedWithin(socket, 2000), true, `still open after ${sent} bytes`);
      assert.equal(stub.stats.refused['tcp-unread-replies'], 1);
      const reply = await queryTcp(STUB_ADDRESS, tcp, encodeQuery('x.corp.example', 'A'));
      assert.equal(answerData(reply).length, 4);
      console.log(`closed after ${(sent / 2 ** 20).toFixed(1)} MiB of queries`);
    });
  });
});

void describe('DNS stub server: rate limits', () => {
  void it('counts all of 127.0.0.0/8 as one client', async () => {
    await withServer({ stubOptions: { clientQueryBurst: 2 } }, async ({ stub, udp }) => {
      const ask = async (source: string, name: string) => {
        const socket = dgram.createSocket('udp4');
        try {
          await new Promise<void>((resolve) => socket.bind(0, source, resolve));
          const reply = new Promise<Buffer>((resolve) => socket.once('message', resolve));
          socket.send(encodeQuery(name, 'A'), udp, STUB_ADDRESS);
          return (await reply)[3]! & 0xf;
        } finally {
          socket.close();
        }
      };
      assert.equal(await ask('127.0.0.1', 'n1.corp.example'), 0);
      assert.equal(await ask('127.0.0.2', 'n2.corp.example'), 0);
      assert.equal(await ask('127.0.0.3', 'n3.corp.example'), 5, 'REFUSED');
      assert.equal(stub.stats.refused['rate-limited'], 1);
    });
  });
});

void describe('DNS stub server: forwarded queries', () => {
  void it('sends each forwarded query from its own random source port with a random id', async () => {
    const upstream = await startFakeUpstream();
    try {
      await withServer({ upstreamPort: upstream.port }, async ({ udp }) => {
        for (let n = 0; n < 6; n++) {
          const reply = await queryUdp(STUB_ADDRESS, udp, encodeQuery(`h${n}.example.org`, 'A', 7));
          assert.equal(reply.id, 7);
          assert.deepEqual(answerData(reply), ['203.0.113.10']);
        }
      });
      assert.equal(upstream.sources.length, 6);
      assert.equal(new Set(upstream.sources.map((source) => source.port)).size, 6, 'ports');
      assert.equal(new Set(upstream.sources.map((source) => source.id)).size, 6, 'ids');
    } finally {
      await upstream.close();
    }
  });

  void it('over TCP, keeps the first upstream connection open when it retries the next: a late answer still counts', async () => {
    // Asked at 0, the next one at 400 ms; the slow one answers at 600; SERVFAIL would come at 800.
    const slow = await startTcpUpstream(600);
    const silent = await startTcpUpstream(undefined);
    try {
      await withServer(
        { stubOptions: { upstreamAttemptTimeoutMs: 400, forwardTimeoutMs: 3000 } },
        async ({ stub, tcp }) => {
          stub.setUpstreams([
            { address: UPSTREAM_ADDRESS, port: slow.port },
            { address: UPSTREAM_ADDRESS, port: silent.port },
          ]);
          const reply = await queryTcp(STUB_ADDRESS, tcp, encodeQuery('late.example.org', 'A', 5));
          assert.equal(reply.rcode, 'NOERROR');
          assert.deepEqual(answerData(reply), ['203.0.113.10']);
          assert.equal(silent.queries, 1, 'the next upstream was asked too');
        },
      );
    } finally {
      await Promise.all([slow.close(), silent.close()]);
    }
  });
});

/** A TCP upstream on UPSTREAM_ADDRESS answering A queries with 203.0.113.10 after `delayMs`, or never. */
async function startTcpUpstream(
  delayMs: number | undefined,
): Promise<{ port: number; queries: number; close(): Promise<void> }> {
  const connections = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const upstream = { port: 0, queries: 0, close: async () => {} };
  const server = net.createServer((socket) => {
    connections.add(socket);
    socket.on('close', () => connections.delete(socket));
    socket.on('error', () => undefined);
    const reader = new TcpMessageReader();
    socket.on('data', (chunk) => {
      for (const message of reader.push(chunk)) {
        upstream.queries++;
        if (delayMs === undefined) continue;
        const query = dnsPacket.decode(message);
        const reply = dnsPacket.encode({
          type: 'response',
          id: query.id,
          questions: query.questions,
          answers: [{ type: 'A', name: 'late.example.org', ttl: 60, data: '203.0.113.10' }],
        });
        const timer = setTimeout(() => {
          timers.delete(timer);
          if (!socket.destroyed) socket.write(frameTcpMessage(reply));
        }, delayMs);
        timers.add(timer);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen({ host: UPSTREAM_ADDRESS, port: 0 }, resolve));
  const bound = server.address();
  upstream.port = typeof bound === 'object' && bound ? bound.port : 0;
  upstream.close = () => {
    for (const timer of timers) clearTimeout(timer);
    for (const socket of connections) socket.destroy();
    return new Promise((resolve) => server.close(() => resolve()));
  };
  return upstream;
}

void describe('DNS stub server: a handler that throws costs one message, never the stub', () => {
  void it('a local-address test that throws', async () => {
    let throwNext = true;
    await withServer(
      {
        isLocalAddress: () => {
          if (!throwNext) return true;
          throwNext = false;
          throw new Error('probe failed');
        },
      },
      async ({ stub, udp, logged }) => {
        assert.equal(await answeredFrom('127.0.0.1', udp), false);
        assert.equal(await answeredFrom('127.0.0.1', udp), true);
        assert.equal(stub.stats.refused['handler-error'], 1);
        assert.match(logged.join('\n'), /handling a UDP query failed: probe failed/);
      },
    );
  });

  void it('a local-address test that throws on a TCP connection: that one is closed', async () => {
    let throwNext = true;
    await withServer(
      {
        isLocalAddress: () => {
          if (!throwNext) return true;
          throwNext = false;
          throw new Error('probe failed');
        },
      },
      async ({ stub, tcp }) => {
        const socket = await connectTcp(tcp);
        assert.equal(await closedWithin(socket, 2000), true);
        assert.equal(stub.stats.refused['handler-error'], 1);
        const reply = await queryTcp(STUB_ADDRESS, tcp, encodeQuery('a.corp.example', 'A'));
        assert.equal(answerData(reply).length, 4);
      },
    );
  });

  void it('upstream sockets that cannot be opened (EMFILE), over UDP and TCP', async () => {
    const upstream = await startFakeUpstream();
    const emfile = () => {
      throw Object.assign(new Error('socket: EMFILE, too many open files'), { code: 'EMFILE' });
    };
    try {
      await withServer(
        {
          upstreamPort: upstream.port,
          upstreamSockets: { udp: emfile, tcp: emfile },
          stubOptions: { upstreamAttemptTimeoutMs: 100, forwardTimeoutMs: 200 },
        },
        async ({ stub, udp, tcp }) => {
          const failed = await queryUdp(STUB_ADDRESS, udp, encodeQuery('www.example.org', 'A'));
          assert.equal(failed.rcode, 'SERVFAIL', 'the forward times out');
          const tcpFailed = await queryTcp(STUB_ADDRESS, tcp, encodeQuery('www.example.org', 'A'));
          assert.equal(tcpFailed.rcode, 'SERVFAIL');
          const resource = await queryUdp(STUB_ADDRESS, udp, encodeQuery('a.corp.example', 'A'));
          assert.equal(answerData(resource).length, 4);
          assert.ok(stub.stats.refused['handler-error'] >= 2);
        },
      );
    } finally {
      await upstream.close();
    }
  });

  void it('an activity probe that throws in the timer', async () => {
    await withServer(
      {
        stubOptions: {
          proxyAddressIdleMs: 50,
          ttlSeconds: 0,
          addressIdleMs: () => {
            throw new Error('no data path');
          },
        },
      },
      async ({ stub, udp }) => {
        await queryUdp(STUB_ADDRESS, udp, encodeQuery('a.corp.example', 'A'));
        await sleep(200);
        assert.ok(stub.stats.refused['handler-error'] >= 1);
        const again = await queryUdp(STUB_ADDRESS, udp, encodeQuery('b.corp.example', 'A'));
        assert.equal(answerData(again).length, 4);
      },
    );
  });

  void it('an AllowedIPs test that throws on an upstream reply: that query times out', async () => {
    const upstream = await startFakeUpstream();
    try {
      await withServer(
        {
          upstreamPort: upstream.port,
          stubOptions: {
            upstreamAttemptTimeoutMs: 100,
            forwardTimeoutMs: 200,
            isTunnelled: () => {
              throw new Error('no table');
            },
          },
        },
        async ({ stub, udp }) => {
          const failed = await queryUdp(STUB_ADDRESS, udp, encodeQuery('www.example.org', 'A'));
          assert.equal(failed.rcode, 'SERVFAIL');
          assert.equal(stub.stats.refused['handler-error'], 1);
          assert.equal(stub.pendingForwards, 0);
          const resource = await queryUdp(STUB_ADDRESS, udp, encodeQuery('a.corp.example', 'A'));
          assert.equal(answerData(resource).length, 4);
        },
      );
    } finally {
      await upstream.close();
    }
  });

  void it('a TCP client that resets mid-message, and a malformed message', async () => {
    await withServer({}, async ({ stub, udp, tcp }) => {
      const socket = await connectTcp(tcp);
      socket.write(frameTcpMessage(encodeQuery('a.corp.example', 'A')).subarray(0, 5));
      await sleep(50);
      socket.resetAndDestroy();
      await sleep(50);
      const garbage = Buffer.from([0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff]);
      const [formerr] = await Promise.all([queryUdp(STUB_ADDRESS, udp, garbage)]);
      assert.equal(formerr.rcode, 'FORMERR');
      assert.equal(stub.stats.refused.malformed, 1);
      const reply = await queryTcp(STUB_ADDRESS, tcp, encodeQuery('b.corp.example', 'A'));
      assert.equal(answerData(reply).length, 4);
    });
  });
});

void it('plainUpstreamSockets opens a new UDP socket each time', () => {
  const upstream = { address: '127.0.0.1', port: 53 };
  const a = plainUpstreamSockets.udp(upstream);
  const b = plainUpstreamSockets.udp(upstream);
  try {
    assert.notEqual(a, b);
  } finally {
    a.close();
    b.close();
  }
});
