import assert from 'node:assert/strict';
import { test } from 'node:test';
import { libsodiumWasmProvider } from '../src/crypto/libsodium-wasm.ts';
import type { ProviderCandidate } from '../src/crypto/select.ts';
import {
  PROVIDER_CANDIDATES,
  selectCryptoProvider,
  selectFromCandidates,
} from '../src/crypto/select.ts';

const [openssl, libsodium, wasm] = PROVIDER_CANDIDATES as [
  ProviderCandidate,
  ProviderCandidate,
  ProviderCandidate,
];

void test('auto picks openssl-native on this machine and says why', async () => {
  const { provider, reason } = await selectCryptoProvider('auto');
  assert.equal(provider.name, 'openssl-native');
  assert.match(reason, /^openssl-native: auto/);
  assert.match(reason, /self-test/);
});

void test('no preference means auto unless GATEHOUSE_CRYPTO_PROVIDER says otherwise', async () => {
  const saved = process.env['GATEHOUSE_CRYPTO_PROVIDER'];
  try {
    delete process.env['GATEHOUSE_CRYPTO_PROVIDER'];
    assert.equal((await selectCryptoProvider()).provider.name, 'openssl-native');
    process.env['GATEHOUSE_CRYPTO_PROVIDER'] = 'libsodium-native';
    const chosen = await selectCryptoProvider();
    assert.equal(chosen.provider.name, 'libsodium-native');
    assert.match(chosen.reason, /from GATEHOUSE_CRYPTO_PROVIDER/);
    assert.equal(
      (await selectCryptoProvider('libsodium-wasm')).provider.name,
      'libsodium-wasm',
      'argument wins',
    );
    process.env['GATEHOUSE_CRYPTO_PROVIDER'] = 'fastest';
    await assert.rejects(
      selectCryptoProvider(),
      /unknown crypto provider 'fastest' \(from GATEHOUSE_CRYPTO_PROVIDER\)/,
    );
  } finally {
    if (saved === undefined) delete process.env['GATEHOUSE_CRYPTO_PROVIDER'];
    else process.env['GATEHOUSE_CRYPTO_PROVIDER'] = saved;
  }
});

void test('every provider can be requested explicitly', async () => {
  for (const name of ['openssl-native', 'libsodium-native', 'libsodium-wasm'] as const) {
    const { provider, reason } = await selectCryptoProvider(name);
    assert.equal(provider.name, name);
    assert.match(reason, new RegExp(`^${name}: requested`));
  }
});

void test('an unknown preference is an error naming the valid choices', async () => {
  await assert.rejects(
    selectCryptoProvider('openssl' as 'auto'),
    /unknown crypto provider 'openssl'; expected one of: auto, openssl-native, libsodium-native, libsodium-wasm/,
  );
});

const missingOpenssl: ProviderCandidate = {
  ...openssl,
  load: () => {
    throw new Error('symbol EVP_chacha20_poly1305 not found');
  },
};
// Loads, but seals with a different key: must fail the known-answer self-test.
const brokenLibsodium: ProviderCandidate = {
  ...libsodium,
  load: async () => {
    const real = await libsodium.load();
    return {
      nonceAead: real.nonceAead,
      provider: {
        ...real.provider,
        transportAead: (key) => real.provider.transportAead(key.map((b) => b ^ 1)),
      },
    };
  },
};

void test('auto skips unavailable and self-test-failing candidates and reports both', async () => {
  const { provider, reason } = await selectFromCandidates(
    [missingOpenssl, brokenLibsodium, wasm],
    'auto',
    undefined,
  );
  assert.equal(provider.name, 'libsodium-wasm');
  assert.match(
    reason,
    /openssl-native skipped: failed to load \(symbol EVP_chacha20_poly1305 not found\)/,
  );
  assert.match(reason, /libsodium-native skipped: self-test failed: transport ciphertext mismatch/);
});

void test('an explicitly requested provider that is unavailable is an error saying why', async () => {
  await assert.rejects(
    selectFromCandidates([missingOpenssl, libsodium, wasm], 'openssl-native', undefined),
    /crypto provider 'openssl-native' was requested but is unavailable: failed to load \(symbol EVP_chacha20_poly1305 not found\)/,
  );
  await assert.rejects(
    selectFromCandidates([openssl, brokenLibsodium, wasm], 'libsodium-native', undefined),
    /'libsodium-native' was requested but is unavailable: self-test failed/,
  );
});

void test('auto with no usable candidate is an error listing every reason', async () => {
  await assert.rejects(
    selectFromCandidates([missingOpenssl, brokenLibsodium], 'auto', undefined),
    /no usable crypto provider: openssl-native skipped: .*; libsodium-native skipped: /,
  );
  const { provider } = await selectFromCandidates([wasm], 'auto', undefined);
  assert.equal(provider, libsodiumWasmProvider);
});
