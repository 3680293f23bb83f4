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
import { describe, it, type TestContext } from 'node:test';
import { skipLoudly } from '@gatehouse/test-support';
import {
  DEFAULT_STATE_DIRECTORY,
  DeviceIdError,
  loadOrCreateDeviceId,
  stateDirectoryFrom,
} from '../src/device-id.ts';

const uid = process.geteuid?.() ?? 0;

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'gh-device-id-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

void describe('the device id', () => {
  void it('is made once, kept 0644 in the state directory, and the same on every later run', (t) => {
    const stateDir = join(tempDir(t), 'state');
    const first = loadOrCreateDeviceId(stateDir);
    assert.equal(first.created, true);
    assert.match(
      first.deviceId,
      /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
    assert.equal(first.path, join(stateDir, 'device-id'));
    assert.equal(readFileSync(first.path, 'utf8'), `${first.deviceId}\n`);
    assert.equal(statSync(first.path).mode & 0o777, 0o644);
    assert.equal(statSync(stateDir).mode & 0o777, 0o755);
    const again = loadOrCreateDeviceId(stateDir);
    assert.deepEqual(again, { ...first, created: false });
  });

  void it('keeps an id written by hand', (t) => {
    const stateDir = tempDir(t);
    writeFileSync(join(stateDir, 'device-id'), 'laptop-7\n', { mode: 0o644 });
    assert.equal(loadOrCreateDeviceId(stateDir).deviceId, 'laptop-7');
  });

  const refusals: { name: string; arrange: (stateDir: string) => void; message: RegExp }[] = [
    {
      name: 'a symbolic link',
      arrange: (stateDir) => {
        writeFileSync(join(stateDir, 'elsewhere'), 'x\n');
        symlinkSync(join(stateDir, 'elsewhere'), join(stateDir, 'device-id'));
      },
      message: /is a symbolic link: remove it/,
    },
    {
      name: 'a directory',
      arrange: (stateDir) => mkdirSync(join(stateDir, 'device-id')),
      message: /is not a regular file/,
    },
    {
      name: 'a file others may change',
      arrange: (stateDir) => {
        writeFileSync(join(stateDir, 'device-id'), 'abc\n');
        chmodSync(join(stateDir, 'device-id'), 0o666);
      },
      message: /may be changed by others .*mode 0666.*chmod 644/,
    },
    {
      name: 'an empty file',
      arrange: (stateDir) => writeFileSync(join(stateDir, 'device-id'), '\n', { mode: 0o644 }),
      message: /does not hold a device id/,
    },
    {
      name: 'a state directory others may change',
      arrange: (stateDir) => chmodSync(stateDir, 0o777),
      message: /state directory .* may be changed by others .*chmod go-w/,
    },
  ];
  for (const c of refusals) {
    void it(`refuses ${c.name}, saying how to fix it`, (t) => {
      const stateDir = tempDir(t);
      c.arrange(stateDir);
      assert.throws(
        () => loadOrCreateDeviceId(stateDir),
        (error: unknown) => {
          assert.ok(error instanceof DeviceIdError, String(error));
          assert.match(error.message, c.message);
          return true;
        },
      );
    });
  }

  void it('refuses a file owned by another user (root only)', (t) => {
    if (uid !== 0) {
      skipLoudly(t, 'needs root: chown to another user');
      return;
    }
    const stateDir = tempDir(t);
    writeFileSync(join(stateDir, 'device-id'), 'abc\n', { mode: 0o644 });
    chownSync(join(stateDir, 'device-id'), 1234, 1234);
    assert.throws(() => loadOrCreateDeviceId(stateDir), /owner uid 1234.*chown 0/);
  });

  void it('lives in STATE_DIRECTORY (its first entry), else /var/lib/gatehouse', () => {
    assert.equal(stateDirectoryFrom({}), DEFAULT_STATE_DIRECTORY);
    assert.equal(stateDirectoryFrom({ STATE_DIRECTORY: '' }), DEFAULT_STATE_DIRECTORY);
    assert.equal(stateDirectoryFrom({ STATE_DIRECTORY: '/var/lib/gh' }), '/var/lib/gh');
    assert.equal(stateDirectoryFrom({ STATE_DIRECTORY: '/var/lib/a:/var/lib/b' }), '/var/lib/a');
  });
});
