import { updateChecksum16 } from './checksum.ts';
import { readUint16, writeUint16 } from './byte-order.ts';
import { IPV4_HEADER_CHECKSUM, IPV4_TOS } from './header-layout.ts';

/**
 * Explicit Congestion Notification (RFC 3168 codepoints) and its
 * propagation through the WireGuard tunnel (RFC 6040).
 *
 * Gatehouse encapsulates in RFC 6040 normal mode: the outer (UDP) packet
 * carries a copy of the inner packet's ECN field, CE included. On
 * decapsulation it follows Figure 4 of RFC 6040 exactly; the one drop
 * (Not-ECT inner, CE outer) is a MUST of the RFC and Gatehouse obeys it:
 * the inner transport cannot understand a CE mark, so loss is the only
 * congestion signal it would react to, and forwarding the packet unmarked
 * would hide congestion the path really saw. Callers count such drops.
 */

export type Ecn = 0 | 1 | 2 | 3;
export const ECN_NOT_ECT = 0;
export const ECN_ECT_1 = 1;
export const ECN_ECT_0 = 2;
export const ECN_CE = 3;
export const ECN_MASK = 0x03;

/**
 * One cell of RFC 6040 Figure 4. `unusual` marks the combinations the RFC
 * flags as currently unused ("(!!!)"), which it says a decapsulator should
 * log; `drop` means the packet must be discarded.
 */
export type EcnDecapsulation =
  | { readonly drop: false; readonly ecn: Ecn; readonly unusual: boolean }
  | { readonly drop: true; readonly unusual: true };

/** The outer header's ECN field for an inner packet with this one (RFC 6040 §4.1, normal mode). */
export function ecnForEncapsulation(inner: Ecn): Ecn {
  return inner;
}

/**
 * The ECN field the decapsulated inner packet leaves with, or a drop (RFC
 * 6040 §4.2, Figure 4). Returns shared immutable results: no allocation.
 */
export function ecnForDecapsulation(inner: Ecn, outer: Ecn): EcnDecapsulation {
  return DECAPSULATION_TABLE[(inner << 2) | outer]!;
}

/** The packet's ECN field (IPv4 TOS or IPv6 traffic class, low 2 bits); the caller has validated the header. */
export function getEcn(packet: Uint8Array, offset: number): Ecn {
  const version = packet[offset]! >> 4;
  const field = version === 4 ? packet[offset + IPV4_TOS]! : packet[offset + 1]! >> 4;
  return (field & ECN_MASK) as Ecn;
}

/** Sets the packet's ECN field in place; for IPv4 the header checksum is updated incrementally. */
export function setEcn(packet: Uint8Array, offset: number, ecn: Ecn): void {
  const version = packet[offset]! >> 4;
  if (version === 4) {
    const oldWord = readUint16(packet, offset);
    packet[offset + IPV4_TOS] = (packet[offset + IPV4_TOS]! & ~ECN_MASK) | ecn;
    const newWord = readUint16(packet, offset);
    const checksumAt = offset + IPV4_HEADER_CHECKSUM;
    writeUint16(
      packet,
      checksumAt,
      updateChecksum16(readUint16(packet, checksumAt), oldWord, newWord),
    );
  } else {
    // The traffic class straddles bytes 0 and 1; its ECN bits are bits 4–5 of byte 1.
    packet[offset + 1] = (packet[offset + 1]! & ~(ECN_MASK << 4)) | (ecn << 4);
  }
}

/**
 * Applies RFC 6040 decapsulation to the inner packet at `offset`, given the
 * outer packet's ECN field. Returns false when the packet must be dropped
 * (it is then left unchanged).
 */
export function applyDecapsulationEcn(packet: Uint8Array, offset: number, outer: Ecn): boolean {
  const inner = getEcn(packet, offset);
  const result = ecnForDecapsulation(inner, outer);
  if (result.drop) return false;
  if (result.ecn !== inner) setEcn(packet, offset, result.ecn);
  return true;
}

function cell(ecn: Ecn, unusual = false): EcnDecapsulation {
  return Object.freeze({ drop: false, ecn, unusual });
}

const DROP: EcnDecapsulation = Object.freeze({ drop: true, unusual: true });

// Rows: inner Not-ECT, ECT(1), ECT(0), CE (codepoint order); columns: outer likewise.
const DECAPSULATION_TABLE: readonly EcnDecapsulation[] = [
  // inner Not-ECT
  cell(ECN_NOT_ECT),
  cell(ECN_NOT_ECT, true),
  cell(ECN_NOT_ECT, true),
  DROP,
  // inner ECT(1)
  cell(ECN_ECT_1),
  cell(ECN_ECT_1),
  cell(ECN_ECT_1),
  cell(ECN_CE),
  // inner ECT(0)
  cell(ECN_ECT_0),
  cell(ECN_ECT_1),
  cell(ECN_ECT_0),
  cell(ECN_CE),
  // inner CE
  cell(ECN_CE),
  cell(ECN_CE, true),
  cell(ECN_CE),
  cell(ECN_CE),
];
