import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, before, describe, it } from 'node:test';

import dnsPacket from 'dns-packet';

import type { BoundAddress, DnsStubServer } from '../src/server.ts';
import { startDnsStubServer } from '../src/server.ts';
import { DnsStub } from '../src/stub.ts';
import { frameTcpMessage } from '../src/tcp-framing.ts';
import { startFakeUpstream, UPSTREAM_ADDRESS } from './fake-upstream.ts';
import {
  answerData,
  decodeReply,
  encodeQuery,
  queryTcp,
  queryUdp,
  rcodeOf,
  sendTcp,
  sendUdp,
} from './dns-client.ts';

const STUB_ADDRESS = '127.0.0.41';

/** A fake upstream for TCP forwards. */
async function startFakeTcpUpstream(port: number): Promise<{ close(): Promise<void> }> {
  const net = await import('node:net');
  const { TcpMessageReader } = await import('../src/tcp-framing.ts');
  const server = net.createServer((socket) => {
    const reader = new TcpMessageReader();
    socket.on('data', (chunk) => {
      for (const message of reader.push(chunk)) {
        const query = dnsPacket.decode(message);
        const question = query.questions?.[0];
        if (question === undefined) continue;
        const reply = dnsPacket.encode({
          type: 'response',
          id: query.id,
          questions: [question],
          answers: [{ type: 'TXT', name: question.name, ttl: 300, data: 'x'.repeat(200) }],
        });
        socket.write(frameTcpMessage(reply));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen({ host: UPSTREAM_ADDRESS, port }, resolve));
  return { close: () => new Promise((resolve) => server.close(() => resolve())) };
}

function portOf(addresses: readonly BoundAddress[], transport: 'udp' | 'tcp'): number {
  const bound = addresses.find((address) => address.transport === transport);
  assert.ok(bound, `no ${transport} listener`);
  return bound.port;
}

void describe('DNS stub server on loopback', () => {
  let server: DnsStubServer;
  let upstream: Awaited<ReturnType<typeof startFakeUpstream>>;
  let tcpUpstream: { close(): Promise<void> };
  let udpPort: number;
  let tcpPort: number;

  before(async () => {
    upstream = await startFakeUpstream();
    tcpUpstream = await startFakeTcpUpstream(upstream.port);
    const stub = new DnsStub();
    stub.setResources([{ id: 'r1', pattern: '*.corp.example' }]);
    stub.setUpstreams([{ address: UPSTREAM_ADDRESS, port: upstream.port }]);
    server = await startDnsStubServer({ stub, listen: [{ address: STUB_ADDRESS, port: 0 }] });
    udpPort = portOf(server.addresses, 'udp');
    tcpPort = portOf(server.addresses, 'tcp');
  });

  after(async () => {
    await server?.close();
    await upstream?.close();
    await tcpUpstream?.close();
  });

  void it('answers A and AAAA for a resource over UDP and TCP with the same stable addresses', async () => {
    const udpA = await queryUdp(STUB_ADDRESS, udpPort, encodeQuery('git.corp.example', 'A'));
    const tcpA = await queryTcp(STUB_ADDRESS, tcpPort, encodeQuery('git.corp.example', 'A'));
    assert.equal(udpA.rcode, 'NOERROR');
    assert.equal(answerData(udpA).length, 4);
    assert.deepEqual(answerData(tcpA), answerData(udpA));
    const aaaa = await queryUdp(STUB_ADDRESS, udpPort, encodeQuery('git.corp.example', 'AAAA'));
    assert.ok(answerData(aaaa).every((address) => address.startsWith('fd00:2021:1111:8000:')));
    assert.equal(upstream.queries.length, 0);
  });

  void it('answers PTR for a proxy address over UDP', async () => {
    const a = await queryUdp(STUB_ADDRESS, udpPort, encodeQuery('wiki.corp.example', 'A'));
    const first = answerData(a)[0] ?? '';
    const reverse = `${first.split('.').reverse().join('.')}.in-addr.arpa`;
    const ptr = await queryUdp(STUB_ADDRESS, udpPort, encodeQuery(reverse, 'PTR'));
    assert.deepEqual(answerData(ptr), ['wiki.corp.example']);
  });

  void it('forwards a non-resource name to the upstream over UDP', async () => {
    const reply = await queryUdp(
      STUB_ADDRESS,
      udpPort,
      encodeQuery('www.example.org', 'A', 0x7777),
    );
    assert.equal(reply.id, 0x7777);
    assert.deepEqual(answerData(reply), ['203.0.113.10']);
    assert.ok(upstream.queries.includes('A www.example.org'));
  });

  void it('forwards a TXT query that arrived over TCP over TCP', async () => {
    const reply = await queryTcp(
      STUB_ADDRESS,
      tcpPort,
      encodeQuery('txt.example.org', 'TXT', 0x0303),
    );
    assert.equal(reply.id, 0x0303);
    assert.equal(reply.answers?.[0]?.type, 'TXT');
  });

  void it('forwards two queries pipelined on one TCP connection and answers both', async () => {
    const pipelined = Buffer.concat([
      frameTcpMessage(encodeQuery('first.example.org', 'TXT', 0x0a01)),
      frameTcpMessage(encodeQuery('second.example.org', 'TXT', 0x0a02)),
    ]);
    const replies = (await sendTcp(STUB_ADDRESS, tcpPort, [pipelined], 2)).map(decodeReply);
    assert.deepEqual(
      replies.map((reply) => [reply.id, reply.rcode, reply.answers?.[0]?.type]).sort(),
      [
        [0x0a01, 'NOERROR', 'TXT'],
        [0x0a02, 'NOERROR', 'TXT'],
      ],
    );
  });

  void it('answers malformed queries with FORMERR over UDP and TCP, and keeps serving', async () => {
    const garbage = Buffer.from([0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
    assert.equal(rcodeOf(await sendUdp(STUB_ADDRESS, udpPort, garbage)), 1);
    const [tcpReply] = await sendTcp(STUB_ADDRESS, tcpPort, [frameTcpMessage(garbage)]);
    assert.equal(rcodeOf(tcpReply ?? Buffer.alloc(4)), 1);
    const after = await queryUdp(
      STUB_ADDRESS,
      udpPort,
      encodeQuery('use-application-dns.net', 'A'),
    );
    assert.equal(after.rcode, 'NXDOMAIN');
  });

  void it('reassembles TCP queries split across writes and answers pipelined ones', async () => {
    const framed = Buffer.concat([
      frameTcpMessage(encodeQuery('a.corp.example', 'A', 1)),
      frameTcpMessage(encodeQuery('b.corp.example', 'AAAA', 2)),
    ]);
    const chunks = [
      framed.subarray(0, 1),
      framed.subarray(1, 17),
      framed.subarray(17, 40),
      framed.subarray(40),
    ];
    const replies = await sendTcp(STUB_ADDRESS, tcpPort, chunks, 2);
    assert.deepEqual(replies.map((reply) => dnsPacket.decode(reply).id).sort(), [1, 2]);
  });
});

void describe('DNS stub server without a reachable upstream', () => {
  void it('answers SERVFAIL within the bounded forward time', async () => {
    const silent = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, UPSTREAM_ADDRESS, resolve));
    const stub = new DnsStub({ upstreamAttemptTimeoutMs: 200, forwardTimeoutMs: 500 });
    stub.setUpstreams([
      { address: UPSTREAM_ADDRESS, port: silent.address().port },
      { address: '127.0.0.43', port: 9 },
    ]);
    const server = await startDnsStubServer({ stub, listen: [{ address: STUB_ADDRESS, port: 0 }] });
    try {
      const started = performance.now();
      const reply = await queryUdp(
        STUB_ADDRESS,
        portOf(server.addresses, 'udp'),
        encodeQuery('www.example.org', 'A'),
      );
      const elapsed = performance.now() - started;
      assert.equal(reply.rcode, 'SERVFAIL');
      assert.ok(elapsed >= 350 && elapsed < 1500, `SERVFAIL after ${elapsed.toFixed(0)} ms`);
      const tcpStarted = performance.now();
      const tcpReply = await queryTcp(
        STUB_ADDRESS,
        portOf(server.addresses, 'tcp'),
        encodeQuery('www.example.org', 'A'),
      );
      assert.equal(tcpReply.rcode, 'SERVFAIL');
      assert.ok(performance.now() - tcpStarted < 1500);
    } finally {
      await server.close();
      silent.close();
    }
  });
});
