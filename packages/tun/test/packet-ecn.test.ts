import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { verifyIpv4HeaderChecksum } from '../src/packet/checksum.ts';
import {
  applyDecapsulationEcn,
  ECN_CE,
  ECN_ECT_0,
  ECN_ECT_1,
  ECN_NOT_ECT,
  ecnForDecapsulation,
  ecnForEncapsulation,
  getEcn,
  setEcn,
} from '../src/packet/ecn.ts';
import type { Ecn } from '../src/packet/ecn.ts';
import { IPPROTO_UDP } from '../src/packet/ip-protocol.ts';
import {
  ipv4Packet,
  ipv6Packet,
  patternBytes,
  udpDatagram,
  withChecksums,
} from './packet-builders.ts';

const NAMES: Record<Ecn, string> = { 0: 'Not-ECT', 1: 'ECT(1)', 2: 'ECT(0)', 3: 'CE' };
const ALL: Ecn[] = [ECN_NOT_ECT, ECN_ECT_0, ECN_ECT_1, ECN_CE];

// RFC 6040 Figure 4, row by row (inner), column by column (outer: Not-ECT, ECT(0), ECT(1), CE).
// '!!!' marks the combinations the RFC calls currently unused.
const FIGURE_4: Array<[Ecn, Array<Ecn | 'drop' | [Ecn, '!!!']>]> = [
  [ECN_NOT_ECT, [ECN_NOT_ECT, [ECN_NOT_ECT, '!!!'], [ECN_NOT_ECT, '!!!'], 'drop']],
  [ECN_ECT_0, [ECN_ECT_0, ECN_ECT_0, ECN_ECT_1, ECN_CE]],
  [ECN_ECT_1, [ECN_ECT_1, ECN_ECT_1, ECN_ECT_1, ECN_CE]],
  [ECN_CE, [ECN_CE, ECN_CE, [ECN_CE, '!!!'], ECN_CE]],
];

function v4(tos: number): Uint8Array {
  return withChecksums(
    ipv4Packet({ tos, protocol: IPPROTO_UDP, payload: udpDatagram(1, 2, patternBytes(12)) }),
  );
}

function v6(trafficClass: number): Uint8Array {
  return withChecksums(
    ipv6Packet({
      trafficClass,
      flowLabel: 0xabcde,
      protocol: IPPROTO_UDP,
      payload: udpDatagram(1, 2, patternBytes(12)),
    }),
  );
}

void describe('RFC 6040 ECN propagation', () => {
  void it('decapsulates per every cell of Figure 4', () => {
    for (const [inner, row] of FIGURE_4) {
      row.forEach((expected, column) => {
        const outer = ALL[column]!;
        const cell = `inner ${NAMES[inner]}, outer ${NAMES[outer]}`;
        const result = ecnForDecapsulation(inner, outer);

        if (expected === 'drop') {
          assert.deepEqual(result, { drop: true, unusual: true }, cell);
        } else if (Array.isArray(expected)) {
          assert.deepEqual(result, { drop: false, ecn: expected[0], unusual: true }, cell);
        } else {
          assert.deepEqual(result, { drop: false, ecn: expected, unusual: false }, cell);
        }
      });
    }
  });

  void it('encapsulates in normal mode, copying the field including CE', () => {
    for (const inner of ALL) assert.equal(ecnForEncapsulation(inner), inner, NAMES[inner]);
  });

  void it('returns shared results without allocating', () => {
    assert.equal(ecnForDecapsulation(ECN_ECT_0, ECN_CE), ecnForDecapsulation(ECN_ECT_0, ECN_CE));
  });
});

void describe('ECN field in packets', () => {
  void it('sets IPv4 ECN bits keeping the DSCP and a valid header checksum', () => {
    for (const ecn of ALL) {
      const packet = v4(0xb8);

      setEcn(packet, 0, ecn);

      assert.equal(getEcn(packet, 0), ecn);
      assert.equal(packet[1]! >> 2, 0xb8 >> 2);
      assert.ok(verifyIpv4HeaderChecksum(packet, 0, 20), NAMES[ecn]);
    }
  });

  void it('sets IPv6 ECN bits inside the traffic class, keeping DSCP, version and flow label', () => {
    for (const ecn of ALL) {
      const packet = v6(0xb8 | ECN_ECT_1);
      const before = packet.slice();

      setEcn(packet, 0, ecn);

      assert.equal(getEcn(packet, 0), ecn);
      assert.equal(packet[0], before[0]);
      assert.equal(packet[1]! & 0xcf, before[1]! & 0xcf);
      assert.deepEqual(packet.subarray(2), before.subarray(2));
    }
  });

  void it('applies decapsulation in place: marks CE, or reports a drop and leaves the packet alone', () => {
    const ect = v4(ECN_ECT_0);
    const notEct = v6(ECN_NOT_ECT);
    const untouched = notEct.slice();

    assert.equal(applyDecapsulationEcn(ect, 0, ECN_CE), true);
    assert.equal(getEcn(ect, 0), ECN_CE);
    assert.ok(verifyIpv4HeaderChecksum(ect, 0, 20));
    assert.equal(applyDecapsulationEcn(notEct, 0, ECN_CE), false);
    assert.deepEqual(notEct, untouched);
  });
});
