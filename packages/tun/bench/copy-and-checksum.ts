/**
 * Micro-benchmark of the per-packet byte work on the data path:
 * `npx node packages/tun/bench/copy-and-checksum.ts`.
 *
 * - onesComplementSum (the word-wise sum) against the byte-pair loop it
 *   replaced, over 1400 bytes at each alignment, in ArrayBuffer and
 *   SharedArrayBuffer memory;
 * - copying 1400 bytes with `set`/`copyBytes` into ArrayBuffer and
 *   SharedArrayBuffer memory.
 *
 * Prints `ns/op` per case, best of five rounds.
 */
import { copyBytes } from '../src/packet/copy-bytes.ts';
import { onesComplementSum } from '../src/packet/checksum.ts';

const LENGTH = 1400;
const OPS = 200_000;

/** The byte-pair sum onesComplementSum used before, for comparison. */
function bytePairSum(packet: Uint8Array, offset: number, length: number, initial = 0): number {
  let sum = initial;
  const pairsEnd = offset + (length & ~1);
  for (let i = offset; i < pairsEnd; i += 2) sum += (packet[i]! << 8) | packet[i + 1]!;
  if ((length & 1) === 1) sum += packet[pairsEnd]! << 8;
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

function time(name: string, op: (i: number) => number): void {
  let best = Infinity;
  let sink = 0;
  for (let round = 0; round < 5; round++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < OPS; i++) sink += op(i);
    best = Math.min(best, Number(process.hrtime.bigint() - start) / OPS);
  }
  console.log(`${name.padEnd(52)} ${best.toFixed(0).padStart(6)} ns/op  (${sink & 1})`);
}

function memory(shared: boolean, bytes: number): Uint8Array {
  const view = new Uint8Array(shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));
  for (let i = 0; i < view.length; i++) view[i] = (i * 131 + 7) & 0xff;
  return view;
}

for (const shared of [false, true]) {
  const kind = shared ? 'SharedArrayBuffer' : 'ArrayBuffer';
  const packets = memory(shared, 64 * 2048);
  for (const offset of [0, 1, 2]) {
    time(`checksum ${LENGTH} B, ${kind}, offset ${offset}: byte pairs`, (i) =>
      bytePairSum(packets, (i & 63) * 2048 + offset, LENGTH),
    );
    time(`checksum ${LENGTH} B, ${kind}, offset ${offset}: 32-bit words`, (i) =>
      onesComplementSum(packets, (i & 63) * 2048 + offset, LENGTH),
    );
  }
}

const plainSource = memory(false, 64 * 2048);
for (const shared of [false, true]) {
  const kind = shared ? 'SharedArrayBuffer' : 'ArrayBuffer';
  const target = memory(shared, 64 * 2048);
  time(`copy ${LENGTH} B ArrayBuffer -> ${kind}: set(subarray)`, (i) => {
    const at = (i & 63) * 2048;
    target.set(plainSource.subarray(at, at + LENGTH), at + 16);
    return at;
  });
  time(`copy ${LENGTH} B ArrayBuffer -> ${kind}: copyBytes`, (i) => {
    const at = (i & 63) * 2048;
    copyBytes(plainSource, at, target, at + 16, LENGTH);
    return at;
  });
  time(`copy ${LENGTH} B within one ${kind}: copyBytes`, (i) => {
    const at = (i & 31) * 2048;
    copyBytes(target, at, target, at + 64 * 1024 + 16, LENGTH);
    return at;
  });
}
