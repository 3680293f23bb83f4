import assert from 'node:assert/strict';
import { createCipheriv } from 'node:crypto';
import { test } from 'node:test';
import type { NonceAead } from '../src/crypto/chacha20poly1305.ts';
import { libsodiumWasmNonceAead, libsodiumWasmProvider } from '../src/crypto/libsodium-wasm.ts';
import { loadLibsodiumNative } from '../src/crypto/libsodium-native.ts';
import { loadOpensslNative } from '../src/crypto/openssl-native.ts';
import { randomBytes } from '../src/crypto/primitives.ts';
import type { CryptoProvider } from '../src/crypto/provider.ts';

const hex = (bytes: Uint8Array | null): string =>
  bytes === null ? 'null' : Buffer.from(bytes).toString('hex');
const bytes = (hexString: string): Uint8Array => Uint8Array.from(Buffer.from(hexString, 'hex'));
const ascii = (text: string): Uint8Array => new TextEncoder().encode(text);

interface Subject {
  provider: CryptoProvider;
  nonceAead: NonceAead;
}

const subjects: Subject[] = [
  loadOpensslNative(),
  loadLibsodiumNative(),
  { provider: libsodiumWasmProvider, nonceAead: libsodiumWasmNonceAead },
];

/** Node's own OpenSSL binding, as an independent reference for the transport nonce layout. */
function referenceSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  const cipher = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
  cipher.setAAD(aad, { plaintextLength: plaintext.length });
  return Uint8Array.from(
    Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]),
  );
}

function wireguardNonce(counterLow: number, counterHigh: number): Uint8Array {
  const nonce = new Uint8Array(12);
  const view = new DataView(nonce.buffer);
  view.setUint32(4, counterLow, true);
  view.setUint32(8, counterHigh, true);
  return nonce;
}

const RFC_2_8_2 = {
  key: bytes('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f'),
  nonce: bytes('070000004041424344454647'),
  aad: bytes('50515253c0c1c2c3c4c5c6c7'),
  plaintext: ascii(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
  ),
  sealed:
    'd31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b' +
    '1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc' +
    '3ff4def08e4b7a9de576d26586cec64b6116' +
    '1ae10b594f09e26a7e902ecbd0600691',
};

const RFC_A_5 = {
  key: bytes('1c9240a5eb55d38af333888604f6b5f0473917c1402b80099dca5cbc207075c0'),
  // 4 zero bytes, then the 64-bit little-endian counter 0x0807060504030201.
  nonce: bytes('000000000102030405060708'),
  counterLow: 0x04030201,
  counterHigh: 0x08070605,
  aad: bytes('f33388860000000000004e91'),
  plaintext: ascii(
    'Internet-Drafts are draft documents valid for a maximum of six months and may be updated, replaced, ' +
      'or obsoleted by other documents at any time. It is inappropriate to use Internet-Drafts as reference ' +
      'material or to cite them other than as /\u201cwork in progress./\u201d',
  ),
  sealed:
    '64a0861575861af460f062c79be643bd5e805cfd345cf389f108670ac76c8cb24c6cfc18755d43eea09ee94e382d26b0' +
    'bdb7b73c321b0100d4f03b7f355894cf332f830e710b97ce98c8a84abd0b948114ad176e008d33bd60f982b1ff37c855' +
    '9797a06ef4f0ef61c186324e2b3506383606907b6a7c02b0f9f6157b53c867e4b9166c767b804d46a59b5216cde7a4e9' +
    '9040c5a40433225ee282a1b0a06c523eaf4534d7f83fa1155b0047718cbc546a0d072b04b3564eea1b422273f548271a' +
    '0bb2316053fa76991955ebd63159434ecebb4e466dae5a1073a6727627097a1049e617d91d361094fa68f0ff77987130' +
    '305beaba2eda04df997b714d6c6f2c29a6ad5cb4022b02709b' +
    'eead9d67890cbb22392336fea1851f38',
};

for (const { provider, nonceAead } of subjects) {
  const name = provider.name;

  void test(`${name}: RFC 8439 2.8.2 AEAD vector`, () => {
    const v = RFC_2_8_2;
    assert.equal(hex(nonceAead.seal(v.key, v.nonce, v.plaintext, v.aad)), v.sealed);
    assert.deepEqual(nonceAead.open(v.key, v.nonce, bytes(v.sealed), v.aad), v.plaintext);
  });

  void test(`${name}: RFC 8439 A.5 AEAD decryption vector`, () => {
    const v = RFC_A_5;
    assert.deepEqual(nonceAead.open(v.key, v.nonce, bytes(v.sealed), v.aad), v.plaintext);
    assert.equal(hex(nonceAead.seal(v.key, v.nonce, v.plaintext, v.aad)), v.sealed);
  });

  void test(`${name}: transport path with A.5's key and counter matches Node's createCipheriv`, () => {
    const v = RFC_A_5;
    const expected = referenceSeal(v.key, v.nonce, v.plaintext, new Uint8Array(0));
    const packet = new Uint8Array(v.plaintext.length + 16);
    packet.set(v.plaintext);
    const aead = provider.transportAead(v.key);
    assert.equal(
      aead.seal(v.counterLow, v.counterHigh, packet, 0, v.plaintext.length, packet, 0),
      packet.length,
    );
    assert.deepEqual(packet, expected);
    assert.equal(
      aead.open(v.counterLow, v.counterHigh, packet, 0, packet.length, packet, 0),
      v.plaintext.length,
    );
    assert.deepEqual(packet.subarray(0, v.plaintext.length), v.plaintext);
    aead.destroy();
  });

  void test(`${name}: one-shot counter seal/open carries additional data`, () => {
    const key = randomBytes(32);
    const aad = randomBytes(32);
    const plaintext = randomBytes(48);
    const sealed = provider.seal(key, 0, plaintext, aad);
    assert.deepEqual(sealed, referenceSeal(key, new Uint8Array(12), plaintext, aad));
    assert.deepEqual(provider.open(key, 0, sealed, aad), plaintext);
    assert.equal(provider.open(key, 1, sealed, aad), null);
    assert.equal(provider.open(key, 0, sealed, randomBytes(32)), null);
    const empty = provider.seal(key, 2 ** 40 + 3, new Uint8Array(0), aad);
    assert.equal(empty.length, 16);
    assert.deepEqual(provider.open(key, 2 ** 40 + 3, empty, aad), new Uint8Array(0));
    assert.equal(provider.open(key, 0, sealed.subarray(0, 15), aad), null);
  });

  void test(`${name}: tampered packets are rejected with -1, never a throw`, () => {
    const key = randomBytes(32);
    const aead = provider.transportAead(key);
    const length = 200;
    const sealed = new Uint8Array(length + 16);
    sealed.set(randomBytes(length));
    aead.seal(9, 0, sealed, 0, length, sealed, 0);
    const out = new Uint8Array(length);
    for (const position of [0, 100, length - 1, length, length + 15]) {
      const forged = Uint8Array.from(sealed);
      forged[position]! ^= 0x01;
      assert.equal(
        aead.open(9, 0, forged, 0, forged.length, out, 0),
        -1,
        `flipped byte ${position}`,
      );
    }
    assert.equal(aead.open(10, 0, sealed, 0, sealed.length, out, 0), -1, 'wrong counter');
    assert.equal(aead.open(9, 1, sealed, 0, sealed.length, out, 0), -1, 'wrong high counter');
    assert.equal(aead.open(9, 0, sealed, 0, 15, out, 0), -1, 'shorter than a tag');
    assert.equal(aead.open(9, 0, sealed, 0, sealed.length - 1, out, 0), -1, 'truncated');
    const other = provider.transportAead(randomBytes(32));
    assert.equal(other.open(9, 0, sealed, 0, sealed.length, out, 0), -1, 'wrong key');
    other.destroy();
    assert.equal(
      aead.open(9, 0, sealed, 0, sealed.length, out, 0),
      length,
      'the genuine packet still opens',
    );
    aead.destroy();
  });

  void test(`${name}: out-of-range views throw RangeError; use after destroy throws`, () => {
    const aead = provider.transportAead(randomBytes(32));
    const buffer = new Uint8Array(64);
    if (name !== 'libsodium-wasm') {
      // The native providers must never hand native code memory outside the view.
      assert.throws(() => aead.seal(0, 0, buffer, 0, 60, buffer, 0), RangeError);
      assert.throws(() => aead.seal(0, 0, buffer, 50, 20, buffer, 0), RangeError);
      assert.throws(() => aead.open(0, 0, buffer, 0, 64, buffer.subarray(0, 10), 0), RangeError);
      assert.throws(() => aead.seal(0, 0, buffer, -1, 10, buffer, 0), RangeError);
    }
    assert.equal(aead.seal(0, 0, buffer, 0, 48, buffer, 0), 64);
    aead.destroy();
    assert.throws(() => aead.seal(0, 0, buffer, 0, 48, buffer, 0), /after destroy/);
    assert.throws(() => aead.open(0, 0, buffer, 0, 64, buffer, 0), /after destroy/);
  });
}

void test('all providers produce identical bytes and open each other: random keys, counters, lengths 0..1500', () => {
  const slotSize = 2048;
  const slots = subjects.map(() => new Uint8Array(new SharedArrayBuffer(slotSize * 8)));
  for (let round = 0; round < 300; round++) {
    const key = randomBytes(32);
    const counterLow = randomBytes(4).reduce((value, byte) => value * 256 + byte, 0);
    const counterHigh =
      round % 3 === 0 ? 0 : randomBytes(4).reduce((value, byte) => value * 256 + byte, 0);
    const length = round < 4 ? [0, 1, 15, 1500][round]! : Math.floor(Math.random() * 1501);
    const plaintext = randomBytes(length);
    // In place at an odd offset inside a SharedArrayBuffer.
    const offset = (round % 7) * slotSize + (round % 13);
    const expected = referenceSeal(
      key,
      wireguardNonce(counterLow, counterHigh),
      plaintext,
      new Uint8Array(0),
    );

    const aeads = subjects.map(({ provider }) => provider.transportAead(key));
    aeads.forEach((aead, index) => {
      const slot = slots[index]!;
      slot.set(plaintext, offset);
      assert.equal(
        aead.seal(counterLow, counterHigh, slot, offset, length, slot, offset),
        length + 16,
      );
      assert.equal(
        hex(slot.subarray(offset, offset + length + 16)),
        hex(expected),
        `${subjects[index]!.provider.name} round ${round} length ${length}`,
      );
    });
    // Each provider opens what the next one sealed, out of place into a plain ArrayBuffer.
    aeads.forEach((aead, index) => {
      const sealedBy = slots[(index + 1) % slots.length]!;
      const out = new Uint8Array(length + 3);
      assert.equal(
        aead.open(counterLow, counterHigh, sealedBy, offset, length + 16, out, 3),
        length,
      );
      assert.deepEqual(out.subarray(3), plaintext);
    });
    // And in place.
    aeads.forEach((aead, index) => {
      const slot = slots[index]!;
      assert.equal(
        aead.open(counterLow, counterHigh, slot, offset, length + 16, slot, offset),
        length,
      );
      assert.deepEqual(slot.subarray(offset, offset + length), plaintext);
    });
    for (const aead of aeads) aead.destroy();
  }
});

void test('seal from one view into another view of the same buffer at a different slot', () => {
  const memory = new SharedArrayBuffer(8192);
  const source = new Uint8Array(memory, 1024, 2048);
  const destination = new Uint8Array(memory, 4096, 2048);
  const key = randomBytes(32);
  const plaintext = randomBytes(1280);
  const expected = referenceSeal(key, wireguardNonce(77, 0), plaintext, new Uint8Array(0));
  for (const { provider } of subjects) {
    source.set(plaintext, 10);
    destination.fill(0);
    const aead = provider.transportAead(key);
    aead.seal(77, 0, source, 10, 1280, destination, 20);
    assert.deepEqual(destination.subarray(20, 20 + 1296), expected, provider.name);
    assert.deepEqual(source.subarray(10, 1290), plaintext, `${provider.name} left its input alone`);
    aead.destroy();
  }
});
