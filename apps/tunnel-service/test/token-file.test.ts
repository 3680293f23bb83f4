import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { skipLoudly } from '@gatehouse/test-support';
import {
  DEFAULT_TOKEN_FILE,
  readPortalToken,
  readTokenFile,
  TOKEN_ENV,
  TokenError,
} from '../src/token-file.ts';

const TOKEN = 'gh.dG9rZW4taWQ.c2VjcmV0LXBhcnQtb2YtdGhlLXRva2Vu';
const uid = process.geteuid?.() ?? 0;

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'gh-token-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A token file owned by this test's user, as root would own it in production. */
function tokenFile(dir: string, mode = 0o600, text = `${TOKEN}\n`): string {
  const path = join(dir, 'token');
  writeFileSync(path, text, { mode });
  chmodSync(path, mode);
  return path;
}

void describe('the token file', () => {
  void it('is read when owned by its owner with mode 0400 or 0600', (t) => {
    for (const mode of [0o400, 0o600]) {
      const dir = tempDir(t);
      assert.equal(readTokenFile(tokenFile(dir, mode), uid), TOKEN);
    }
  });

  void it('is read with a CRLF ending, blanks around it, or no line ending', (t) => {
    for (const text of [`${TOKEN}\r\n`, `  ${TOKEN}  \n\n`, TOKEN]) {
      assert.equal(readTokenFile(tokenFile(tempDir(t), 0o600, text), uid), TOKEN);
    }
  });

  void it('is /etc/gatehouse/client-token unless told', () => {
    assert.equal(DEFAULT_TOKEN_FILE, '/etc/gatehouse/client-token');
  });

  const refusals: {
    name: string;
    arrange: (dir: string) => string;
    message: RegExp;
    rootOnly?: boolean;
  }[] = [
    {
      name: 'mode 0644 (others may read it)',
      arrange: (dir) => tokenFile(dir, 0o644),
      message: /mode 0644; allowed 0400 or 0600\): chown .* && chmod 600 /,
    },
    {
      name: 'mode 0640 (its group may read it)',
      arrange: (dir) => tokenFile(dir, 0o640),
      message: /mode 0640/,
    },
    {
      name: 'mode 0700 (executable)',
      arrange: (dir) => tokenFile(dir, 0o700),
      message: /mode 0700/,
    },
    {
      name: 'mode 0200 (not readable by its owner)',
      arrange: (dir) => tokenFile(dir, 0o200),
      message: /mode 0200/,
    },
    {
      name: 'owned by another user',
      arrange: (dir) => {
        const path = tokenFile(dir);
        chownSync(path, 1234, 1234);
        return path;
      },
      message: /owner uid 1234.*chown root:root .* && chmod 600/,
      rootOnly: true,
    },
    {
      name: 'a symbolic link to a good file',
      arrange: (dir) => {
        const real = tokenFile(dir);
        symlinkSync(real, join(dir, 'link'));
        return join(dir, 'link');
      },
      message: /is a symbolic link: give the file's own path \(readlink -f /,
    },
    {
      name: 'a FIFO (nothing waits for a writer)',
      arrange: (dir) => {
        execFileSync('mkfifo', ['-m', '600', join(dir, 'fifo')]);
        return join(dir, 'fifo');
      },
      message: /is not a regular file/,
    },
    {
      name: 'a directory',
      arrange: (dir) => {
        mkdirSync(join(dir, 'sub'), { mode: 0o700 });
        return join(dir, 'sub');
      },
      message: /is not a regular file/,
    },
    {
      name: 'a missing file',
      arrange: (dir) => join(dir, 'nothing'),
      message: /GATEHOUSE_TOKEN is not set and there is no token file .*chmod 600/,
    },
    {
      name: 'an empty file',
      arrange: (dir) => tokenFile(dir, 0o600, '\n'),
      message: /is empty: put the token in it/,
    },
    {
      name: 'two lines',
      arrange: (dir) => tokenFile(dir, 0o600, `${TOKEN}\n${TOKEN}\n`),
      message: /does not hold a token/,
    },
    {
      name: 'a space inside the token',
      arrange: (dir) => tokenFile(dir, 0o600, `${TOKEN.slice(0, 10)} ${TOKEN.slice(10)}\n`),
      message: /does not hold a token \(one line of at most 4096 printable ASCII characters/,
    },
    {
      name: 'a NUL byte',
      arrange: (dir) => tokenFile(dir, 0o600, `${TOKEN}\0\n`),
      message: /does not hold a token/,
    },
    {
      name: 'a character beyond ASCII',
      arrange: (dir) => tokenFile(dir, 0o600, `${TOKEN}é\n`),
      message: /does not hold a token/,
    },
    {
      name: 'a token longer than the control protocol takes',
      arrange: (dir) => tokenFile(dir, 0o600, `${'x'.repeat(4097)}\n`),
      message: /does not hold a token/,
    },
    {
      name: 'a file too large',
      arrange: (dir) => tokenFile(dir, 0o600, 'x'.repeat(9000)),
      message: /larger than 8192 bytes/,
    },
  ];
  for (const c of refusals) {
    void it(`refuses ${c.name}, saying how to fix it, never quoting the token`, (t) => {
      if (c.rootOnly === true && uid !== 0) {
        skipLoudly(t, 'needs root: chown to another user');
        return;
      }
      const path = c.arrange(tempDir(t));
      assert.throws(
        () => readTokenFile(path, uid),
        (error: unknown) => {
          assert.ok(error instanceof TokenError, String(error));
          assert.match(error.message, c.message);
          assert.ok(!error.message.includes('c2VjcmV0'), error.message);
          return true;
        },
      );
    });
  }

  void it('GATEHOUSE_TOKEN wins and is deleted from the environment once read', (t) => {
    const env: Record<string, string | undefined> = { [TOKEN_ENV]: ` ${TOKEN}\n`, OTHER: 'x' };
    const missing = join(tempDir(t), 'none');
    assert.deepEqual(readPortalToken(env, missing, uid), { token: TOKEN, source: 'env' });
    assert.deepEqual(env, { OTHER: 'x' });
  });

  void it('an empty GATEHOUSE_TOKEN is deleted and the file is read', (t) => {
    const env: Record<string, string | undefined> = { [TOKEN_ENV]: '' };
    const path = tokenFile(tempDir(t));
    assert.deepEqual(readPortalToken(env, path, uid), { token: TOKEN, source: 'file' });
    assert.equal(TOKEN_ENV in env, false);
  });

  void it('a GATEHOUSE_TOKEN with a space inside is refused without quoting it', () => {
    const env: Record<string, string | undefined> = { [TOKEN_ENV]: `${TOKEN} ${TOKEN}` };
    assert.throws(
      () => readPortalToken(env, '/nonexistent', uid),
      (error: unknown) =>
        error instanceof TokenError &&
        /GATEHOUSE_TOKEN does not hold a token/.test(error.message) &&
        !error.message.includes('c2VjcmV0'),
    );
    assert.equal(TOKEN_ENV in env, false);
  });
});
