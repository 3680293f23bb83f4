import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  fixIpv4HeaderChecksum,
  fixTransportChecksum,
  internetChecksum,
  ipv4HeaderChecksum,
  onesComplementSum,
  transportChecksum,
  transportChecksumField,
  updateChecksum16,
  updateChecksum32,
  verifyIpv4HeaderChecksum,
  verifyTransportChecksum,
} from '../src/packet/checksum.ts';
import { IpPacket } from '../src/packet/ip-packet.ts';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP } from '../src/packet/ip-protocol.ts';
import {
  ipv4Packet,
  ipv6Packet,
  patternBytes,
  put16,
  readHexFixture,
  tcpSegment,
  udpDatagram,
  withChecksums,
} from './packet-builders.ts';

const kernelPackets = readHexFixture('kernel-packets.txt');

function checksumAt(packet: Uint8Array, at: number): number {
  return (packet[at]! << 8) | packet[at + 1]!;
}

void describe('checksums against packets the Linux kernel built', () => {
  void it('has TCP, UDP, ICMP and ICMPv6 over both IP versions to check', () => {
    const view = new IpPacket();
    const seen = new Set<string>();
    for (const packet of kernelPackets) {
      assert.equal(view.parse(packet, 0, packet.length), null);
      seen.add(`${view.version}/${view.protocol}`);
    }

    for (const kind of ['4/6', '4/17', '4/1', '6/6', '6/17', '6/58'])
      assert.ok(seen.has(kind), kind);
  });

  void it('verifies every captured checksum and recomputes each one identically', () => {
    const view = new IpPacket();
    for (const packet of kernelPackets) {
      view.parse(packet, 0, packet.length);
      const field = view.transportOffset + transportChecksumField(view.protocol);
      const stored = checksumAt(packet, field);

      assert.ok(view.verifyTransportChecksum(), packet.length.toString());
      assert.equal(
        transportChecksum(packet, 0, view.transportOffset, view.transportLength, view.protocol),
        stored,
      );
      if (view.version === 4) {
        assert.ok(verifyIpv4HeaderChecksum(packet, 0, view.headerLength));
        assert.equal(ipv4HeaderChecksum(packet, 0, view.headerLength), checksumAt(packet, 10));
      }
    }
  });

  void it('rewrites the same bytes when fixing an already correct packet', () => {
    for (const original of kernelPackets) {
      const packet = original.slice();
      const view = new IpPacket();
      view.parse(packet, 0, packet.length);
      packet[view.transportOffset + transportChecksumField(view.protocol)]! ^= 0x5a;
      packet[10]! ^= view.version === 4 ? 0x33 : 0;

      view.fixChecksums();

      assert.deepEqual(packet, original);
    }
  });

  void it('rejects a captured packet with one payload bit flipped', () => {
    const view = new IpPacket();
    for (const original of kernelPackets) {
      const packet = original.slice();
      view.parse(packet, 0, packet.length);
      packet[packet.length - 1]! ^= 0x01;

      assert.equal(view.verifyTransportChecksum(), false);
    }
  });
});

void describe('internet checksum', () => {
  void it('matches the RFC 1071 §3 worked example', () => {
    const data = Uint8Array.of(0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7);

    assert.equal(onesComplementSum(data, 0, data.length), 0xddf2);
    assert.equal(internetChecksum(data, 0, data.length), 0x220d);
  });

  void it('pads an odd trailing byte with zero and honours the range', () => {
    const data = Uint8Array.of(0xff, 0x12, 0x34, 0x56, 0xff);

    assert.equal(onesComplementSum(data, 1, 3), 0x1234 + 0x5600);
  });

  void it('updates incrementally exactly as a full recomputation (RFC 1624)', () => {
    const cases: Array<[number, number]> = [
      [0x0000, 0xffff],
      [0xffff, 0x0000],
      [0x1234, 0x1234],
      [0x8000, 0x7fff],
      [0xabcd, 0x0001],
    ];
    for (const [before, after] of cases) {
      const data = patternBytes(64, before + 3);
      put16(data, 20, before);
      const original = internetChecksum(data, 0, data.length);
      put16(data, 20, after);

      assert.equal(
        updateChecksum16(original, before, after),
        internetChecksum(data, 0, data.length),
      );
    }
  });

  void it('updates a 32-bit field such as an address incrementally', () => {
    const packet = withChecksums(
      ipv4Packet({ protocol: IPPROTO_UDP, payload: udpDatagram(1, 2, patternBytes(9)) }),
    );
    const old =
      ((packet[16]! << 24) | (packet[17]! << 16) | (packet[18]! << 8) | packet[19]!) >>> 0;
    const replacement = 0xc0a80109;
    packet.set([0xc0, 0xa8, 0x01, 0x09], 16);

    put16(packet, 10, updateChecksum32(checksumAt(packet, 10), old, replacement));

    assert.ok(verifyIpv4HeaderChecksum(packet, 0, 20));
  });
});

void describe('transport checksums', () => {
  void it('treats a zero UDP checksum as "none" over IPv4 and as invalid over IPv6', () => {
    const v4 = ipv4Packet({ protocol: IPPROTO_UDP, payload: udpDatagram(1, 2, patternBytes(5)) });
    const v6 = ipv6Packet({ protocol: IPPROTO_UDP, payload: udpDatagram(1, 2, patternBytes(5)) });

    assert.equal(verifyTransportChecksum(v4, 0, 20, 13, IPPROTO_UDP), true);
    assert.equal(verifyTransportChecksum(v6, 0, 40, 13, IPPROTO_UDP), false);
  });

  void it('sends a UDP checksum that computes to zero as 0xffff', () => {
    const packet = ipv4Packet({
      protocol: IPPROTO_UDP,
      payload: udpDatagram(1, 2, new Uint8Array(2)),
    });
    fixTransportChecksum(packet, 0, 20, 10, IPPROTO_UDP);
    // Steer the payload so the sum becomes 0xffff, i.e. a computed checksum of 0.
    const checksum = checksumAt(packet, 26);
    put16(packet, 28, checksum);

    assert.equal(transportChecksum(packet, 0, 20, 10, IPPROTO_UDP), 0xffff);
    fixTransportChecksum(packet, 0, 20, 10, IPPROTO_UDP);
    assert.ok(verifyTransportChecksum(packet, 0, 20, 10, IPPROTO_UDP));
  });

  void it('covers ICMPv4 without a pseudo-header', () => {
    const icmp = Uint8Array.of(8, 0, 0, 0, 0x12, 0x34, 0, 1, 0xaa);
    const packet = ipv4Packet({ protocol: IPPROTO_ICMP, payload: icmp });
    const expected = internetChecksum(icmp, 0, icmp.length);

    fixTransportChecksum(packet, 0, 20, icmp.length, IPPROTO_ICMP);

    assert.equal(checksumAt(packet, 22), expected);
  });

  void it('refuses protocols it has no checksum for and headers too short', () => {
    const packet = ipv4Packet({ protocol: 47, payload: patternBytes(30) });

    assert.equal(transportChecksum(packet, 0, 20, 30, 47), -1);
    assert.equal(fixTransportChecksum(packet, 0, 20, 30, 47), false);
    assert.equal(verifyTransportChecksum(packet, 0, 20, 30, 47), false);
    assert.equal(transportChecksum(packet, 0, 20, 10, IPPROTO_TCP), -1);
  });

  void it('fixes an IPv4 header checksum in place', () => {
    const packet = ipv4Packet({ protocol: IPPROTO_TCP, payload: tcpSegment({}) });

    fixIpv4HeaderChecksum(packet, 0, 20);

    assert.ok(verifyIpv4HeaderChecksum(packet, 0, 20));
  });
});
