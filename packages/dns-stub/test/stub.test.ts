import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import dnsPacket from 'dns-packet';

import type { ForwardRequest, QueryOutcome } from '../src/stub.ts';
import { DnsStub } from '../src/stub.ts';
import type { DecodedReply } from './dns-client.ts';
import { answerData, decodeReply, encodeQuery, rcodeOf } from './dns-client.ts';

const UPSTREAM_A = { address: '192.0.2.53', port: 53 };
const UPSTREAM_B = { address: '2001:db8::53', port: 53 };

function stubWithResources(): DnsStub {
  const stub = new DnsStub({ randomForwardId: () => 0x4242 });
  stub.setResources([
    { id: 'r-app', pattern: 'app.corp.example' },
    { id: 'r-wild', pattern: '**.internal.example' },
  ]);
  stub.setUpstreams([UPSTREAM_A, UPSTREAM_B]);
  return stub;
}

function replyOf(outcome: QueryOutcome): DecodedReply {
  assert.equal(outcome.kind, 'reply');
  return decodeReply(outcome.message);
}

function forwardOf(outcome: QueryOutcome): ForwardRequest {
  assert.equal(outcome.kind, 'forward');
  return outcome.forward;
}

function upstreamReply(forward: ForwardRequest, data = '198.51.100.7'): Buffer {
  const query = dnsPacket.decode(Buffer.from(forward.message));
  return dnsPacket.encode({
    type: 'response',
    id: forward.forwardId,
    flags: dnsPacket.RECURSION_AVAILABLE,
    questions: query.questions,
    answers: [{ type: 'A', name: query.questions?.[0]?.name ?? '', ttl: 60, data }],
  });
}

void describe('DnsStub: resource names', () => {
  void it('answers A and AAAA with four stable proxy addresses each, TTL 1 s', () => {
    const stub = stubWithResources();
    const a = replyOf(stub.handleQuery(encodeQuery('app.corp.example', 'A', 7), 0));
    assert.equal(a.id, 7);
    assert.equal(a.flag_rd, true);
    assert.deepEqual(answerData(a), ['100.96.0.1', '100.96.0.2', '100.96.0.3', '100.96.0.4']);
    assert.ok((a.answers ?? []).every((answer) => 'ttl' in answer && answer.ttl === 1));
    const aaaa = replyOf(stub.handleQuery(encodeQuery('APP.corp.example', 'AAAA'), 0));
    assert.deepEqual(answerData(aaaa), [
      'fd00:2021:1111:8000::1',
      'fd00:2021:1111:8000::2',
      'fd00:2021:1111:8000::3',
      'fd00:2021:1111:8000::4',
    ]);
    const again = replyOf(stub.handleQuery(encodeQuery('app.corp.example.', 'A'), 5000));
    assert.deepEqual(answerData(again), answerData(a));
  });

  void it('gives each matching name its own addresses and keeps them when the resources change', () => {
    const stub = stubWithResources();
    const first = answerData(replyOf(stub.handleQuery(encodeQuery('db.internal.example', 'A'), 0)));
    const second = answerData(
      replyOf(stub.handleQuery(encodeQuery('a.b.internal.example', 'A'), 0)),
    );
    assert.equal(new Set([...first, ...second]).size, 8);
    stub.setResources([{ id: 'r-db', pattern: 'db.internal.example' }]);
    assert.deepEqual(
      answerData(replyOf(stub.handleQuery(encodeQuery('db.internal.example', 'A'), 0))),
      first,
    );
    assert.equal(stub.lookupProxyAddress(first[0] ?? '')?.resourceId, 'r-db');
  });

  void describe('answers only the families the tunnel has an address of, else NODATA', () => {
    const cases: Array<{ ipv4: boolean; ipv6: boolean; type: 'A' | 'AAAA'; answers: number }> = [
      { ipv4: true, ipv6: true, type: 'A', answers: 4 },
      { ipv4: true, ipv6: true, type: 'AAAA', answers: 4 },
      { ipv4: true, ipv6: false, type: 'A', answers: 4 },
      { ipv4: true, ipv6: false, type: 'AAAA', answers: 0 },
      { ipv4: false, ipv6: true, type: 'A', answers: 0 },
      { ipv4: false, ipv6: true, type: 'AAAA', answers: 4 },
    ];
    for (const { ipv4, ipv6, type, answers } of cases) {
      void it(`ipv4 ${ipv4}, ipv6 ${ipv6}: ${type} gets ${answers} records`, () => {
        const stub = new DnsStub({ proxyFamilies: { ipv4, ipv6 } });
        stub.setResources([{ id: 'r-app', pattern: 'app.corp.example' }]);
        const reply = replyOf(stub.handleQuery(encodeQuery('app.corp.example', type), 0));
        assert.equal(reply.rcode, 'NOERROR');
        assert.equal(answerData(reply).length, answers);
      });
    }
  });

  void it('answers other types for a resource name with NOERROR and no records', () => {
    const stub = stubWithResources();
    const txt = replyOf(stub.handleQuery(encodeQuery('app.corp.example', 'TXT'), 0));
    assert.equal(txt.rcode, 'NOERROR');
    assert.deepEqual(txt.answers, []);
  });

  void it('never hands out the sentinel range', () => {
    const stub = new DnsStub({ ipv4ProxyRange: '100.100.96.0/19', addressesPerName: 4096 });
    stub.setResources([{ id: 'r', pattern: '*.example' }]);
    const addresses = answerData(replyOf(stub.handleQuery(encodeQuery('h.example', 'A'), 0)));
    assert.equal(addresses.length, 4096);
    assert.ok(addresses.includes('100.100.110.255'));
    assert.ok(addresses.includes('100.100.112.255'));
    assert.ok(!addresses.some((address) => address.startsWith('100.100.111.')));
  });

  void it('answers SERVFAIL when the proxy range is used up', () => {
    const stub = new DnsStub({ ipv4ProxyRange: '100.96.0.0/30', addressesPerName: 2 });
    stub.setResources([{ id: 'r', pattern: '*.example' }]);
    assert.equal(replyOf(stub.handleQuery(encodeQuery('one.example', 'A'), 0)).rcode, 'NOERROR');
    assert.equal(replyOf(stub.handleQuery(encodeQuery('two.example', 'A'), 0)).rcode, 'SERVFAIL');
  });
});

void describe('DnsStub: PTR', () => {
  void it('answers PTR for handed-out proxy addresses, IPv4 and IPv6', () => {
    const stub = stubWithResources();
    stub.handleQuery(encodeQuery('app.corp.example', 'A'), 0);
    const v4 = replyOf(stub.handleQuery(encodeQuery('2.0.96.100.in-addr.arpa', 'PTR'), 0));
    assert.deepEqual(answerData(v4), ['app.corp.example']);
    const nibbles = '2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.1.1.1.1.1.2.0.2.0.0.d.f.ip6.arpa';
    const v6 = replyOf(stub.handleQuery(encodeQuery(nibbles, 'PTR'), 0));
    assert.deepEqual(answerData(v6), ['app.corp.example']);
  });

  void it('answers NXDOMAIN for a proxy address not handed out, and forwards other PTRs', () => {
    const stub = stubWithResources();
    assert.equal(
      replyOf(stub.handleQuery(encodeQuery('9.9.96.100.in-addr.arpa', 'PTR'), 0)).rcode,
      'NXDOMAIN',
    );
    assert.equal(stub.handleQuery(encodeQuery('1.2.0.192.in-addr.arpa', 'PTR'), 0).kind, 'forward');
  });
});

void describe('DnsStub: special and malformed queries', () => {
  void it('answers use-application-dns.net with NXDOMAIN', () => {
    const reply = replyOf(
      stubWithResources().handleQuery(encodeQuery('use-application-dns.net', 'A'), 0),
    );
    assert.equal(reply.rcode, 'NXDOMAIN');
  });

  const malformed: Array<[what: string, bytes: Buffer, rcode: number]> = [
    ['a header cut short', Buffer.from([0xab, 0xcd, 0x01]), 1],
    ['a question cut short', encodeQuery('app.corp.example', 'A', 0xabcd).subarray(0, 20), 1],
    ['two questions', twoQuestions(), 1],
    ['no question', Buffer.from([0xab, 0xcd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 1],
    ['a label pointer loop', pointerLoop(), 1],
    ['opcode STATUS', withFlags(encodeQuery('app.corp.example', 'A', 0xabcd), 0x1000), 4],
  ];
  for (const [what, bytes, rcode] of malformed) {
    void it(`answers ${what} with rcode ${rcode} and the query's id`, () => {
      const outcome = stubWithResources().handleQuery(bytes, 0);
      assert.equal(outcome.kind, 'reply');
      assert.equal(rcodeOf(outcome.message), rcode);
      assert.equal(Buffer.from(outcome.message).readUInt16BE(0), 0xabcd);
      assert.equal(Buffer.from(outcome.message)[2]! & 0x80, 0x80);
    });
  }

  void it('drops what cannot be answered: one byte, and responses', () => {
    const stub = stubWithResources();
    assert.equal(stub.handleQuery(Buffer.from([1]), 0).kind, 'drop');
    assert.equal(
      stub.handleQuery(withFlags(encodeQuery('x.example', 'A'), 0x8000), 0).kind,
      'drop',
    );
  });
});

void describe('DnsStub: forwarding', () => {
  void it('forwards under a fresh id and maps the reply back to the client id', () => {
    const stub = stubWithResources();
    const forward = forwardOf(stub.handleQuery(encodeQuery('www.example.org', 'A', 0x0101), 10));
    assert.equal(forward.forwardId, 0x4242);
    assert.deepEqual(forward.upstream, UPSTREAM_A);
    assert.equal(Buffer.from(forward.message).readUInt16BE(0), 0x4242);
    const reply = stub.handleUpstreamReply(forward.forwardId, UPSTREAM_A, upstreamReply(forward));
    assert.ok(reply);
    const decoded = dnsPacket.decode(Buffer.from(reply));
    assert.equal(decoded.id, 0x0101);
    assert.deepEqual(answerData(decoded), ['198.51.100.7']);
    assert.equal(stub.pendingForwards, 0);
    assert.equal(stub.nextDeadline(), undefined);
  });

  void it('ignores replies from elsewhere, for another question, or late', () => {
    const stub = stubWithResources();
    const forward = forwardOf(stub.handleQuery(encodeQuery('www.example.org', 'A'), 0));
    assert.equal(
      stub.handleUpstreamReply(
        forward.forwardId,
        { address: '203.0.113.9', port: 53 },
        upstreamReply(forward),
      ),
      undefined,
    );
    const otherQuestion = dnsPacket.encode({
      type: 'response',
      id: forward.forwardId,
      questions: [{ type: 'A', name: 'evil.example', class: 'IN' }],
    });
    assert.equal(stub.handleUpstreamReply(forward.forwardId, UPSTREAM_A, otherQuestion), undefined);
    assert.equal(
      stub.handleUpstreamReply(forward.forwardId, UPSTREAM_A, Buffer.from([1, 2, 3])),
      undefined,
    );
    assert.ok(stub.handleUpstreamReply(forward.forwardId, UPSTREAM_A, upstreamReply(forward)));
    assert.equal(
      stub.handleUpstreamReply(forward.forwardId, UPSTREAM_A, upstreamReply(forward)),
      undefined,
    );
  });

  void it('tries the next upstream after 1 s, then answers SERVFAIL', () => {
    const stub = stubWithResources();
    const forward = forwardOf(stub.handleQuery(encodeQuery('www.example.org', 'A', 0x0202), 100));
    assert.equal(stub.nextDeadline(), 1100);
    assert.deepEqual(stub.handleTimeouts(1099), []);
    const [retry] = stub.handleTimeouts(1100);
    assert.equal(retry?.kind, 'forward');
    assert.deepEqual(retry.kind === 'forward' && retry.forward.upstream, UPSTREAM_B);
    assert.equal(stub.nextDeadline(), 2100);
    const [failure] = stub.handleTimeouts(2100);
    assert.equal(failure?.kind, 'reply');
    assert.equal(failure.kind === 'reply' && failure.forwardId, forward.forwardId);
    const decoded = decodeReply(failure.kind === 'reply' ? failure.message : Buffer.alloc(0));
    assert.equal(decoded.id, 0x0202);
    assert.equal(decoded.rcode, 'SERVFAIL');
    assert.equal(stub.pendingForwards, 0);
  });

  void it('accepts the first upstream answering after a retry', () => {
    const stub = stubWithResources();
    const forward = forwardOf(stub.handleQuery(encodeQuery('www.example.org', 'A'), 0));
    stub.handleTimeouts(1000);
    assert.ok(stub.handleUpstreamReply(forward.forwardId, UPSTREAM_A, upstreamReply(forward)));
  });

  void it('answers SERVFAIL at once without upstreams', () => {
    const stub = new DnsStub();
    assert.equal(
      replyOf(stub.handleQuery(encodeQuery('www.example.org', 'A'), 0)).rcode,
      'SERVFAIL',
    );
  });

  void it('keeps forward ids unique while they are pending', () => {
    const stub = stubWithResources();
    const ids = [1, 2, 3].map(
      (n) => forwardOf(stub.handleQuery(encodeQuery(`h${n}.example.org`, 'A'), 0)).forwardId,
    );
    assert.equal(new Set(ids).size, 3);
  });
});

function withFlags(message: Buffer, flags: number): Buffer {
  const copy = Buffer.from(message);
  copy.writeUInt16BE(copy.readUInt16BE(2) | flags, 2);
  return copy;
}

function twoQuestions(): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: 0xabcd,
    questions: [
      { type: 'A', name: 'a.example', class: 'IN' },
      { type: 'A', name: 'b.example', class: 'IN' },
    ],
  });
}

function pointerLoop(): Buffer {
  const header = Buffer.from([0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
  return Buffer.concat([header, Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
}
