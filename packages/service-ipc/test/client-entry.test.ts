import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';

const PACKAGE_DIR = new URL('..', import.meta.url).pathname;

/** Every module URL that importing `specifier` resolves, in a fresh process. */
function modulesLoadedBy(specifier: string): string[] {
  const script = `
    import { registerHooks } from 'node:module';
    const urls = [];
    registerHooks({
      resolve(spec, context, next) {
        const resolved = next(spec, context);
        urls.push(resolved.url);
        return resolved;
      },
    });
    const entry = await import(${JSON.stringify(specifier)});
    if (typeof entry.ServiceClient?.connect !== 'function') throw new Error('no ServiceClient');
    process.stdout.write(JSON.stringify(urls));
  `;
  const output = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: PACKAGE_DIR,
    encoding: 'utf8',
    timeout: 30_000,
  });
  return JSON.parse(output) as string[];
}

const isKoffi = (url: string) => /\/node_modules\/(koffi|@koromix)\//.test(url);

void test('the client entry point gives ServiceClient without loading koffi', () => {
  const loaded = modulesLoadedBy('@gatehouse/service-ipc/client');
  assert.ok(
    loaded.some((url) => url.endsWith('/service-ipc/src/client.ts')),
    loaded.join('\n'),
  );
  assert.deepEqual(loaded.filter(isKoffi), []);
});

void test('the package index, which serves the socket, does load koffi (the check above can fail)', () => {
  assert.ok(modulesLoadedBy('@gatehouse/service-ipc').some(isKoffi));
});
