/**
 * The one way a test skips. Outside CI a skip is reported by the runner and
 * on stderr, so nobody mistakes it for a pass. In CI (`CI=true`) a skip fails
 * the test instead: a missing tool or privilege can never turn a run green.
 * The exceptions are the named things CI machines cannot have, each skipped
 * with why.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';

/** What CI machines cannot have, and why: the only skips a CI run accepts. */
export const SKIPS_ALLOWED_IN_CI: Readonly<Record<string, string>> = {
  'no-electron-binary':
    "no Electron binary can be had on these machines: electron's install script downloads it from GitHub, and the npm registry is their only network",
};

export interface SkipVerdict {
  action: 'skip' | 'fail';
  message: string;
}

/** What a test that wants to skip for `reason` does, given the environment. */
export function skipVerdict(reason: string, env: NodeJS.ProcessEnv): SkipVerdict {
  const why = Object.hasOwn(SKIPS_ALLOWED_IN_CI, reason) ? SKIPS_ALLOWED_IN_CI[reason] : undefined;
  if (why !== undefined) return { action: 'skip', message: `${reason}: ${why}` };
  if (env['CI'] === 'true') {
    const allowed = Object.keys(SKIPS_ALLOWED_IN_CI).join(', ');
    return {
      action: 'fail',
      message: `CI=true: a test may not skip (${reason}); the only skips CI allows: ${allowed}`,
    };
  }
  return { action: 'skip', message: reason };
}

/** Skips `t` loudly, or (in CI, for a reason not on the allow-list) fails it saying why. */
export function skipLoudly(
  t: Pick<TestContext, 'fullName' | 'skip'>,
  reason: string,
  env: NodeJS.ProcessEnv = process.env,
): void {
  const verdict = skipVerdict(reason, env);
  if (verdict.action === 'fail') assert.fail(`${t.fullName}: ${verdict.message}`);
  console.error(`SKIPPED ${t.fullName}: ${verdict.message}`);
  t.skip(verdict.message);
}
