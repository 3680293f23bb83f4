import assert from 'node:assert/strict';
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';

import { decodeKey, encodeKey, generateKeyPair } from '@gatehouse/wireguard';
import { skipLoudly } from '@gatehouse/test-support';

import { loadOrCreatePrivateKey, PRIVATE_KEY_FILE, PrivateKeyError } from '../src/private-key.ts';

const uid = process.geteuid?.() ?? 0;

function stateDir(t: TestContext): string {
  const parent = mkdtempSync(join(tmpdir(), 'gatehouse-gw-key-'));
  t.after(() => rmSync(parent, { recursive: true, force: true }));
  return join(parent, 'state');
}

void test('a missing key is made: the directory 0700, the file 0600, both owned by the process user', (t) => {
  const dir = stateDir(t);

  const key = loadOrCreatePrivateKey(dir, uid);

  assert.equal(key.created, true);
  assert.equal(key.path, join(dir, PRIVATE_KEY_FILE));
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  const file = statSync(key.path);
  assert.equal(file.mode & 0o777, 0o600);
  assert.equal(file.uid, uid);
  assert.equal(readFileSync(key.path, 'utf8'), `${encodeKey(key.privateKey)}\n`);
});

void test('a restarted gateway keeps its key and so its public key', (t) => {
  const dir = stateDir(t);
  const first = loadOrCreatePrivateKey(dir, uid);

  const second = loadOrCreatePrivateKey(dir, uid);

  assert.equal(second.created, false);
  assert.deepEqual(second.privateKey, first.privateKey);
  assert.deepEqual(second.publicKey, first.publicKey);
});

void test('the public key of a key written by hand is derived from it (as wg pubkey does)', (t) => {
  const dir = stateDir(t);
  mkdirSync(dir, { mode: 0o700 });
  const pair = generateKeyPair();
  writeFileSync(join(dir, PRIVATE_KEY_FILE), `${encodeKey(pair.privateKey)}\n`, { mode: 0o600 });

  const key = loadOrCreatePrivateKey(dir, uid);

  assert.equal(encodeKey(key.publicKey), encodeKey(pair.publicKey));
});

const refusals: { name: string; arrange: (dir: string) => void; message: RegExp }[] = [
  {
    name: 'a key readable by its group',
    arrange: (dir) => chmodSync(join(dir, PRIVATE_KEY_FILE), 0o640),
    message: /open to group or others \(mode 0640\): chmod 600 .*private-key/,
  },
  {
    name: 'a key readable by others',
    arrange: (dir) => chmodSync(join(dir, PRIVATE_KEY_FILE), 0o604),
    message: /open to group or others \(mode 0604\): chmod 600/,
  },
  {
    name: 'a key that is not a key',
    arrange: (dir) => writeFileSync(join(dir, PRIVATE_KEY_FILE), 'hello\n'),
    message: /does not hold a WireGuard private key .*: remove it to make a new one/,
  },
  {
    name: 'a symbolic link in the key’s place',
    arrange: (dir) => {
      rmSync(join(dir, PRIVATE_KEY_FILE));
      writeFileSync(join(dir, 'elsewhere'), `${encodeKey(generateKeyPair().privateKey)}\n`, {
        mode: 0o600,
      });
      symlinkSync(join(dir, 'elsewhere'), join(dir, PRIVATE_KEY_FILE));
    },
    message: /is a symbolic link: remove it/,
  },
  {
    name: 'a state directory others may write to',
    arrange: (dir) => chmodSync(dir, 0o777),
    message: /writable by group or others: chmod 700/,
  },
];

for (const { name, arrange, message } of refusals) {
  void test(`refused: ${name}`, (t) => {
    const dir = stateDir(t);
    loadOrCreatePrivateKey(dir, uid);
    arrange(dir);

    assert.throws(
      () => loadOrCreatePrivateKey(dir, uid),
      (error: Error) => {
        assert.ok(error instanceof PrivateKeyError, String(error));
        assert.match(error.message, message);
        return true;
      },
    );
  });
}

void test('refused: a key owned by another user', (t) => {
  if (uid !== 0) {
    skipLoudly(t, 'needs root: only root can give a file to another user');
    return;
  }
  const dir = stateDir(t);
  const key = loadOrCreatePrivateKey(dir, uid);
  chownSync(key.path, 65534, 65534);

  assert.throws(() => loadOrCreatePrivateKey(dir, uid), /owned by uid 65534, not 0: chown 0:65534/);
});

void test('the error never holds the key', (t) => {
  const dir = stateDir(t);
  const key = loadOrCreatePrivateKey(dir, uid);
  const text = encodeKey(key.privateKey);
  chmodSync(key.path, 0o644);

  assert.throws(
    () => loadOrCreatePrivateKey(dir, uid),
    (error: Error) => !error.message.includes(text) && !error.message.includes(text.slice(0, 12)),
  );
  assert.deepEqual(decodeKey(readFileSync(key.path, 'utf8').trim()), key.privateKey);
});
