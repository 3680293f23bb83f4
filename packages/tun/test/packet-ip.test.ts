import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { IpPacket } from '../src/packet/ip-packet.ts';
import {
  IPPROTO_AH,
  IPPROTO_DSTOPTS,
  IPPROTO_FRAGMENT,
  IPPROTO_HOPOPTS,
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_ROUTING,
  IPPROTO_TCP,
  IPPROTO_UDP,
} from '../src/packet/ip-protocol.ts';
import {
  fragmentHeaderBody,
  ipv4Address,
  ipv4Packet,
  ipv6Address,
  ipv6Packet,
  optionsHeaderBody,
  patternBytes,
  put16,
  readHexFixture,
  tcpSegment,
  TCP_ACK,
  TCP_PSH,
  udpDatagram,
  withChecksums,
} from './packet-builders.ts';

const view = new IpPacket();

function parse(packet: Uint8Array): string | null {
  return view.parse(packet, 0, packet.length);
}

/** An AH body (without next header) of the given payload-length field. */
function authenticationHeaderBody(lengthField: number): Uint8Array {
  const body = new Uint8Array((lengthField + 2) * 4 - 1);
  body[0] = lengthField;
  return body;
}

void describe('IpPacket: IPv4', () => {
  void it('exposes addresses, protocol and ports of a TCP packet', () => {
    const packet = withChecksums(
      ipv4Packet({
        source: '192.0.2.7',
        destination: '198.51.100.9',
        protocol: IPPROTO_TCP,
        payload: tcpSegment({
          sourcePort: 51000,
          destinationPort: 443,
          sequence: 0xfffffff0,
          flags: TCP_ACK | TCP_PSH,
        }),
      }),
    );

    assert.equal(parse(packet), null);
    assert.equal(view.version, 4);
    assert.equal(view.protocol, IPPROTO_TCP);
    assert.equal(view.sourceAddressText(), '192.0.2.7');
    assert.equal(view.destinationAddressText(), '198.51.100.9');
    assert.equal(view.sourcePort, 51000);
    assert.equal(view.destinationPort, 443);
    assert.equal(view.tcpSequence, 0xfffffff0);
    assert.equal(view.tcpFlags, TCP_ACK | TCP_PSH);
    assert.equal(view.tcpHeaderLength, 20);
    assert.equal(view.headerLength, 20);
    assert.equal(view.icmpType, -1);
  });

  void it('works inside a larger buffer and ignores bytes after the total length', () => {
    const packet = withChecksums(
      ipv4Packet({ protocol: IPPROTO_UDP, payload: udpDatagram(7, 9, patternBytes(11)) }),
    );
    const buffer = new Uint8Array(200).fill(0xee);
    buffer.set(packet, 50);

    assert.equal(view.parse(buffer, 50, 150), null);
    assert.equal(view.length, packet.length);
    assert.equal(view.transportOffset, 70);
    assert.equal(view.transportLength, 19);
    assert.equal(view.sourcePort, 7);
  });

  void it('compares and copies addresses as bytes', () => {
    const packet = withChecksums(
      ipv4Packet({
        source: '10.1.2.3',
        destination: '10.9.8.7',
        protocol: IPPROTO_UDP,
        payload: udpDatagram(1, 2, new Uint8Array(0)),
      }),
    );
    parse(packet);
    const target = new Uint8Array(8);

    view.copySourceAddress(target, 0);
    view.copyDestinationAddress(target, 4);

    assert.deepEqual(target, Uint8Array.of(10, 1, 2, 3, 10, 9, 8, 7));
    assert.ok(view.sourceAddressEquals(ipv4Address('10.1.2.3'), 0));
    assert.equal(view.destinationAddressEquals(ipv4Address('10.1.2.3'), 0), false);
    assert.equal(view.sourceAddressEquals(new Uint8Array(2), 0), false);
  });

  void it('reads ICMP echo identifier and sequence', () => {
    const icmp = Uint8Array.of(8, 0, 0, 0, 0xbe, 0xef, 0x00, 0x2a, 1, 2, 3);
    const packet = withChecksums(ipv4Packet({ protocol: IPPROTO_ICMP, payload: icmp }));

    assert.equal(parse(packet), null);
    assert.deepEqual(
      [view.icmpType, view.icmpCode, view.echoIdentifier, view.echoSequence, view.sourcePort],
      [8, 0, 0xbeef, 42, -1],
    );
  });

  void it('reports fragments and hides the transport header of later ones', () => {
    const first = withChecksums(
      ipv4Packet({
        protocol: IPPROTO_UDP,
        flagsAndFragmentOffset: 0x2000,
        payload: udpDatagram(1, 2, patternBytes(16)),
      }),
    );
    const later = withChecksums(
      ipv4Packet({ protocol: IPPROTO_UDP, flagsAndFragmentOffset: 3, payload: patternBytes(8) }),
    );

    assert.equal(parse(first), null);
    assert.deepEqual(
      [view.fragmented, view.moreFragments, view.fragmentOffset, view.sourcePort],
      [true, true, 0, 1],
    );
    assert.equal(parse(later), null);
    assert.deepEqual(
      [view.fragmented, view.moreFragments, view.fragmentOffset, view.sourcePort],
      [true, false, 24, -1],
    );
    assert.equal(view.hasTransportHeader, false);
  });

  void it('rejects malformed packets with a reason, never throwing', () => {
    const good = withChecksums(
      ipv4Packet({ protocol: IPPROTO_UDP, payload: udpDatagram(1, 2, patternBytes(8)) }),
    );
    const mutate = (change: (p: Uint8Array) => void, fix = true): Uint8Array => {
      const p = good.slice();
      change(p);
      if (fix) withChecksumsHeaderOnly(p);
      return p;
    };
    const cases: Array<[string, Uint8Array, number, RegExp]> = [
      ['empty', good, 0, /empty/],
      ['truncated header', good, 19, /truncated header/],
      ['IHL 4', mutate((p) => (p[0] = 0x44)), good.length, /IHL below 5/],
      ['IHL beyond buffer', mutate((p) => (p[0] = 0x4f)), good.length, /IHL beyond/],
      [
        'total length short',
        mutate((p) => put16(p, 2, 12)),
        good.length,
        /shorter than the header/,
      ],
      ['total length long', mutate((p) => put16(p, 2, 999)), good.length, /beyond the buffer/],
      ['bad checksum', mutate((p) => (p[8] = 1), false), good.length, /checksum/],
      ['fragment past 64 KiB', mutate((p) => put16(p, 6, 0x1fff)), good.length, /65535/],
      ['UDP length short', mutate((p) => put16(p, 24, 4)), good.length, /udp: length below 8/],
      ['UDP length long', mutate((p) => put16(p, 24, 200)), good.length, /udp: length beyond/],
      ['version 5', mutate((p) => (p[0] = 0x55)), good.length, /version/],
      ['truncated TCP', ipv4WithPayload(IPPROTO_TCP, patternBytes(12)), 32, /tcp: truncated/],
      [
        'TCP data offset 4',
        ipv4WithPayload(IPPROTO_TCP, tcpWithDataOffset(4)),
        40,
        /data offset below 5/,
      ],
      [
        'TCP data offset 15',
        ipv4WithPayload(IPPROTO_TCP, tcpWithDataOffset(15)),
        40,
        /data offset beyond/,
      ],
      ['truncated UDP', ipv4WithPayload(IPPROTO_UDP, patternBytes(6)), 26, /udp: truncated/],
      ['truncated ICMP', ipv4WithPayload(IPPROTO_ICMP, patternBytes(3)), 23, /icmp: truncated/],
    ];

    for (const [name, packet, length, reason] of cases) {
      assert.match(view.parse(packet, 0, length) ?? 'valid', reason, name);
    }
    assert.match(view.parse(good, 10, good.length) ?? '', /range beyond/);
    assert.match(view.parse(good, -1, 4) ?? '', /non-negative/);
    assert.match(view.parse(good, 0.5, 4) ?? '', /non-negative/);
  });

  void it('can skip the header checksum check', () => {
    const packet = ipv4Packet({
      protocol: IPPROTO_UDP,
      payload: udpDatagram(1, 2, patternBytes(8)),
    });

    assert.match(parse(packet) ?? '', /checksum/);
    assert.equal(view.parse(packet, 0, packet.length, false), null);
  });
});

void describe('IpPacket: IPv6', () => {
  void it('exposes addresses, ports and ICMPv6 echo fields', () => {
    const udp = withChecksums(
      ipv6Packet({
        source: '2001:db8::1',
        destination: 'fd00::53',
        protocol: IPPROTO_UDP,
        payload: udpDatagram(5353, 53, patternBytes(3)),
      }),
    );
    const echo = withChecksums(
      ipv6Packet({ protocol: IPPROTO_ICMPV6, payload: Uint8Array.of(128, 0, 0, 0, 0, 7, 0, 9) }),
    );

    assert.equal(parse(udp), null);
    assert.deepEqual(
      [
        view.version,
        view.sourceAddressText(),
        view.destinationAddressText(),
        view.sourcePort,
        view.destinationPort,
      ],
      [6, '2001:db8::1', 'fd00::53', 5353, 53],
    );
    assert.ok(view.sourceAddressEquals(ipv6Address('2001:db8::1'), 0));
    assert.ok(view.verifyTransportChecksum());
    assert.equal(parse(echo), null);
    assert.deepEqual([view.icmpType, view.echoIdentifier, view.echoSequence], [128, 7, 9]);
  });

  void it('walks every kind of extension header to the upper layer', () => {
    const chain: Array<[number, Uint8Array]> = [
      [IPPROTO_HOPOPTS, optionsHeaderBody(0)],
      [IPPROTO_DSTOPTS, optionsHeaderBody(1)],
      [IPPROTO_ROUTING, optionsHeaderBody(2)],
      [IPPROTO_AH, authenticationHeaderBody(4)],
      [IPPROTO_FRAGMENT, fragmentHeaderBody(0, true, 0xdeadbeef)],
      [IPPROTO_DSTOPTS, optionsHeaderBody(0)],
    ];
    const packet = ipv6Packet({
      protocol: IPPROTO_TCP,
      extensionHeaders: chain,
      payload: tcpSegment({ sourcePort: 1234 }),
    });

    assert.equal(parse(packet), null);
    assert.equal(view.protocol, IPPROTO_TCP);
    assert.equal(view.headerLength, 40 + 8 + 16 + 24 + 24 + 8 + 8);
    assert.equal(view.sourcePort, 1234);
    assert.deepEqual(
      [view.fragmented, view.moreFragments, view.fragmentId],
      [true, true, 0xdeadbeef],
    );
  });

  void it('stops at a later fragment, whose upper-layer header is elsewhere', () => {
    const packet = ipv6Packet({
      protocol: IPPROTO_UDP,
      extensionHeaders: [[IPPROTO_FRAGMENT, fragmentHeaderBody(1232, false, 5)]],
      payload: patternBytes(20),
    });

    assert.equal(parse(packet), null);
    assert.deepEqual(
      [view.fragmentOffset, view.hasTransportHeader, view.sourcePort],
      [1232, false, -1],
    );
  });

  void it('rejects hostile extension-header chains', () => {
    const payload = udpDatagram(1, 2, patternBytes(4));
    const overlong = Array.from({ length: 9 }, (): [number, Uint8Array] => [
      IPPROTO_DSTOPTS,
      optionsHeaderBody(0),
    ]);
    const lyingLength = ipv6Packet({
      protocol: IPPROTO_UDP,
      extensionHeaders: [[IPPROTO_ROUTING, optionsHeaderBody(0)]],
      payload,
    });
    lyingLength[41] = 200;
    const cases: Array<[string, Uint8Array, RegExp]> = [
      [
        'overlong chain',
        ipv6Packet({ protocol: IPPROTO_UDP, extensionHeaders: overlong, payload }),
        /longer than 8/,
      ],
      ['extension length beyond packet', lyingLength, /truncated extension header/],
      [
        'hop-by-hop not first',
        ipv6Packet({
          protocol: IPPROTO_UDP,
          extensionHeaders: [
            [IPPROTO_DSTOPTS, optionsHeaderBody(0)],
            [IPPROTO_HOPOPTS, optionsHeaderBody(0)],
          ],
          payload,
        }),
        /hop-by-hop options header not first/,
      ],
      [
        'two fragment headers',
        ipv6Packet({
          protocol: IPPROTO_UDP,
          extensionHeaders: [
            [IPPROTO_FRAGMENT, fragmentHeaderBody(0, true, 1)],
            [IPPROTO_FRAGMENT, fragmentHeaderBody(0, true, 1)],
          ],
          payload,
        }),
        /more than one fragment header/,
      ],
      [
        'chain cut short',
        ipv6Packet({ protocol: IPPROTO_HOPOPTS, payload: new Uint8Array(4) }),
        /truncated extension header/,
      ],
      [
        'truncated header',
        ipv6Packet({ protocol: IPPROTO_UDP, payload }).subarray(0, 39),
        /truncated header/,
      ],
      [
        'fragment past 64 KiB',
        ipv6Packet({
          protocol: IPPROTO_UDP,
          extensionHeaders: [[IPPROTO_FRAGMENT, fragmentHeaderBody(0xfff8, false, 1)]],
          payload,
        }),
        /65535/,
      ],
    ];

    for (const [name, packet, reason] of cases)
      assert.match(parse(packet) ?? 'valid', reason, name);
  });

  void it('rejects a payload length beyond the buffer', () => {
    const packet = ipv6Packet({
      protocol: IPPROTO_UDP,
      payload: udpDatagram(1, 2, patternBytes(4)),
    });

    assert.match(view.parse(packet, 0, packet.length - 1) ?? '', /payload length beyond/);
  });
});

void describe('IpPacket on kernel-built packets', () => {
  void it('parses every captured packet and reads its echo fields', () => {
    const echoes = readHexFixture('kernel-packets.txt').filter((packet) => {
      assert.equal(parse(packet), null);
      return view.isEcho;
    });

    assert.equal(echoes.length, 2);
    for (const echo of echoes) {
      parse(echo);
      assert.equal(view.echoSequence, 1);
      assert.ok(view.echoIdentifier >= 0);
    }
  });
});

function withChecksumsHeaderOnly(packet: Uint8Array): void {
  put16(packet, 10, 0);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += (packet[i]! << 8) | packet[i + 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  put16(packet, 10, ~sum & 0xffff);
}

function ipv4WithPayload(protocol: number, payload: Uint8Array): Uint8Array {
  const packet = ipv4Packet({ protocol, payload });
  withChecksumsHeaderOnly(packet);
  return packet;
}

function tcpWithDataOffset(dataOffset: number): Uint8Array {
  const segment = tcpSegment({});
  segment[12] = dataOffset << 4;
  return segment;
}
