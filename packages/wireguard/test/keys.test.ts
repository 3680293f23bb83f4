import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  KeyFormatError,
  decodeKey,
  encodeKey,
  generateKeyPair,
  publicKeyFromPrivateKey,
} from '../src/keys.ts';

void describe('keys', () => {
  void it('round-trips a key through base64', () => {
    const { publicKey } = generateKeyPair();

    const text = encodeKey(publicKey);

    assert.equal(text.length, 44);
    assert.deepEqual(decodeKey(text), publicKey);
  });

  void it('derives the public key of a private key (RFC 7748 test vector)', () => {
    const privateKey = Buffer.from(
      '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a',
      'hex',
    );

    const publicKey = publicKeyFromPrivateKey(new Uint8Array(privateKey));

    assert.equal(
      Buffer.from(publicKey).toString('hex'),
      '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a',
    );
  });

  const bad: [string, string, RegExp][] = [
    ['too short', 'AAAA', /44 base64 characters, got 4/],
    ['too long', 'A'.repeat(43) + '==', /44 base64 characters, got 45/],
    ['missing padding', 'A'.repeat(44), /single "="/],
    ['URL-safe alphabet', '-'.repeat(43) + '=', /standard base64/],
    ['whitespace', ' ' + 'A'.repeat(42) + '=', /standard base64/],
    ['non-canonical trailing bits', 'A'.repeat(42) + 'B=', /not canonical/],
  ];
  for (const [what, text, message] of bad) {
    void it(`refuses ${what}`, () => {
      assert.throws(
        () => decodeKey(text),
        (error: unknown) => {
          assert.ok(error instanceof KeyFormatError);
          assert.match(error.message, message);
          return true;
        },
      );
    });
  }

  void it('refuses to encode bytes that are not 32 long', () => {
    assert.throws(() => encodeKey(new Uint8Array(31)), /must be 32 bytes, got 31/);
  });
});
