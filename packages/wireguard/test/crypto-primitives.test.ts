import assert from 'node:assert/strict';
import { test } from 'node:test';
import { blake2s } from '@noble/hashes/blake2.js';
import {
  HASH_LENGTH,
  constantTimeEqual,
  dh,
  generatePrivateKey,
  hash,
  hmac,
  kdf1,
  kdf2,
  kdf3,
  mac,
  publicKey,
  randomBytes,
  xaeadOpen,
  xaeadSeal,
} from '../src/crypto/primitives.ts';

const hex = (bytes: Uint8Array | null): string =>
  bytes === null ? 'null' : Buffer.from(bytes).toString('hex');
const bytes = (hexString: string): Uint8Array => Uint8Array.from(Buffer.from(hexString, 'hex'));
const ascii = (text: string): Uint8Array => new TextEncoder().encode(text);
const counting = (length: number): Uint8Array => Uint8Array.from({ length }, (_, i) => i & 0xff);

void test('BLAKE2s-256: RFC 7693 Appendix B "abc" and the empty input', () => {
  assert.equal(
    hex(hash(ascii('abc'))),
    '508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982',
  );
  assert.equal(hex(hash()), '69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9');
  assert.equal(hash(ascii('abc')).length, HASH_LENGTH);
});

void test('hash() digests the concatenation of its parts', () => {
  const message = randomBytes(300);
  assert.deepEqual(
    hash(message.subarray(0, 7), message.subarray(7, 200), message.subarray(200)),
    hash(message),
  );
});

void test('WireGuard construction and identifier hashes', () => {
  const construction = hash(ascii('Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s'));
  assert.equal(
    hex(construction),
    '60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36',
  );
  assert.equal(
    hex(hash(construction, ascii('WireGuard v1 zx2c4 Jason@zx2c4.com'))),
    '2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3',
  );
});

void test('keyed BLAKE2s: BLAKE2 reference KAT, key 00..1f, 32-byte output', () => {
  const key = counting(32);
  const kat: [number, string][] = [
    [0, '48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49'],
    [1, '40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1'],
    [2, '6bb71300644cd3991b26ccd4d274acd1adeab8b1d7914546c1198bbe9fc9d803'],
    [64, '8975b0577fd35566d750b362b0897a26c399136df07bababbde6203ff2954ed4'],
  ];
  for (const [length, expected] of kat) {
    // mac() is the 16-byte mode; the 32-byte KAT checks the same keyed library call.
    assert.equal(
      hex(blake2s(counting(length), { key, dkLen: 32 })),
      expected,
      `input length ${length}`,
    );
  }
});

void test('mac(): keyed BLAKE2s-128 matches Python hashlib.blake2s(key=00..1f, digest_size=16)', () => {
  // Computed independently with CPython's bundled BLAKE2 reference code.
  const key = counting(32);
  const expected: [number, string][] = [
    [0, '9536f9b267655743dee97b8a670f9f53'],
    [1, '13bacfb85b48a1223c595f8c1e7e82cb'],
    [2, 'd47a9b1645e2feae501cd5fe44ce6333'],
    [63, 'ece382a8bd5018f1de5da44b72cea75b'],
    [64, 'f1efa90d2547036841ecd3627fafbc36'],
    [65, '811ff8686d23a435ecbd0bdafcd27b1b'],
    [255, 'cd075928ab7e6883e697fe7fd3ac43ee'],
  ];
  for (const [length, digest] of expected) {
    assert.equal(hex(mac(key, counting(length))), digest, `input length ${length}`);
  }
});

void test('mac(): RFC 7693 Appendix E self-test (keyed 16-byte outputs among others)', () => {
  // Fibonacci byte sequence from the RFC's selftest_seq().
  const sequence = (length: number, seed: number): Uint8Array => {
    const out = new Uint8Array(length);
    let a = Math.imul(0xdead4bad, seed) >>> 0;
    let b = 1;
    for (let i = 0; i < length; i++) {
      const t = (a + b) >>> 0;
      a = b;
      b = t;
      out[i] = t >>> 24;
    }
    return out;
  };
  const results: Uint8Array[] = [];
  for (const outputLength of [16, 20, 28, 32]) {
    for (const inputLength of [0, 3, 64, 65, 255, 1024]) {
      const input = sequence(inputLength, inputLength);
      results.push(blake2s(input, { dkLen: outputLength }));
      const key = sequence(outputLength, outputLength);
      results.push(
        outputLength === 16 ? mac(key, input) : blake2s(input, { key, dkLen: outputLength }),
      );
    }
  }
  assert.equal(
    hex(hash(...results)),
    '6a411f08ce25adcdfb02aba641451cec53c598b24f4fc787fbdc88797f4c1dfe',
  );
});

void test('HMAC-BLAKE2s matches Python hmac.new(key, msg, hashlib.blake2s)', () => {
  assert.equal(
    hex(hmac(counting(32), ascii('WireGuard'))),
    '5415924543576b3f5ee867c94e1aab70586d33b32fae3fccd2c635b3e1d7198d',
  );
  // A key longer than the 64-byte block is hashed first.
  assert.equal(
    hex(hmac(counting(100), ascii('abc'))),
    'c1b751501db12b753069a918627b623179be55c8cc7ca5c4e14bdf32274ac656',
  );
  assert.deepEqual(
    hmac(counting(32), ascii('Wire'), ascii('Guard')),
    hmac(counting(32), ascii('WireGuard')),
  );
});

void test('KDF1/2/3 follow WireGuard (HKDF over HMAC-BLAKE2s)', () => {
  const chainingKey = hash(ascii('Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s'));
  const input = counting(32);
  const [t1, t2, t3] = kdf3(chainingKey, input);
  // Computed with Python: t0 = HMAC(ck, in); t1 = HMAC(t0, 1); t2 = HMAC(t0, t1|2); t3 = HMAC(t0, t2|3).
  assert.equal(hex(t1), '6ff66e10ab4a55ac8144a867fcd9f8ee64d4bd6239223338cb3437cf085ab031');
  assert.equal(hex(t2), '203b22d63d63e35cebb9e40210cf8c1d7f90879428a4c766cda9ef34bb299398');
  assert.equal(hex(t3), '35a7b2fc3e4f59db341dbe588e3b75897980c463d5bbb855f8ed8134ff40133a');
  assert.deepEqual(kdf2(chainingKey, input), [t1, t2]);
  assert.deepEqual(kdf1(chainingKey, input), t1);
});

void test('X25519: RFC 7748 section 5.2 vectors', () => {
  assert.equal(
    hex(
      dh(
        bytes('a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4'),
        bytes('e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c'),
      ),
    ),
    'c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552',
  );
  assert.equal(
    hex(
      dh(
        bytes('4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d'),
        bytes('e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493'),
      ),
    ),
    '95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957',
  );
});

void test('X25519: RFC 7748 section 6.1 Alice and Bob', () => {
  const alicePrivate = bytes('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
  const bobPrivate = bytes('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
  const alicePublic = publicKey(alicePrivate);
  const bobPublic = publicKey(bobPrivate);
  assert.equal(
    hex(alicePublic),
    '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a',
  );
  assert.equal(hex(bobPublic), 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
  const shared = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
  assert.equal(hex(dh(alicePrivate, bobPublic)), shared);
  assert.equal(hex(dh(bobPrivate, alicePublic)), shared);
});

void test('X25519: low-order points give null', () => {
  const privateKey = generatePrivateKey();
  const lowOrder = [
    '0000000000000000000000000000000000000000000000000000000000000000',
    '0100000000000000000000000000000000000000000000000000000000000000',
    'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
    'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  ];
  for (const point of lowOrder) assert.equal(dh(privateKey, bytes(point)), null, point);
  assert.throws(() => dh(privateKey, new Uint8Array(31)), RangeError);
});

void test('generatePrivateKey() is clamped, random, and agrees through dh()', () => {
  const a = generatePrivateKey();
  const b = generatePrivateKey();
  assert.equal(a.length, 32);
  assert.equal(a[0]! & 7, 0);
  assert.equal(a[31]! & 0xc0, 0x40);
  assert.notDeepEqual(a, b);
  assert.deepEqual(dh(a, publicKey(b)), dh(b, publicKey(a)));
});

void test('XChaCha20-Poly1305: draft-irtf-cfrg-xchacha A.3.1', () => {
  const key = bytes('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f');
  const nonce = bytes('404142434445464748494a4b4c4d4e4f5051525354555657');
  const aad = bytes('50515253c0c1c2c3c4c5c6c7');
  const plaintext = ascii(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
  );
  const expected =
    'bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39' +
    'ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9' +
    '21f9664c97637da9768812f615c68b13b52e' +
    'c0875924c1c7987947deafd8780acf49';
  const sealed = xaeadSeal(key, nonce, plaintext, aad);
  assert.equal(hex(sealed), expected);
  assert.deepEqual(xaeadOpen(key, nonce, sealed, aad), plaintext);

  const tampered = Uint8Array.from(sealed);
  tampered[tampered.length - 1]! ^= 0x80;
  assert.equal(xaeadOpen(key, nonce, tampered, aad), null);
  assert.equal(xaeadOpen(key, nonce, sealed, new Uint8Array(0)), null);
  assert.equal(xaeadOpen(key, nonce, sealed.subarray(0, 15), aad), null);
  assert.throws(() => xaeadSeal(key, nonce.subarray(0, 12), plaintext, aad), RangeError);
});

void test('constantTimeEqual and randomBytes', () => {
  assert.equal(constantTimeEqual(bytes('0102'), bytes('0102')), true);
  assert.equal(constantTimeEqual(bytes('0102'), bytes('0103')), false);
  assert.equal(constantTimeEqual(bytes('0102'), bytes('010200')), false);
  assert.equal(constantTimeEqual(new Uint8Array(0), new Uint8Array(0)), true);
  assert.equal(randomBytes(17).length, 17);
  assert.notDeepEqual(randomBytes(32), randomBytes(32));
});
