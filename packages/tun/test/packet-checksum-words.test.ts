import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { onesComplementSum } from '../src/packet/checksum.ts';

/** RFC 1071 one byte pair at a time: the reference the word-wise sum must match bit for bit. */
function referenceSum(packet: Uint8Array, offset: number, length: number, initial: number): number {
  let sum = initial;
  for (let i = 0; i < length; i += 2) {
    sum += (packet[offset + i]! << 8) | (i + 1 < length ? packet[offset + i + 1]! : 0);
  }
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

/** A deterministic xorshift32 stream, so a failure is reproducible. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
}

function fill(bytes: Uint8Array, next: () => number): void {
  for (let i = 0; i < bytes.length; i++) bytes[i] = next() & 0xff;
}

void describe('onesComplementSum over 32-bit words', () => {
  void it('matches the byte-pair reference over random lengths, offsets 0..3 and view offsets', () => {
    const next = random(0x9e3779b9);
    for (const shared of [false, true]) {
      const buffer = shared ? new SharedArrayBuffer(70_000) : new ArrayBuffer(70_000);
      for (let round = 0; round < 3000; round++) {
        const viewOffset = next() % 4;
        const view = new Uint8Array(buffer, viewOffset, 66_000);
        const offset = next() % 4;
        // Mostly packet-sized lengths, some up to a 64 KiB super-packet; odd ones included.
        const length = round % 10 === 0 ? next() % 65_536 : next() % 1600;
        const initial = round % 3 === 0 ? 0 : next() % 0x40000;
        fill(view.subarray(offset, offset + length), next);
        assert.equal(
          onesComplementSum(view, offset, length, initial),
          referenceSum(view, offset, length, initial),
          `shared ${shared}, view offset ${viewOffset}, offset ${offset}, length ${length}`,
        );
      }
    }
  });

  void it('matches the reference for every short and odd length at every alignment', () => {
    const next = random(12345);
    const bytes = new Uint8Array(256 + 8);
    fill(bytes, next);
    for (let viewOffset = 0; viewOffset < 4; viewOffset++) {
      const view = bytes.subarray(viewOffset);
      for (let offset = 0; offset < 4; offset++) {
        for (let length = 0; length <= 200; length++) {
          assert.equal(
            onesComplementSum(view, offset, length, 7),
            referenceSum(view, offset, length, 7),
            `view offset ${viewOffset}, offset ${offset}, length ${length}`,
          );
        }
      }
    }
  });

  void it('sums all-ones data without losing carries', () => {
    const bytes = new Uint8Array(65_536 + 4).fill(0xff);
    for (let offset = 0; offset < 4; offset++) {
      for (const length of [65_535, 65_536, 40_001]) {
        assert.equal(
          onesComplementSum(bytes, offset, length, 0xffff),
          referenceSum(bytes, offset, length, 0xffff),
        );
      }
    }
  });

  void it('keeps right answers while switching between more buffers than it caches', () => {
    const next = random(777);
    const buffers = Array.from({ length: 7 }, (_, i) => {
      const bytes = new Uint8Array(
        i % 2 === 0 ? new SharedArrayBuffer(2051) : new ArrayBuffer(2051),
      );
      fill(bytes, next);
      return bytes;
    });
    for (let round = 0; round < 500; round++) {
      const bytes = buffers[next() % buffers.length]!;
      const offset = next() % 4;
      const length = next() % 2040;
      assert.equal(
        onesComplementSum(bytes, offset, length),
        referenceSum(bytes, offset, length, 0),
      );
    }
  });
});
