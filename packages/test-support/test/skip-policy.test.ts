import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { SKIPS_ALLOWED_IN_CI, skipLoudly, skipVerdict } from '../src/index.ts';

function recordingContext(): { fullName: string; skip(message?: string): void; skips: string[] } {
  const skips: string[] = [];
  return { fullName: 'suite > case', skip: (message = '') => skips.push(message), skips };
}

void describe('skip policy', () => {
  void it('outside CI a skip is a skip, with its reason', () => {
    for (const env of [{}, { CI: 'false' }, { CI: '1' }]) {
      assert.deepEqual(skipVerdict('needs root', env), { action: 'skip', message: 'needs root' });
    }
  });

  void it('in CI a skip for any reason not on the allow-list fails, naming the reason', () => {
    const verdict = skipVerdict('missing tools: wireguard-go', { CI: 'true' });

    assert.equal(verdict.action, 'fail');
    assert.match(verdict.message, /may not skip \(missing tools: wireguard-go\)/);
    assert.match(verdict.message, /no-electron-binary/);
  });

  void it('an allow-listed reason skips in CI and outside it, saying why', () => {
    for (const env of [{}, { CI: 'true' }]) {
      const verdict = skipVerdict('no-electron-binary', env);
      assert.equal(verdict.action, 'skip');
      assert.equal(
        verdict.message,
        `no-electron-binary: ${SKIPS_ALLOWED_IN_CI['no-electron-binary']}`,
      );
    }
  });

  void it('only own names are allowed, not inherited object keys', () => {
    assert.equal(skipVerdict('toString', { CI: 'true' }).action, 'fail');
    assert.equal(skipVerdict('constructor', { CI: 'true' }).action, 'fail');
  });

  void it('skipLoudly skips the test and says so on stderr', (t) => {
    const stderr = t.mock.method(console, 'error', () => {});
    const context = recordingContext();

    skipLoudly(context, 'needs root', {});

    assert.deepEqual(context.skips, ['needs root']);
    assert.deepEqual(stderr.mock.calls[0]?.arguments, ['SKIPPED suite > case: needs root']);
  });

  void it('skipLoudly in CI fails the test instead of skipping it', () => {
    const context = recordingContext();

    assert.throws(
      () => skipLoudly(context, 'needs root', { CI: 'true' }),
      (error: Error) =>
        error instanceof assert.AssertionError &&
        /^suite > case: CI=true: a test may not skip \(needs root\)/.test(error.message),
    );
    assert.deepEqual(context.skips, []);
  });
});
