/**
 * Per-packet ChaCha20-Poly1305 cost of every available provider on
 * 1280-byte packets, sealed and opened in place in one preallocated buffer,
 * next to Node's createCipheriv/createDecipheriv per packet.
 *
 *   npm run bench:crypto            (about 1 s per measurement)
 *   BENCH_SECONDS=0.2 npm run bench:crypto
 */

import { createCipheriv, createDecipheriv } from 'node:crypto';
import { libsodiumWasmProvider } from '../src/crypto/libsodium-wasm.ts';
import { loadLibsodiumNative } from '../src/crypto/libsodium-native.ts';
import { loadOpensslNative } from '../src/crypto/openssl-native.ts';
import type { CryptoProvider } from '../src/crypto/provider.ts';
import { randomBytes } from '../src/crypto/primitives.ts';

const PACKET_LENGTH = 1280;
const TAG_LENGTH = 16;
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? '1');

interface Row {
  name: string;
  sealMicros: number;
  openMicros: number;
}

const rows: Row[] = [];
for (const provider of availableProviders()) rows.push(measureProvider(provider));
rows.push(measureCreateCipheriv());

console.log(`ChaCha20-Poly1305, ${PACKET_LENGTH}-byte packets, in place, µs per packet`);
console.log(
  `${'provider'.padEnd(26)}${'seal'.padStart(8)}${'open'.padStart(8)}${'seal Gbit/s'.padStart(13)}`,
);
for (const row of rows) {
  const gbits = (PACKET_LENGTH * 8) / (row.sealMicros * 1000);
  console.log(
    `${row.name.padEnd(26)}${row.sealMicros.toFixed(2).padStart(8)}${row.openMicros.toFixed(2).padStart(8)}` +
      `${gbits.toFixed(2).padStart(13)}`,
  );
}
console.log(
  `crypto: ${rows.map((r) => `${r.name}=${r.sealMicros.toFixed(2)}/${r.openMicros.toFixed(2)}`).join(' ')}`,
);

function availableProviders(): CryptoProvider[] {
  const providers: CryptoProvider[] = [];
  for (const load of [loadOpensslNative, loadLibsodiumNative]) {
    try {
      providers.push(load().provider);
    } catch (error) {
      console.log(`skipped: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  providers.push(libsodiumWasmProvider);
  return providers;
}

function measureProvider(provider: CryptoProvider): Row {
  const key = randomBytes(32);
  const aead = provider.transportAead(key);
  // A data-plane-like slot inside a shared buffer, not at offset 0.
  const slots = new Uint8Array(new SharedArrayBuffer(64 * 2048));
  const offset = 5 * 2048 + 16;
  slots.set(randomBytes(PACKET_LENGTH), offset);

  let counter = 0;
  const sealMicros = timePerCall(() => {
    aead.seal(counter++, 0, slots, offset, PACKET_LENGTH, slots, offset);
  });

  // Opening needs genuine ciphertexts: seal a ring of packets once, then
  // open a copy of each (the in-place open overwrites its input).
  const ring = 32;
  const sealedRing = new Uint8Array(new SharedArrayBuffer(ring * 2048));
  for (let i = 0; i < ring; i++) {
    sealedRing.set(slots.subarray(offset, offset + PACKET_LENGTH), i * 2048);
    aead.seal(i, 0, sealedRing, i * 2048, PACKET_LENGTH, sealedRing, i * 2048);
  }
  const work = new Uint8Array(new SharedArrayBuffer(ring * 2048));
  let index = 0;
  const copyMicros = timePerCall(() => {
    const at = (index++ % ring) * 2048;
    work.set(sealedRing.subarray(at, at + PACKET_LENGTH + TAG_LENGTH), at);
  });
  index = 0;
  const openPlusCopyMicros = timePerCall(() => {
    const i = index++ % ring;
    const at = i * 2048;
    work.set(sealedRing.subarray(at, at + PACKET_LENGTH + TAG_LENGTH), at);
    if (aead.open(i, 0, work, at, PACKET_LENGTH + TAG_LENGTH, work, at) !== PACKET_LENGTH) {
      throw new Error(`${provider.name} failed to open its own packet`);
    }
  });
  aead.destroy();
  return { name: provider.name, sealMicros, openMicros: openPlusCopyMicros - copyMicros };
}

function measureCreateCipheriv(): Row {
  const key = randomBytes(32);
  const nonce = new Uint8Array(12);
  const nonceView = new DataView(nonce.buffer);
  const packet = new Uint8Array(PACKET_LENGTH + TAG_LENGTH);
  packet.set(randomBytes(PACKET_LENGTH));
  const plaintext = packet.subarray(0, PACKET_LENGTH);

  let counter = 0;
  const sealMicros = timePerCall(() => {
    nonceView.setUint32(4, counter++, true);
    const cipher = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_LENGTH });
    packet.set(cipher.update(plaintext));
    cipher.final();
    packet.set(cipher.getAuthTag(), PACKET_LENGTH);
  });

  nonceView.setUint32(4, 0, true);
  const cipher = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_LENGTH });
  const sealed = cipher.update(plaintext);
  cipher.final();
  const tag = cipher.getAuthTag();
  const openMicros = timePerCall(() => {
    const decipher = createDecipheriv('chacha20-poly1305', key, nonce, {
      authTagLength: TAG_LENGTH,
    });
    decipher.setAuthTag(tag);
    packet.set(decipher.update(sealed));
    decipher.final();
  });
  return { name: 'node-createCipheriv', sealMicros, openMicros };
}

/** Microseconds per call after a warm-up, over about SECONDS of calls. */
function timePerCall(operation: () => void): number {
  for (let i = 0; i < 20_000; i++) operation();
  let iterations = 1000;
  for (;;) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) operation();
    const elapsedSeconds = Number(process.hrtime.bigint() - start) / 1e9;
    if (elapsedSeconds >= SECONDS * 0.9) return (elapsedSeconds * 1e6) / iterations;
    iterations = Math.ceil((iterations * SECONDS * 1.1) / Math.max(elapsedSeconds, 1e-3));
  }
}
