import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { pseudoHeaderSum, verifyIpv4HeaderChecksum } from '../src/packet/checksum.ts';
import { GroCoalescer } from '../src/packet/gro-coalesce.ts';
import { completePartialChecksum, gsoSplit } from '../src/packet/gso-split.ts';
import { IpPacket } from '../src/packet/ip-packet.ts';
import { IPPROTO_TCP, IPPROTO_UDP } from '../src/packet/ip-protocol.ts';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VIRTIO_NET_HDR_LEN,
  VirtioNetHeader,
} from '../src/packet/virtio-net-header.ts';
import {
  ipv4Packet,
  ipv6Packet,
  patternBytes,
  put16,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_SYN,
  tcpSegment,
  udpDatagram,
  withChecksums,
} from './packet-builders.ts';

const TCP_CWR = 0x80;
const SLOT = 65536 + 64;
const HEADROOM = 16;
const TIMESTAMPS = Uint8Array.of(1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2);

interface SuperPacket {
  version: 4 | 6;
  protocol: number;
  payload: Uint8Array;
  gsoSize: number;
  flags?: number;
}

/** A virtio_net_hdr and a super-packet as the kernel hands them over (partial checksum). */
function superPacket(s: SuperPacket): Uint8Array {
  const isTcp = s.protocol === IPPROTO_TCP;
  const transport = isTcp
    ? tcpSegment({
        sequence: 0xffffff00,
        flags: s.flags ?? TCP_ACK,
        options: TIMESTAMPS,
        payload: s.payload,
      })
    : udpDatagram(4500, 4501, s.payload);
  const packet =
    s.version === 4
      ? withChecksums(
          ipv4Packet({
            protocol: s.protocol,
            identification: 0xfffe,
            tos: 0x02,
            payload: transport,
          }),
        )
      : withChecksums(ipv6Packet({ protocol: s.protocol, payload: transport }));
  const ipHeaderLength = s.version === 4 ? 20 : 40;
  const checksumOffset = isTcp ? 16 : 6;
  put16(
    packet,
    ipHeaderLength + checksumOffset,
    pseudoHeaderSum(packet, 0, s.protocol, packet.length - ipHeaderLength),
  );
  const header = new VirtioNetHeader();
  header.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  header.gsoType = isTcp
    ? s.version === 4
      ? VIRTIO_NET_HDR_GSO_TCPV4
      : VIRTIO_NET_HDR_GSO_TCPV6
    : VIRTIO_NET_HDR_GSO_UDP_L4;
  header.hdrLen = ipHeaderLength + (isTcp ? 32 : 8);
  header.gsoSize = s.gsoSize;
  header.csumStart = ipHeaderLength;
  header.csumOffset = checksumOffset;
  const read = new Uint8Array(VIRTIO_NET_HDR_LEN + packet.length);
  header.encode(read, 0);
  read.set(packet, VIRTIO_NET_HDR_LEN);
  return read;
}

/** `count` packet slots carved from one SharedArrayBuffer, as the TUN workers keep them. */
function slots(count: number): Uint8Array[] {
  const pool = new SharedArrayBuffer(count * SLOT);
  return Array.from({ length: count }, (_, i) => new Uint8Array(pool, i * SLOT, SLOT));
}

function split(
  read: Uint8Array,
  outputs = slots(64),
): { count: number | string; packets: Uint8Array[] } {
  const lengths = new Uint32Array(outputs.length);
  const count = gsoSplit(read, 0, read.length, outputs, HEADROOM, lengths);
  const packets =
    typeof count === 'number'
      ? outputs.slice(0, count).map((o, i) => o.slice(HEADROOM, HEADROOM + lengths[i]!))
      : [];
  return { count, packets };
}

const view = new IpPacket();

function payloadOf(packet: Uint8Array): Uint8Array {
  assert.equal(view.parse(packet, 0, packet.length), null);
  const headers = view.headerLength + (view.protocol === IPPROTO_TCP ? view.tcpHeaderLength : 8);
  return packet.slice(headers, view.length);
}

function concat(parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(parts.flatMap((part) => [...part]));
}

interface Batch {
  packets: Uint8Array[];
  offsets: number[];
  lengths: number[];
  writeLengths: number[];
}

function batch(packets: Uint8Array[]): Batch {
  const buffers = slots(packets.length);
  packets.forEach((packet, i) => buffers[i]!.set(packet, HEADROOM));
  return {
    packets: buffers,
    offsets: packets.map(() => HEADROOM),
    lengths: packets.map((p) => p.length),
    writeLengths: packets.map(() => -1),
  };
}

function coalesce(packets: Uint8Array[], udp = false): { writes: number | string; batch: Batch } {
  const b = batch(packets);
  const coalescer = new GroCoalescer({ maxPackets: 64, udp });
  const writes = coalescer.coalesce(
    b.packets,
    b.offsets,
    b.lengths,
    packets.length,
    b.writeLengths,
  );
  return { writes, batch: b };
}

/** What a TUN write of packet i would carry: virtio_net_hdr then the packet. */
function written(b: Batch, i: number): Uint8Array {
  return b.packets[i]!.slice(
    HEADROOM - VIRTIO_NET_HDR_LEN,
    HEADROOM - VIRTIO_NET_HDR_LEN + b.writeLengths[i]!,
  );
}

function decodeHeader(write: Uint8Array): VirtioNetHeader {
  const header = new VirtioNetHeader();
  header.decode(write, 0);
  return header;
}

function withoutIpv4Id(packet: Uint8Array): Uint8Array {
  const copy = packet.slice();
  copy.fill(0, 4, 6);
  copy.fill(0, 10, 12);
  return copy;
}

function tcpPacket(
  version: 4 | 6,
  sequence: number,
  payload: Uint8Array,
  flags = TCP_ACK,
  extra: { ack?: number; sourcePort?: number } = {},
): Uint8Array {
  const segment = tcpSegment({
    sequence,
    flags,
    payload,
    options: TIMESTAMPS,
    acknowledgment: extra.ack ?? 5000,
    sourcePort: extra.sourcePort ?? 40000,
  });
  return withChecksums(
    version === 4
      ? ipv4Packet({ protocol: IPPROTO_TCP, payload: segment })
      : ipv6Packet({ protocol: IPPROTO_TCP, payload: segment }),
  );
}

void describe('gsoSplit', () => {
  for (const version of [4, 6] as const) {
    void it(`splits a TCPv${version} super-packet into valid segments`, () => {
      const payload = patternBytes(2900, version);
      const read = superPacket({
        version,
        protocol: IPPROTO_TCP,
        payload,
        gsoSize: 1000,
        flags: TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR,
      });

      const { count, packets } = split(read);

      assert.equal(count, 3);
      assert.deepEqual(
        packets.map((p) => p.length),
        [1000, 1000, 900].map((n) => n + (version === 4 ? 20 : 40) + 32),
      );
      packets.forEach((packet, i) => {
        assert.equal(view.parse(packet, 0, packet.length), null);
        assert.ok(view.verifyTransportChecksum(), `segment ${i}`);
        assert.equal(view.tcpSequence, (0xffffff00 + i * 1000) >>> 0);
        const last = i === 2;
        assert.equal(
          view.tcpFlags,
          TCP_ACK | (last ? TCP_PSH | TCP_FIN : 0) | (i === 0 ? TCP_CWR : 0),
        );
        if (version === 4) assert.equal((packet[4]! << 8) | packet[5]!, (0xfffe + i) & 0xffff);
      });
      assert.deepEqual(concat(packets.map(payloadOf)), payload);
    });

    void it(`splits a UDPv${version} (UDP_L4) super-packet into valid datagrams`, () => {
      const payload = patternBytes(3000, 9);
      const read = superPacket({ version, protocol: IPPROTO_UDP, payload, gsoSize: 1200 });

      const { count, packets } = split(read);

      assert.equal(count, 3);
      for (const packet of packets) {
        assert.equal(view.parse(packet, 0, packet.length), null);
        assert.ok(view.verifyTransportChecksum());
        assert.equal(view.transportLength, packet.length - view.headerLength);
      }
      assert.deepEqual(concat(packets.map(payloadOf)), payload);
    });
  }

  void it('completes a partial checksum for a packet without GSO (NEEDS_CSUM)', () => {
    const read = superPacket({
      version: 4,
      protocol: IPPROTO_TCP,
      payload: patternBytes(333),
      gsoSize: 1000,
    });
    read[1] = VIRTIO_NET_HDR_GSO_NONE;

    const { count, packets } = split(read);

    assert.equal(count, 1);
    assert.equal(view.parse(packets[0]!, 0, packets[0]!.length), null);
    assert.ok(view.verifyTransportChecksum());
  });

  void it('copies a plain packet unchanged', () => {
    const packet = tcpPacket(6, 1, patternBytes(100));
    const read = new Uint8Array(VIRTIO_NET_HDR_LEN + packet.length);
    read.set(packet, VIRTIO_NET_HDR_LEN);

    const { count, packets } = split(read);

    assert.equal(count, 1);
    assert.deepEqual(packets[0], packet);
  });

  void it('works when input and outputs live in separate ArrayBuffers', () => {
    const read = superPacket({
      version: 4,
      protocol: IPPROTO_TCP,
      payload: patternBytes(2500),
      gsoSize: 1000,
    });
    const outputs = Array.from({ length: 4 }, () => new Uint8Array(2000));

    const { count, packets } = split(read, outputs);

    assert.equal(count, 3);
    assert.deepEqual(concat(packets.map(payloadOf)), patternBytes(2500));
  });

  void it('returns a reason for every hostile input and never throws', () => {
    const good = (): Uint8Array =>
      superPacket({
        version: 4,
        protocol: IPPROTO_TCP,
        payload: patternBytes(3000),
        gsoSize: 1000,
      });
    const withHeader = (change: (h: VirtioNetHeader) => void): Uint8Array => {
      const read = good();
      const header = new VirtioNetHeader();
      header.decode(read, 0);
      change(header);
      header.encode(read, 0);
      return read;
    };
    const v6 = superPacket({
      version: 6,
      protocol: IPPROTO_TCP,
      payload: patternBytes(3000),
      gsoSize: 1000,
    });
    v6[1] = VIRTIO_NET_HDR_GSO_TCPV4;
    const lyingLength = good();
    put16(lyingLength, VIRTIO_NET_HDR_LEN + 2, 4000);
    const noPayload = superPacket({
      version: 4,
      protocol: IPPROTO_TCP,
      payload: new Uint8Array(0),
      gsoSize: 1000,
    });
    const cases: Array<[string, Uint8Array, RegExp, Uint8Array[]?]> = [
      ['gso_size 0', withHeader((h) => (h.gsoSize = 0)), /gso_size is 0/],
      ['hdr_len beyond packet', withHeader((h) => (h.hdrLen = 60000)), /hdr_len beyond/],
      ['csum_start wrong', withHeader((h) => (h.csumStart = 24)), /csum_start/],
      ['csum_offset wrong', withHeader((h) => (h.csumOffset = 6)), /csum_offset/],
      ['UDP_L4 on TCP', withHeader((h) => (h.gsoType = VIRTIO_NET_HDR_GSO_UDP_L4)), /non-UDP/],
      [
        'TCPV6 on IPv4',
        withHeader((h) => (h.gsoType = VIRTIO_NET_HDR_GSO_TCPV6)),
        /TCPV6 on an IPv4/,
      ],
      ['TCPV4 on IPv6', v6, /TCPV4 on an IPv6/],
      ['GSO_ECN', withHeader((h) => (h.gsoType |= VIRTIO_NET_HDR_GSO_ECN)), /GSO_ECN/],
      ['UFO', withHeader((h) => (h.gsoType = VIRTIO_NET_HDR_GSO_UDP)), /UFO/],
      ['unknown type', withHeader((h) => (h.gsoType = 9)), /unknown gso_type/],
      ['IP length lying', lyingLength, /total length beyond/],
      [
        'truncated IP header',
        good().subarray(0, VIRTIO_NET_HDR_LEN + 12),
        /truncated header|beyond/,
      ],
      ['shorter than virtio_net_hdr', new Uint8Array(9), /shorter than a virtio_net_hdr/],
      ['no payload', noPayload, /without payload/],
      ['too few output slots', good(), /more segments than output slots/, slots(2)],
      [
        'output slot too small',
        good(),
        /output slot too small/,
        Array.from({ length: 4 }, () => new Uint8Array(600)),
      ],
      [
        'NEEDS_CSUM beyond the packet',
        (() => {
          const read = withHeader((h) => {
            h.gsoType = VIRTIO_NET_HDR_GSO_NONE;
            h.csumStart = 65000;
          });
          return read;
        })(),
        /csum_start or csum_offset beyond/,
      ],
    ];

    for (const [name, read, reason, outputs] of cases) {
      const { count } = split(read, outputs);
      assert.match(String(count), reason, name);
    }
    const lengths = new Uint32Array(4);
    assert.match(String(gsoSplit(good(), 5, 100000, slots(4), 0, lengths)), /input range/);
  });
});

void describe('GroCoalescer', () => {
  for (const version of [4, 6] as const) {
    void it(`coalesces TCPv${version} segments and the kernel-side split restores them exactly`, () => {
      const read = superPacket({
        version,
        protocol: IPPROTO_TCP,
        payload: patternBytes(4500),
        gsoSize: 1000,
        flags: TCP_ACK | TCP_PSH,
      });
      const segments = split(read).packets;

      const { writes, batch: b } = coalesce(segments);

      assert.equal(writes, 1);
      assert.deepEqual(b.writeLengths.slice(1), [0, 0, 0, 0]);
      const write = written(b, 0);
      const header = decodeHeader(write);
      assert.equal(header.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
      assert.equal(
        header.gsoType,
        version === 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6,
      );
      assert.equal(header.gsoSize, 1000);
      assert.equal(header.hdrLen, (version === 4 ? 20 : 40) + 32);
      const again = split(write).packets;
      assert.deepEqual(again, segments);
    });
  }

  void it('round-trips split → coalesce to the original payload with a completable checksum', () => {
    const payload = patternBytes(7000, 3);
    const read = superPacket({ version: 4, protocol: IPPROTO_TCP, payload, gsoSize: 1448 });

    const { batch: b } = coalesce(split(read).packets);
    const write = written(b, 0);
    const packet = write.subarray(VIRTIO_NET_HDR_LEN);

    assert.deepEqual(payloadOf(packet), payload);
    assert.ok(verifyIpv4HeaderChecksum(packet, 0, 20));
    assert.equal(completePartialChecksum(packet, 0, packet.length, decodeHeader(write)), null);
    assert.equal(view.parse(packet, 0, packet.length), null);
    assert.ok(view.verifyTransportChecksum());
  });

  void it('coalesces UDP only when enabled', () => {
    const datagrams = split(
      superPacket({
        version: 6,
        protocol: IPPROTO_UDP,
        payload: patternBytes(3000),
        gsoSize: 1200,
      }),
    ).packets;

    const off = coalesce(datagrams, false);
    const on = coalesce(datagrams, true);

    assert.equal(off.writes, 3);
    assert.equal(decodeHeader(written(off.batch, 0)).gsoType, VIRTIO_NET_HDR_GSO_NONE);
    assert.deepEqual(written(off.batch, 1).subarray(VIRTIO_NET_HDR_LEN), datagrams[1]);
    assert.equal(on.writes, 1);
    assert.equal(decodeHeader(written(on.batch, 0)).gsoType, VIRTIO_NET_HDR_GSO_UDP_L4);
    assert.deepEqual(split(written(on.batch, 0)).packets, datagrams);
  });

  void it('keeps apart what must not merge', () => {
    const p = (seq: number, size: number, flags = TCP_ACK, extra = {}): Uint8Array =>
      tcpPacket(4, seq, patternBytes(size, seq), flags, extra);
    const corrupt = p(2000, 1000);
    corrupt[corrupt.length - 1]! ^= 1;
    const cases: Array<[string, Uint8Array[], number[]]> = [
      ['contiguous, last smaller', [p(1000, 1000), p(2000, 1000), p(3000, 10)], [1, 0, 0]],
      ['sequence gap', [p(1000, 1000), p(2001, 1000)], [1, 1]],
      ['different ACK', [p(1000, 1000), p(2000, 1000, TCP_ACK, { ack: 9 })], [1, 1]],
      ['later segment larger', [p(1000, 500), p(1500, 1000)], [1, 1]],
      ['nothing after a smaller segment', [p(1000, 1000), p(2000, 500), p(2500, 500)], [1, 0, 1]],
      [
        'nothing after PSH',
        [p(1000, 1000), p(2000, 1000, TCP_ACK | TCP_PSH), p(3000, 1000)],
        [1, 0, 1],
      ],
      ['SYN passes alone', [p(1000, 1000, TCP_SYN | TCP_ACK), p(2000, 1000)], [1, 1]],
      ['FIN passes alone', [p(1000, 1000), p(2000, 1000, TCP_FIN | TCP_ACK)], [1, 1]],
      ['corrupt checksum passes alone', [p(1000, 1000), corrupt], [1, 1]],
      ['pure ACK is a barrier', [p(1000, 1000), p(2000, 0), p(2000, 1000)], [1, 1, 1]],
      [
        'flows interleave',
        [
          p(1000, 1000),
          p(1000, 1000, TCP_ACK, { sourcePort: 7 }),
          p(2000, 1000),
          p(2000, 1000, TCP_ACK, { sourcePort: 7 }),
        ],
        [1, 1, 0, 0],
      ],
    ];

    for (const [name, packets, expected] of cases) {
      const { batch: b } = coalesce(packets);
      assert.deepEqual(
        b.writeLengths.map((n) => (n > 0 ? 1 : 0)),
        expected,
        name,
      );
      b.writeLengths.forEach((n, i) => {
        if (n === 0) return;
        const write = written(b, i);
        const segments = split(write).packets;
        const originals = packets.filter(
          (_, j) => j === i || (b.writeLengths[j] === 0 && j > i && headOf(b, j) === i),
        );
        // IPv4 IDs are renumbered from the head's, as the kernel does; all else is restored.
        assert.deepEqual(
          segments.map(withoutIpv4Id),
          originals.map(withoutIpv4Id),
          `${name}: write ${i}`,
        );
      });
    }

    function headOf(b: Batch, j: number): number {
      // A merged packet belongs to the nearest earlier write of its flow.
      const portsAt = 20;
      for (let k = j - 1; k >= 0; k--) {
        if (
          b.writeLengths[k]! > 0 &&
          b.packets[k]![HEADROOM + portsAt] === b.packets[j]![HEADROOM + portsAt] &&
          b.packets[k]![HEADROOM + portsAt + 1] === b.packets[j]![HEADROOM + portsAt + 1]
        )
          return k;
      }
      return -1;
    }
  });

  void it('does not grow a packet past its slot', () => {
    const first = tcpPacket(4, 1000, patternBytes(1000));
    const second = tcpPacket(4, 2000, patternBytes(1000));
    const pool = new ArrayBuffer(8192);
    const packets = [
      new Uint8Array(pool, 0, HEADROOM + first.length + 10),
      new Uint8Array(pool, 4096, 4096),
    ];
    packets[0]!.set(first, HEADROOM);
    packets[1]!.set(second, HEADROOM);
    const writeLengths = [0, 0];

    const writes = new GroCoalescer({ maxPackets: 2, udp: false }).coalesce(
      packets,
      [HEADROOM, HEADROOM],
      [first.length, second.length],
      2,
      writeLengths,
    );

    assert.equal(writes, 2);
  });

  void it('rejects unusable arguments with a reason', () => {
    const packet = tcpPacket(4, 1, patternBytes(10));
    const coalescer = new GroCoalescer({ maxPackets: 2, udp: false });
    const b = batch([packet, packet]);
    const cases: Array<[string, () => number | string, RegExp]> = [
      [
        'no headroom',
        () => coalescer.coalesce(b.packets, [4, 16], b.lengths, 2, b.writeLengths),
        /headroom/,
      ],
      [
        'range beyond buffer',
        () => coalescer.coalesce(b.packets, b.offsets, [SLOT, 1], 2, b.writeLengths),
        /beyond its buffer/,
      ],
      [
        'count beyond max',
        () => coalescer.coalesce(b.packets, b.offsets, b.lengths, 3, b.writeLengths),
        /maxPackets/,
      ],
      [
        'short arrays',
        () => coalescer.coalesce(b.packets, [16], b.lengths, 2, b.writeLengths),
        /fewer array entries/,
      ],
    ];

    for (const [name, call, reason] of cases) assert.match(String(call()), reason, name);
  });

  void it('passes garbage through alone for the kernel to judge', () => {
    const { writes, batch: b } = coalesce([
      patternBytes(50),
      Uint8Array.of(0x45),
      tcpPacket(6, 1, patternBytes(10)),
    ]);

    assert.equal(writes, 3);
    assert.equal(b.writeLengths[1], VIRTIO_NET_HDR_LEN + 1);
  });
});
