/**
 * The etc-resolv-conf mode against a real /etc/resolv.conf, in a private
 * mount namespace where a copy of /etc is bind-mounted over /etc (the host's
 * file is never touched): apply, SIGKILL the process, start again, and the
 * original is back byte for byte.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { skipLoudly } from '@gatehouse/test-support';

import { GATEHOUSE_MARKER } from '../src/dns/resolv-conf.ts';
import type { LongRunning } from './process-helpers.ts';
import { rootSkipReason, runOrThrow, startLongRunning } from './process-helpers.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/dns-control-process.ts', import.meta.url));
const ORIGINAL = Buffer.from(
  '# hand-written, odd bytes kept\r\nnameserver 192.0.2.1\nsearch lan\n\t\u00e9\nno newline at the end',
);
const SETTINGS = { servers: ['100.100.111.1'], searchDomains: ['corp.example'] };

void describe('etc-resolv-conf mode in a mount namespace', () => {
  void it('gives the original back byte for byte after SIGKILL and a restart', async (t) => {
    const skip = rootSkipReason(['unshare', 'nsenter', 'mount']);
    if (skip !== undefined) return skipLoudly(t, skip);

    const hostBefore = await readFile('/etc/resolv.conf');
    const work = await mkdtemp(join(tmpdir(), 'gh-resolvconf-ns-'));
    const running: LongRunning[] = [];
    try {
      const holder = startLongRunning([
        'unshare',
        '--mount',
        '--propagation',
        'private',
        '--',
        'sh',
        '-c',
        `cp -a /etc "${work}/etc" && mount --bind "${work}/etc" /etc && echo ready && exec sleep 120`,
      ]);
      running.push(holder);
      await holder.waitForLine('ready');
      await writeFile(join(work, 'etc', 'resolv.conf'), ORIGINAL);
      const inNamespace = ['nsenter', `--target=${holder.child.pid}`, '--mount', '--'];
      const state = join(work, 'state');
      const fixture = (command: string) => [
        ...inNamespace,
        process.execPath,
        FIXTURE,
        'etc-resolv-conf',
        command,
        state,
      ];

      const service = startLongRunning(fixture('apply'), {
        GATEHOUSE_TEST_DNS_SETTINGS: JSON.stringify(SETTINGS),
      });
      running.push(service);
      await service.waitForLine('applied');
      const applied = runOrThrow([...inNamespace, 'cat', '/etc/resolv.conf']);
      assert.ok(applied.startsWith(GATEHOUSE_MARKER), applied);
      assert.match(applied, /^nameserver 100\.100\.111\.1$/m);

      await service.kill('SIGKILL');
      assert.equal(service.child.signalCode, 'SIGKILL');
      assert.ok(
        (await readFile(join(work, 'etc', 'resolv.conf'), 'utf8')).startsWith(GATEHOUSE_MARKER),
      );

      const restarted = startLongRunning(fixture('repair'));
      running.push(restarted);
      await restarted.waitForLine('repaired');
      assert.deepEqual(await readFile(join(work, 'etc', 'resolv.conf')), ORIGINAL);
      assert.equal(
        runOrThrow([...inNamespace, 'cat', '/etc/resolv.conf']),
        ORIGINAL.toString('utf8'),
      );
    } finally {
      for (const process of running.reverse()) await process.kill();
      await rm(work, { recursive: true, force: true });
    }
    assert.deepEqual(
      await readFile('/etc/resolv.conf'),
      hostBefore,
      "the host's /etc/resolv.conf changed",
    );
  });
});
