/** Network byte order (big-endian) reads and writes on plain byte arrays, without a DataView. */

export function readUint16(packet: Uint8Array, at: number): number {
  return (packet[at]! << 8) | packet[at + 1]!;
}

export function readUint32(packet: Uint8Array, at: number): number {
  return (
    ((packet[at]! << 24) | (packet[at + 1]! << 16) | (packet[at + 2]! << 8) | packet[at + 3]!) >>> 0
  );
}

export function writeUint16(packet: Uint8Array, at: number, value: number): void {
  packet[at] = value >>> 8;
  packet[at + 1] = value;
}

export function writeUint32(packet: Uint8Array, at: number, value: number): void {
  packet[at] = value >>> 24;
  packet[at + 1] = value >>> 16;
  packet[at + 2] = value >>> 8;
  packet[at + 3] = value;
}
