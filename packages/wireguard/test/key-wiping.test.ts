import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { libsodiumWasmProvider } from '../src/crypto/libsodium-wasm.ts';
import { randomBytes } from '../src/crypto/primitives.ts';
import type { CryptoProvider } from '../src/crypto/provider.ts';
import { NoiseHandshake, wipeConsumedInitiation, wipeInitiatorState } from '../src/handshake.ts';
import { WireGuardDevice } from '../src/device.ts';
import { generateKeyPair } from '../src/keys.ts';
import { K_RECEIVE_KEY, K_SEND_KEY, keypairBase } from '../src/worker-contract.ts';
import { TwoPeers } from './two-peers.ts';

/** libsodium's provider, keeping every handshake key and hash (additional data) it is handed. */
function recordingProvider(): { provider: CryptoProvider; seen: Uint8Array[] } {
  const seen: Uint8Array[] = [];
  const provider: CryptoProvider = {
    name: libsodiumWasmProvider.name,
    transportAead: (key) => libsodiumWasmProvider.transportAead(key),
    seal(key, counter, plaintext, aad) {
      seen.push(key, aad);
      return libsodiumWasmProvider.seal(key, counter, plaintext, aad);
    },
    open(key, counter, ciphertext, aad) {
      seen.push(key, aad);
      return libsodiumWasmProvider.open(key, counter, ciphertext, aad);
    },
  };
  return { provider, seen };
}

function assertWiped(buffers: Uint8Array[], what: string): void {
  assert.ok(buffers.length > 0, `${what}: something to check`);
  for (const [index, buffer] of buffers.entries()) {
    assert.ok(
      buffer.length === 0 || buffer.every((byte) => byte === 0),
      `${what}: buffer ${index} is wiped`,
    );
  }
}

void describe('key wiping', () => {
  void it('wipes every key, hash and ephemeral key a handshake step used, keeping only what it returns', () => {
    const initiatorKeys = generateKeyPair();
    const responderKeys = generateKeyPair();
    const presharedKey = randomBytes(32);
    const initiatorRecord = recordingProvider();
    const responderRecord = recordingProvider();
    const initiator = new NoiseHandshake(initiatorKeys, initiatorRecord.provider);
    const responder = new NoiseHandshake(responderKeys, responderRecord.provider);

    const initiatorEphemeral = randomBytes(32);
    const created = initiator.createInitiation(
      { publicKey: responderKeys.publicKey, presharedKey },
      1,
      Date.now(),
      initiatorEphemeral,
    );
    assert.ok(created);
    assertWiped([...initiatorRecord.seen, initiatorEphemeral], 'createInitiation');
    assert.ok(
      created.state.chainKey.some((byte) => byte !== 0),
      'the state keeps its chain key',
    );

    const tampered = new Uint8Array(created.message);
    tampered[100]! ^= 1;
    assert.equal(responder.consumeInitiation(tampered), undefined);
    assertWiped(responderRecord.seen, 'a consumeInitiation that failed');

    const consumed = responder.consumeInitiation(created.message);
    assert.ok(consumed);
    assertWiped(responderRecord.seen, 'consumeInitiation');

    const responderEphemeral = randomBytes(32);
    const response = responder.createResponse(consumed, presharedKey, 2, responderEphemeral);
    assert.ok(response);
    assertWiped([...responderRecord.seen, responderEphemeral], 'createResponse');
    wipeConsumedInitiation(consumed);
    assertWiped([consumed.chainKey, consumed.hash], 'wipeConsumedInitiation');

    initiatorRecord.seen.length = 0;
    const keys = initiator.consumeResponse(
      created.state,
      { publicKey: responderKeys.publicKey, presharedKey },
      response.message,
    );
    assert.ok(keys);
    assert.deepEqual(keys.sendKey, response.keys.receiveKey);
    assertWiped(initiatorRecord.seen, 'consumeResponse');
    wipeInitiatorState(created.state);
    assertWiped(
      [created.state.chainKey, created.state.hash, created.state.ephemeralPrivateKey],
      'wipeInitiatorState',
    );
  });

  void it('wipes the static private key and every keypair when the device closes', () => {
    const net = new TwoPeers();
    net.handshake();
    const device = net.alice.device;
    const memory = device.sharedMemory;
    const keyBytes = (): Uint8Array[] =>
      Array.from({ length: memory.keypairSlots }, (_, slot) => {
        const base = keypairBase(slot);
        return new Uint8Array(
          memory.buffer,
          (base + K_SEND_KEY) * 4,
          (K_RECEIVE_KEY + 8 - K_SEND_KEY) * 4,
        );
      });
    assert.ok(
      keyBytes().some((bytes) => bytes.some((byte) => byte !== 0)),
      'a live keypair',
    );

    device.close();

    assertWiped([net.alice.keys.privateKey, ...keyBytes()], 'close');
    assert.throws(
      () => device.addPeer({ publicKey: generateKeyPair().publicKey }),
      /the device is closed/,
    );
  });

  void it('refuses a wiped (all-zero) private key instead of running with it', () => {
    const net = new TwoPeers();
    net.alice.device.close();
    assert.throws(
      () =>
        new WireGuardDevice({
          privateKey: net.alice.keys.privateKey,
          crypto: libsodiumWasmProvider,
          mtu: 1420,
        }),
      /the private key is all zeros: a wiped key cannot be used again/,
    );
  });
});
