import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { flowHash } from '../src/packet/flow.ts';
import {
  IPPROTO_FRAGMENT,
  IPPROTO_HOPOPTS,
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
} from '../src/packet/ip-protocol.ts';
import {
  fragmentHeaderBody,
  ipv4Packet,
  ipv6Packet,
  optionsHeaderBody,
  patternBytes,
  tcpSegment,
  udpDatagram,
} from './packet-builders.ts';

function hash(packet: Uint8Array): number {
  return flowHash(packet, 0, packet.length);
}

function v4Udp(
  source: string,
  destination: string,
  sourcePort: number,
  destinationPort: number,
): Uint8Array {
  return ipv4Packet({
    source,
    destination,
    protocol: IPPROTO_UDP,
    payload: udpDatagram(sourcePort, destinationPort, patternBytes(20)),
  });
}

function v6Tcp(
  source: string,
  destination: string,
  sourcePort: number,
  destinationPort: number,
): Uint8Array {
  return ipv6Packet({
    source,
    destination,
    protocol: IPPROTO_TCP,
    payload: tcpSegment({ sourcePort, destinationPort }),
  });
}

void describe('flowHash', () => {
  void it('hashes packets of one flow alike whatever their payload', () => {
    const a = ipv4Packet({
      protocol: IPPROTO_UDP,
      payload: udpDatagram(1, 2, patternBytes(10, 1)),
    });
    const b = ipv4Packet({
      protocol: IPPROTO_UDP,
      payload: udpDatagram(1, 2, patternBytes(900, 2)),
    });

    assert.equal(hash(a), hash(b));
    assert.notEqual(hash(a), 0);
  });

  void it('is symmetric: a reply hashes like the request', () => {
    const cases: Array<[Uint8Array, Uint8Array]> = [
      [v4Udp('10.0.0.1', '10.0.0.2', 5000, 53), v4Udp('10.0.0.2', '10.0.0.1', 53, 5000)],
      [v4Udp('10.0.0.1', '10.0.0.1', 5000, 53), v4Udp('10.0.0.1', '10.0.0.1', 53, 5000)],
      [v6Tcp('fd00::1', 'fd00::2', 40000, 443), v6Tcp('fd00::2', 'fd00::1', 443, 40000)],
      [v6Tcp('fd00::1', 'fd00::1', 40000, 443), v6Tcp('fd00::1', 'fd00::1', 443, 40000)],
    ];

    for (const [request, reply] of cases) assert.equal(hash(request), hash(reply));
  });

  void it('tells flows apart by each field of the 5-tuple', () => {
    const base = hash(v4Udp('10.0.0.1', '10.0.0.2', 5000, 53));
    const variants = [
      v4Udp('10.0.0.3', '10.0.0.2', 5000, 53),
      v4Udp('10.0.0.1', '10.0.0.3', 5000, 53),
      v4Udp('10.0.0.1', '10.0.0.2', 5001, 53),
      v4Udp('10.0.0.1', '10.0.0.2', 5000, 54),
      ipv4Packet({
        protocol: IPPROTO_TCP,
        payload: tcpSegment({ sourcePort: 5000, destinationPort: 53 }),
      }),
    ];

    for (const variant of variants) assert.notEqual(hash(variant), base);
    assert.notEqual(
      hash(v6Tcp('fd00::1', 'fd00::2', 1, 2)),
      hash(v6Tcp('fd00::1', 'fd00::3', 1, 2)),
    );
  });

  void it('spreads many flows evenly over buckets', () => {
    const buckets = new Array<number>(4).fill(0);
    for (let port = 0; port < 4000; port++) {
      buckets[hash(v4Udp('10.0.0.1', '10.0.0.2', 10000 + port, 443)) % 4]!++;
    }

    for (const count of buckets) assert.ok(count > 850 && count < 1150, `bucket ${count}`);
  });

  void it('leaves ports out for fragments so all fragments of a datagram hash alike', () => {
    const first = ipv4Packet({
      protocol: IPPROTO_UDP,
      flagsAndFragmentOffset: 0x2000,
      payload: udpDatagram(5000, 53, patternBytes(16)),
    });
    const later = ipv4Packet({
      protocol: IPPROTO_UDP,
      flagsAndFragmentOffset: 3,
      payload: patternBytes(24),
    });
    const v6First = ipv6Packet({
      protocol: IPPROTO_UDP,
      extensionHeaders: [[IPPROTO_FRAGMENT, fragmentHeaderBody(0, true, 7)]],
      payload: udpDatagram(5000, 53, patternBytes(16)),
    });
    const v6Later = ipv6Packet({
      protocol: IPPROTO_UDP,
      extensionHeaders: [[IPPROTO_FRAGMENT, fragmentHeaderBody(24, false, 7)]],
      payload: patternBytes(24),
    });

    assert.equal(hash(first), hash(later));
    assert.equal(hash(v6First), hash(v6Later));
  });

  void it('finds IPv6 ports behind extension headers', () => {
    const plain = v6Tcp('fd00::1', 'fd00::2', 40000, 443);
    const withOptions = ipv6Packet({
      protocol: IPPROTO_TCP,
      extensionHeaders: [[IPPROTO_HOPOPTS, optionsHeaderBody(0)]],
      payload: tcpSegment({ sourcePort: 40000, destinationPort: 443 }),
    });
    const otherPort = ipv6Packet({
      protocol: IPPROTO_TCP,
      extensionHeaders: [[IPPROTO_HOPOPTS, optionsHeaderBody(0)]],
      payload: tcpSegment({ sourcePort: 40001, destinationPort: 443 }),
    });

    assert.equal(hash(withOptions), hash(plain));
    assert.notEqual(hash(otherPort), hash(plain));
  });

  void it('hashes portless protocols by addresses and protocol', () => {
    const icmp = ipv4Packet({ protocol: IPPROTO_ICMP, payload: patternBytes(16) });
    const icmpv6 = ipv6Packet({ protocol: IPPROTO_ICMPV6, payload: patternBytes(16) });

    assert.notEqual(hash(icmp), 0);
    assert.notEqual(hash(icmpv6), 0);
    assert.equal(
      hash(icmp),
      hash(ipv4Packet({ protocol: IPPROTO_ICMP, payload: patternBytes(40, 9) })),
    );
  });

  void it('hashes a packet inside a larger buffer by its offset', () => {
    const packet = v4Udp('10.0.0.1', '10.0.0.2', 5000, 53);
    const buffer = new Uint8Array(packet.length + 30);
    buffer.set(packet, 13);

    assert.equal(flowHash(buffer, 13, packet.length), hash(packet));
  });

  void it('returns 0 for unparseable input', () => {
    const v4 = v4Udp('10.0.0.1', '10.0.0.2', 5000, 53);
    const badIhl = v4.slice();
    badIhl[0] = 0x44;
    const longIhl = v4.slice();
    longIhl[0] = 0x4f;
    const overlongChain = ipv6Packet({
      protocol: IPPROTO_UDP,
      extensionHeaders: Array.from(
        { length: 20 },
        () => [60, optionsHeaderBody(0)] as [number, Uint8Array],
      ),
      payload: udpDatagram(1, 2, patternBytes(4)),
    });
    const cases: Array<[string, Uint8Array, number, number]> = [
      ['empty', new Uint8Array(0), 0, 0],
      ['version 5', Uint8Array.of(0x50, 0, 0, 0), 0, 4],
      ['short v4', v4, 0, 19],
      ['short v6', v6Tcp('fd00::1', 'fd00::2', 1, 2), 0, 39],
      ['IHL below 5', badIhl, 0, badIhl.length],
      ['IHL beyond the buffer', longIhl, 0, 40],
      ['range beyond the buffer', v4, 10, v4.length],
      ['negative offset', v4, -1, v4.length],
      ['overlong IPv6 chain', overlongChain, 0, overlongChain.length],
    ];

    for (const [name, packet, offset, length] of cases) {
      assert.equal(flowHash(packet, offset, length), 0, name);
    }
  });
});
