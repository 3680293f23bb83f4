import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import dnsPacket from 'dns-packet';
import type { Answer } from 'dns-packet';

import type { DnsStubOptions, ForwardRequest, QueryOutcome } from '../src/stub.ts';
import {
  DEFAULT_MAX_PENDING_FORWARDS,
  DEFAULT_MAX_PENDING_FORWARDS_PER_CLIENT,
  DEFAULT_PROXY_ADDRESS_IDLE_MS,
  DEFAULT_PROXY_ADDRESS_QUARANTINE_MS,
  DnsStub,
  RECLAIM_BUDGET,
} from '../src/stub.ts';
import type { DecodedReply } from './dns-client.ts';
import { answerData, decodeReply, encodeQuery } from './dns-client.ts';

const IDLE = DEFAULT_PROXY_ADDRESS_IDLE_MS;
const QUARANTINE = DEFAULT_PROXY_ADDRESS_QUARANTINE_MS;
const LAN_UPSTREAM = { address: '192.168.1.1', port: 53 };
const TUNNEL_UPSTREAM = { address: '10.0.0.53', port: 53 };

function wildcardStub(options: DnsStubOptions = {}): DnsStub {
  const stub = new DnsStub(options);
  stub.setResources([
    { id: 'r-wild', pattern: '*.corp.example' },
    { id: 'r-other', pattern: '*.other.example' },
  ]);
  return stub;
}

function replyOf(outcome: QueryOutcome): DecodedReply {
  assert.equal(outcome.kind, 'reply');
  return decodeReply(outcome.message);
}

function ask(stub: DnsStub, name: string, now: number, client = '127.0.0.1'): DecodedReply {
  return replyOf(stub.handleQuery(encodeQuery(name, 'A'), now, client));
}

void describe('DnsStub: proxy addresses are taken back when idle', () => {
  void it('reclaims a name after IDLE without queries or packets, once its TTL has passed', () => {
    const stub = wildcardStub();
    const [first] = answerData(ask(stub, 'junk1.corp.example', 0));
    assert.equal(stub.nextDeadline(), IDLE);
    stub.handleTimeouts(IDLE - 1);
    assert.equal(stub.lookupProxyAddress(first ?? '')?.name, 'junk1.corp.example');
    stub.handleTimeouts(IDLE);
    assert.equal(stub.lookupProxyAddress(first ?? ''), undefined);
    assert.deepEqual(
      { assignments: stub.stats.assignments, reclaimed: stub.stats.reclaimed },
      { assignments: 0, reclaimed: 1 },
    );
    assert.equal(stub.stats.quarantined, 1);
    assert.equal(stub.nextDeadline(), undefined);
  });

  void it('keeps a name that is still asked for', () => {
    const stub = wildcardStub();
    const addresses = answerData(ask(stub, 'app.corp.example', 0));
    ask(stub, 'app.corp.example', IDLE / 2);
    stub.handleTimeouts(IDLE);
    assert.deepEqual(answerData(ask(stub, 'app.corp.example', IDLE + 1)), addresses);
    assert.equal(stub.stats.reclaimed, 0);
  });

  void it('keeps a name whose addresses carried packets lately (the data path), asked again IDLE later', () => {
    let lastPacketAt = -Infinity;
    const probed: string[] = [];
    const stub = wildcardStub({
      addressIdleMs: (address) => {
        probed.push(address);
        return address === '100.96.0.3' ? now - lastPacketAt : Infinity;
      },
    });
    let now = 0;
    const addresses = answerData(ask(stub, 'db.corp.example', now));
    assert.ok(addresses.includes('100.96.0.3'));
    lastPacketAt = IDLE - 5000;
    now = IDLE;
    stub.handleTimeouts(now);
    assert.ok(probed.includes('100.96.0.3'), 'the data path was asked');
    assert.equal(stub.lookupProxyAddress('100.96.0.1')?.name, 'db.corp.example');
    assert.equal(stub.nextDeadline(), 2 * IDLE);
    now = 2 * IDLE;
    stub.handleTimeouts(now);
    assert.equal(stub.lookupProxyAddress('100.96.0.1'), undefined);
  });

  void it('hands a reclaimed address out again only after the quarantine', () => {
    const stub = wildcardStub({
      ipv4ProxyRange: '100.96.0.0/29',
      ipv6ProxyRange: 'fd00::/125',
      addressesPerName: 3,
    });
    const first = answerData(ask(stub, 'a.corp.example', 0));
    assert.equal(answerData(ask(stub, 'b.corp.example', 0)).length, 3);
    assert.equal(ask(stub, 'c.corp.example', 1).rcode, 'SERVFAIL');
    assert.equal(stub.stats.refused['range-exhausted'], 1);
    ask(stub, 'b.corp.example', IDLE / 2);
    stub.handleTimeouts(IDLE);
    assert.equal(stub.lookupProxyAddress(first[0] ?? ''), undefined);
    assert.equal(ask(stub, 'c.corp.example', IDLE + QUARANTINE - 1).rcode, 'SERVFAIL');
    assert.deepEqual(answerData(ask(stub, 'c.corp.example', IDLE + QUARANTINE)), first);
    assert.equal(stub.lookupProxyAddress(first[0] ?? '')?.name, 'c.corp.example');
  });

  void it('reclaims at most a bounded number per call and comes back at once for the rest', () => {
    const stub = wildcardStub({ clientQueryBurst: 10_000 });
    const names = RECLAIM_BUDGET + 500;
    for (let n = 0; n < names; n++) ask(stub, `n${n}.corp.example`, 0);
    stub.handleTimeouts(IDLE);
    assert.equal(stub.stats.reclaimed, RECLAIM_BUDGET);
    assert.equal(stub.nextDeadline(), IDLE);
    stub.handleTimeouts(IDLE);
    assert.equal(stub.stats.reclaimed, names);
  });
});

void describe('DnsStub: caps and rate limits', () => {
  void it('caps the names with proxy addresses per DNS resource; other resources and known names still answer', () => {
    const stub = wildcardStub({ maxAssignmentsPerResource: 2 });
    const a = answerData(ask(stub, 'a.corp.example', 0));
    ask(stub, 'b.corp.example', 0);
    assert.equal(ask(stub, 'c.corp.example', 0).rcode, 'SERVFAIL');
    assert.equal(stub.stats.refused['assignment-cap'], 1);
    assert.deepEqual(answerData(ask(stub, 'a.corp.example', 0)), a);
    assert.equal(ask(stub, 'x.other.example', 0).rcode, 'NOERROR');
    stub.handleTimeouts(IDLE);
    assert.equal(ask(stub, 'c.corp.example', IDLE).rcode, 'NOERROR', 'room again after reclaiming');
  });

  void it('rate-limits each client for new names and PTR of proxy addresses with REFUSED; known names are free', () => {
    const stub = wildcardStub({ clientQueriesPerSecond: 2, clientQueryBurst: 3 });
    for (const n of [1, 2, 3]) assert.equal(ask(stub, `n${n}.corp.example`, 0).rcode, 'NOERROR');
    assert.equal(ask(stub, 'n4.corp.example', 0).rcode, 'REFUSED');
    assert.equal(ask(stub, 'n1.corp.example', 0).rcode, 'NOERROR');
    const ptr = stub.handleQuery(encodeQuery('1.0.96.100.in-addr.arpa', 'PTR'), 0, '127.0.0.1');
    assert.equal(replyOf(ptr).rcode, 'REFUSED');
    assert.equal(
      ask(stub, 'n4.corp.example', 0, '100.100.111.1').rcode,
      'NOERROR',
      'another client',
    );
    assert.equal(ask(stub, 'n5.corp.example', 500).rcode, 'NOERROR', 'one token after 0.5 s');
    assert.equal(ask(stub, 'n6.corp.example', 500).rcode, 'REFUSED');
    assert.equal(stub.stats.refused['rate-limited'], 3);
  });
});

void describe('DnsStub: DNS rebinding', () => {
  function forwardOf(outcome: QueryOutcome): ForwardRequest {
    assert.equal(outcome.kind, 'forward');
    return outcome.forward;
  }

  function answer(forward: ForwardRequest, answers: Answer[]): Buffer {
    const query = dnsPacket.decode(Buffer.from(forward.message));
    return dnsPacket.encode({
      type: 'response',
      id: forward.forwardId,
      flags: dnsPacket.RECURSION_AVAILABLE,
      questions: query.questions,
      answers,
    });
  }

  function rebindingStub(upstream: typeof LAN_UPSTREAM): DnsStub {
    const stub = wildcardStub({
      isTunnelled: (address) => address.startsWith('10.') || address.startsWith('fd10:'),
    });
    stub.setUpstreams([upstream]);
    return stub;
  }

  const cases: Array<[what: string, upstream: typeof LAN_UPSTREAM, data: string, ok: boolean]> = [
    ['a public address from the LAN resolver', LAN_UPSTREAM, '198.51.100.7', true],
    ['a tunnelled address from the LAN resolver', LAN_UPSTREAM, '10.1.2.3', false],
    ['a tunnelled IPv6 address from the LAN resolver', LAN_UPSTREAM, 'fd10::3', false],
    ['a tunnelled address from a resolver inside the tunnel', TUNNEL_UPSTREAM, '10.1.2.3', true],
    ['a proxy address from the LAN resolver', LAN_UPSTREAM, '100.96.0.9', false],
    ['a proxy address from a resolver inside the tunnel', TUNNEL_UPSTREAM, '100.96.0.9', false],
  ];
  for (const [what, upstream, data, ok] of cases) {
    void it(`${ok ? 'passes' : 'answers SERVFAIL for'} ${what}`, () => {
      const stub = rebindingStub(upstream);
      const forward = forwardOf(stub.handleQuery(encodeQuery('www.example.org', 'A', 9), 0));
      const type = data.includes(':') ? 'AAAA' : 'A';
      const reply = stub.handleUpstreamReply(
        forward.forwardId,
        upstream,
        answer(forward, [
          { type: 'CNAME', name: 'www.example.org', ttl: 60, data: 'x.example.org' },
          { type, name: 'x.example.org', ttl: 60, data },
        ]),
      );
      assert.ok(reply);
      const decoded = decodeReply(reply);
      assert.equal(decoded.id, 9);
      assert.equal(decoded.rcode, ok ? 'NOERROR' : 'SERVFAIL');
      assert.equal(stub.stats.refused.rebinding, ok ? 0 : 1);
      assert.equal(stub.pendingForwards, 0);
    });
  }
});

void describe('DnsStub: pending forwards per client', () => {
  function forwardStub(): DnsStub {
    const stub = wildcardStub({ maxPendingForwards: 8, maxPendingForwardsPerClient: 2 });
    stub.setUpstreams([LAN_UPSTREAM]);
    return stub;
  }

  function forward(stub: DnsStub, n: number, client: string, now = 0): QueryOutcome {
    return stub.handleQuery(encodeQuery(`q${n}.example.org`, 'A', n), now, client);
  }

  void it('one client whose queries are never answered holds at most its share; others still forward', () => {
    const stub = forwardStub();
    assert.equal(forward(stub, 1, '127.0.0.0/8').kind, 'forward');
    assert.equal(forward(stub, 2, '127.0.0.0/8').kind, 'forward');
    assert.equal(replyOf(forward(stub, 3, '127.0.0.0/8')).rcode, 'SERVFAIL');
    assert.equal(stub.stats.refused['client-forward-limit'], 1);
    assert.equal(stub.stats.refused['forward-limit'], 0);
    assert.equal(forward(stub, 4, '192.168.1.20').kind, 'forward', 'another client');
    assert.equal(stub.pendingForwards, 3);
  });

  void it('gives a client its share back as its forwards are answered or time out', () => {
    const stub = forwardStub();
    const first = forward(stub, 1, 'a');
    assert.ok(first.kind === 'forward');
    forward(stub, 2, 'a', 10);
    assert.equal(replyOf(forward(stub, 3, 'a', 10)).rcode, 'SERVFAIL');
    const query = dnsPacket.decode(Buffer.from(first.forward.message));
    const reply = dnsPacket.encode({
      type: 'response',
      id: first.forward.forwardId,
      questions: query.questions,
    });
    assert.ok(stub.handleUpstreamReply(first.forward.forwardId, LAN_UPSTREAM, reply));
    assert.equal(forward(stub, 5, 'a', 20).kind, 'forward', 'answered: room for one');
    const timedOut = stub.handleTimeouts(10_000).filter((event) => event.kind === 'reply');
    assert.equal(timedOut.length, 2);
    assert.equal(stub.pendingForwards, 0);
    assert.equal(forward(stub, 6, 'a', 10_000).kind, 'forward', 'timed out: room again');
    assert.equal(forward(stub, 7, 'a', 10_000).kind, 'forward');
  });

  void it('still caps all clients together', () => {
    const stub = forwardStub();
    for (let n = 0; n < 8; n++) assert.equal(forward(stub, n, `client${n >> 1}`).kind, 'forward');
    assert.equal(replyOf(forward(stub, 9, 'client9')).rcode, 'SERVFAIL');
    assert.equal(stub.stats.refused['forward-limit'], 1);
  });

  void it('lets one client hold a quarter of the pending forwards by default', () => {
    const stub = wildcardStub();
    stub.setUpstreams([LAN_UPSTREAM]);
    assert.equal(DEFAULT_MAX_PENDING_FORWARDS_PER_CLIENT, DEFAULT_MAX_PENDING_FORWARDS / 4);
    for (let n = 0; n < DEFAULT_MAX_PENDING_FORWARDS_PER_CLIENT; n++)
      assert.equal(forward(stub, n, '127.0.0.0/8').kind, 'forward');
    assert.equal(replyOf(forward(stub, 1000, '127.0.0.0/8')).rcode, 'SERVFAIL');
    assert.equal(stub.stats.refused['client-forward-limit'], 1);
  });
});
