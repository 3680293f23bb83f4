/**
 * System DNS through a real systemd-resolved, never installed on the host:
 * its Debian package (the host's systemd version) is unpacked under .cache/,
 * and it runs in a network namespace plus a private mount namespace with a
 * tmpfs /run, its own system D-Bus and copies of passwd/group. Netconfig sets
 * the link DNS of a veth link (standing in for tun-gatehouse) to the stub on
 * the sentinel address; names then resolve through resolvectl and glibc
 * (getent), resource names to proxy addresses and other names through the
 * stub's upstream. DNS= names no resolver, so the stub's upstreams are
 * resolved's own: the server of a default-route "LAN" link, not that of a
 * link that only answers its own domain.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { skipLoudly } from '@gatehouse/test-support';

import type { LongRunning } from '../packages/netconfig/test/process-helpers.ts';
import {
  rootSkipReason,
  run,
  runOrThrow,
  startLongRunning,
} from '../packages/netconfig/test/process-helpers.ts';

const REPOSITORY = fileURLToPath(new URL('..', import.meta.url));
const CACHE = join(REPOSITORY, '.cache', 'systemd-resolved');
const RESOLVED_ROOT = join(CACHE, 'root');
const RESOLVED = join(RESOLVED_ROOT, 'lib', 'systemd', 'systemd-resolved');
const RESOLVECTL = join(RESOLVED_ROOT, 'usr', 'bin', 'resolvectl');
const SERVICE = fileURLToPath(new URL('./fixtures/dns-resolved-service.ts', import.meta.url));
const LINK = 'gh-dns0';
const SENTINEL = '100.100.111.1';
const UPSTREAM = '192.0.2.53';
const LAN_LINK = 'gh-lan0';
const SPLIT_LINK = 'gh-split0';
const RESOLVED_UID = 64_053;
/** Not the standard socket, so netconfig reaches the bus only through DBUS_SYSTEM_BUS_ADDRESS. */
const BUS_SOCKET = '/run/gatehouse-test-bus/system_bus_socket';
const BUS_ADDRESS = `unix:path=${BUS_SOCKET}`;

/** Unpacks systemd-resolved matching the host's systemd into .cache/ (apt-get download; no install). */
function ensureResolvedUnpacked(): string | undefined {
  if (existsSync(RESOLVED) && existsSync(RESOLVECTL)) return undefined;
  const version = run(['dpkg-query', '-W', '-f=${Version}', 'systemd']).stdout.trim();
  if (version === '')
    return 'systemd is not installed, so there is no matching systemd-resolved to download';
  runOrThrow(['mkdir', '-p', CACHE]);
  const download = run([
    'sh',
    '-c',
    `cd "${CACHE}" && apt-get download "systemd-resolved=${version}"`,
  ]);
  if (download.status !== 0)
    return `apt-get download systemd-resolved=${version} failed: ${download.stderr.trim()}`;
  const unpack = run(['sh', '-c', `cd "${CACHE}" && dpkg-deb -x systemd-resolved_*.deb root`]);
  return unpack.status === 0 ? undefined : `dpkg-deb -x failed: ${unpack.stderr.trim()}`;
}

function busConfig(policyDirectory: string): string {
  return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>${BUS_ADDRESS}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"/>
  </policy>
  <includedir>${policyDirectory}</includedir>
</busconfig>
`;
}

void describe('system DNS through a real systemd-resolved', () => {
  void it('resolves resource names to proxy addresses and other names through the upstream', async (t) => {
    const skip = rootSkipReason([
      'ip',
      'unshare',
      'nsenter',
      'mount',
      'dbus-daemon',
      'busctl',
      'getent',
      'dpkg-deb',
    ]);
    if (skip !== undefined) return skipLoudly(t, skip);
    const unpackProblem = ensureResolvedUnpacked();
    if (unpackProblem !== undefined) return skipLoudly(t, unpackProblem);

    const namespace = `gh-resolved-${process.pid}`;
    const work = await mkdtemp(join(tmpdir(), 'gh-resolved-'));
    const running: LongRunning[] = [];
    try {
      await writeFile(
        join(work, 'dbus.conf'),
        busConfig(join(RESOLVED_ROOT, 'usr', 'share', 'dbus-1', 'system.d')),
      );
      const passwd = await readFile('/etc/passwd', 'utf8');
      const group = await readFile('/etc/group', 'utf8');
      const entry = `systemd-resolve:x:${RESOLVED_UID}:${RESOLVED_UID}:resolved:/:/usr/sbin/nologin\n`;
      await writeFile(
        join(work, 'passwd'),
        passwd.includes('\nsystemd-resolve:') ? passwd : passwd + entry,
      );
      await writeFile(
        join(work, 'group'),
        group.includes('\nsystemd-resolve:')
          ? group
          : `${group}systemd-resolve:x:${RESOLVED_UID}:\n`,
      );
      await writeFile(join(work, 'resolv.conf'), 'nameserver 127.0.0.53\noptions edns0\n');
      await mkdir(join(work, 'state'));

      runOrThrow(['ip', 'netns', 'add', namespace]);
      for (const command of [
        ['link', 'set', 'lo', 'up'],
        ['link', 'add', LINK, 'type', 'veth', 'peer', 'name', `${LINK}p`],
        ['link', 'set', LINK, 'up'],
        ['link', 'set', `${LINK}p`, 'up'],
        ['address', 'add', `${SENTINEL}/32`, 'dev', LINK],
        ['address', 'add', `${UPSTREAM}/32`, 'dev', 'lo'],
        ['link', 'add', LAN_LINK, 'type', 'veth', 'peer', 'name', `${LAN_LINK}p`],
        ['link', 'set', LAN_LINK, 'up'],
        ['link', 'set', `${LAN_LINK}p`, 'up'],
        ['link', 'add', SPLIT_LINK, 'type', 'veth', 'peer', 'name', `${SPLIT_LINK}p`],
        ['link', 'set', SPLIT_LINK, 'up'],
        ['link', 'set', `${SPLIT_LINK}p`, 'up'],
      ]) {
        runOrThrow(['ip', '-n', namespace, ...command]);
      }

      const setup = [
        'set -e',
        'mount -t tmpfs tmpfs /run',
        'mkdir -p /run/gatehouse-test-bus /run/systemd/resolve',
        `export DBUS_SYSTEM_BUS_ADDRESS=${BUS_ADDRESS}`,
        `chown ${RESOLVED_UID}:${RESOLVED_UID} /run/systemd/resolve`,
        `mount --bind "${work}/passwd" /etc/passwd`,
        `mount --bind "${work}/group" /etc/group`,
        `mount --bind "${work}/resolv.conf" /etc/resolv.conf`,
        `dbus-daemon --config-file="${work}/dbus.conf" --nofork --nopidfile --nosyslog &`,
        `for i in $(seq 50); do [ -S ${BUS_SOCKET} ] && break; sleep 0.1; done`,
        `"${RESOLVED}" &`,
        `owned() { busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus NameHasOwner s org.freedesktop.resolve1 2>/dev/null | grep -q true; }`,
        'for i in $(seq 50); do owned && break; sleep 0.1; done',
        'owned',
        'echo ready',
        'wait',
      ].join('\n');
      const holder = startLongRunning([
        'ip',
        'netns',
        'exec',
        namespace,
        'unshare',
        '--mount',
        '--propagation',
        'private',
        '--',
        'bash',
        '-c',
        setup,
      ]);
      running.push(holder);
      await holder.waitForLine('ready', 15_000);
      const inside = [
        'nsenter',
        `--target=${holder.child.pid}`,
        '--mount',
        '--net',
        '--',
        'env',
        `DBUS_SYSTEM_BUS_ADDRESS=${BUS_ADDRESS}`,
      ];

      for (const command of [
        ['dns', LAN_LINK, UPSTREAM],
        ['default-route', LAN_LINK, 'yes'],
        ['dns', SPLIT_LINK, '192.0.2.99'],
        ['domain', SPLIT_LINK, '~other.example'],
        ['default-route', SPLIT_LINK, 'no'],
      ]) {
        runOrThrow([...inside, RESOLVECTL, ...command]);
      }

      const service = startLongRunning([
        ...inside,
        process.execPath,
        SERVICE,
        LINK,
        SENTINEL,
        UPSTREAM,
        join(work, 'state'),
      ]);
      running.push(service);
      await service.waitForLine('ready', 15_000);
      assert.match(
        service.output(),
        new RegExp(`^upstreams: ${UPSTREAM.replaceAll('.', '\\.')}$`, 'm'),
      );

      const linkStatus = runOrThrow([...inside, RESOLVECTL, 'status', LINK]);
      assert.match(linkStatus, new RegExp(`DNS Servers: ${SENTINEL.replaceAll('.', '\\.')}`));
      assert.match(linkStatus, /DNS Domain: corp\.example ~\./);
      assert.match(linkStatus, /\+DefaultRoute/);

      const resource = runOrThrow([
        ...inside,
        RESOLVECTL,
        'query',
        '--cache=no',
        'app.corp.example',
      ]);
      assert.match(
        resource,
        new RegExp(`^\\s*(app\\.corp\\.example: )?100\\.96\\.0\\.[1-4]\\s+-- link: ${LINK}$`, 'm'),
      );
      assert.match(resource, new RegExp(`fd00:2021:1111:8000::[1-4]\\s+-- link: ${LINK}$`, 'm'));
      const searched = runOrThrow([...inside, RESOLVECTL, 'query', '--cache=no', '-4', 'app']);
      assert.match(searched, /100\.96\.0\.\d+/);
      const wildcard = runOrThrow([...inside, 'getent', 'ahostsv4', 'db.eu.lab.example']);
      assert.match(wildcard, /^100\.96\.0\.\d+\s+STREAM db\.eu\.lab\.example$/m);
      const v6 = runOrThrow([...inside, 'getent', 'ahostsv6', 'app.corp.example']);
      assert.match(v6, /^fd00:2021:1111:8000::[0-9a-f]+\s+STREAM/m);

      const forwarded = runOrThrow([...inside, 'getent', 'hosts', 'www.example.org']);
      assert.match(forwarded, /^203\.0\.113\.10\s+www\.example\.org$/m);
      const viaResolvectl = runOrThrow([
        ...inside,
        RESOLVECTL,
        'query',
        '--cache=no',
        'www.example.org',
      ]);
      assert.match(viaResolvectl, new RegExp(`203\\.0\\.113\\.10\\s+-- link: ${LINK}$`, 'm'));
      assert.notEqual(run([...inside, 'getent', 'hosts', 'missing.example.org']).status, 0);

      // Something else reverts the link: the watcher notices and applies again.
      runOrThrow([...inside, RESOLVECTL, 'revert', LINK]);
      await service.waitForLine('trample: reapplied', 5000);
      assert.match(
        runOrThrow([...inside, RESOLVECTL, 'dns', LINK]),
        new RegExp(SENTINEL.replaceAll('.', '\\.')),
      );

      await service.kill('SIGTERM');
      assert.match(service.output(), /^restored$/m);
      // Exited by itself after restoring: no D-Bus connection (or anything else) kept it alive.
      assert.equal(service.child.exitCode, 0, service.output());
      const reverted = runOrThrow([...inside, RESOLVECTL, 'status', LINK]);
      assert.doesNotMatch(reverted, /DNS Servers:/);
    } finally {
      for (const process of running.reverse()) await process.kill();
      run(['ip', 'netns', 'delete', namespace]);
      await rm(work, { recursive: true, force: true });
    }
  });
});
