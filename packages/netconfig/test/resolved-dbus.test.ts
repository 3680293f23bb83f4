/**
 * The dbus-next client against a private dbus-daemon (no root needed) with a
 * stand-in for org.freedesktop.resolve1: what goes over the wire, what comes
 * back, and the errors a user sees. The real resolved is in
 * test/dns-resolved.test.ts.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { Message, Variant, sessionBus } from 'dbus-next';

import { skipLoudly } from '@gatehouse/test-support';

import { DbusResolvedManager, busNameHasOwner } from '../src/dns/resolved-dbus.ts';
import type { LongRunning } from './process-helpers.ts';
import { startLongRunning } from './process-helpers.ts';

const RESOLVE1 = 'org.freedesktop.resolve1';
// dbus-next's typings declare the call being answered as a string; it is the Message.
const errorReply = Message.newError as unknown as (
  call: Message,
  name: string,
  text: string,
) => Message;

function busConfig(socket: string): string {
  return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
    <deny send_destination="${RESOLVE1}" send_interface="${RESOLVE1}.Manager" send_member="RevertLink"/>
  </policy>
</busconfig>
`;
}

async function startBus(work: string): Promise<{ address: string; daemon: LongRunning }> {
  const socket = join(work, 'bus');
  await writeFile(join(work, 'bus.conf'), busConfig(socket));
  const daemon = startLongRunning([
    'dbus-daemon',
    `--config-file=${join(work, 'bus.conf')}`,
    '--nofork',
    '--nopidfile',
    '--nosyslog',
  ]);
  for (let attempt = 0; attempt < 100 && !existsSync(socket); attempt++)
    await new Promise((resolve) => setTimeout(resolve, 20));
  if (!existsSync(socket)) throw new Error(`dbus-daemon did not start:\n${daemon.output()}`);
  return { address: `unix:path=${socket}`, daemon };
}

/** Owns org.freedesktop.resolve1 and answers like resolved does, recording each call. */
async function fakeResolved(address: string) {
  const bus = sessionBus({ busAddress: address });
  await bus.requestName(RESOLVE1, 0);
  const calls: Array<{ member: string; body: unknown[] }> = [];
  bus.addMethodHandler((message: Message) => {
    calls.push({ member: message.member, body: message.body });
    const [first] = message.body as unknown[];
    let reply: Message;
    if (first === 99) reply = errorReply(message, `${RESOLVE1}.NoSuchLink`, 'Link 99 not known');
    else if (message.member === 'GetLink')
      reply = Message.newMethodReturn(message, 'o', ['/org/freedesktop/resolve1/link/_37']);
    else if (message.member === 'Get')
      reply = Message.newMethodReturn(message, 'v', [
        new Variant('a(iiay)', [
          [0, 2, Buffer.from([9, 9, 9, 9])],
          [3, 10, Buffer.from('20010db8000000000000000000000053', 'hex')],
        ]),
      ]);
    else if (message.member === 'GetAll')
      reply = Message.newMethodReturn(message, 'a{sv}', [
        {
          DNS: new Variant('a(iay)', [
            [2, Buffer.from([100, 100, 111, 1])],
            [10, Buffer.from('fd00000000000000000000000000abcd', 'hex')],
          ]),
          Domains: new Variant('a(sb)', [
            ['corp.example', false],
            ['.', true],
          ]),
          DefaultRoute: new Variant('b', true),
        },
      ]);
    else reply = Message.newMethodReturn(message, '', []);
    bus.send(reply);
    return true;
  });
  return { calls, close: () => bus.disconnect() };
}

void describe('DbusResolvedManager', () => {
  void it('sends resolve1 calls with their D-Bus types, reads link properties, explains failures', async (t) => {
    if (spawnSync('sh', ['-c', 'command -v dbus-daemon']).status !== 0)
      return skipLoudly(t, 'missing tool: dbus-daemon');
    const work = await mkdtemp(join(tmpdir(), 'gh-dbus-'));
    const { address, daemon } = await startBus(work);
    try {
      const manager = new DbusResolvedManager({ busAddress: address });

      await assert.rejects(manager.flushCaches(), /^Error: systemd-resolved is not running/);
      assert.equal(await busNameHasOwner(RESOLVE1, { busAddress: address }), false);

      const resolved = await fakeResolved(address);
      try {
        assert.equal(await busNameHasOwner(RESOLVE1, { busAddress: address }), true);
        await manager.setLinkDns(37, ['100.100.111.1', 'fd00::abcd']);
        await manager.setLinkDomains(37, [
          { domain: 'corp.example', routingOnly: false },
          { domain: '.', routingOnly: true },
        ]);
        await manager.setLinkDefaultRoute(37, true);
        await manager.flushCaches();
        assert.deepEqual(
          resolved.calls.map(({ member, body }) => [member, body]),
          [
            [
              'SetLinkDNS',
              [
                37,
                [
                  [2, Buffer.from([100, 100, 111, 1])],
                  [10, Buffer.from('fd00000000000000000000000000abcd', 'hex')],
                ],
              ],
            ],
            [
              'SetLinkDomains',
              [
                37,
                [
                  ['corp.example', false],
                  ['.', true],
                ],
              ],
            ],
            ['SetLinkDefaultRoute', [37, true]],
            ['FlushCaches', []],
          ],
        );
        assert.deepEqual(await manager.linkSettings(37), {
          servers: ['100.100.111.1', 'fd00::abcd'],
          domains: [
            { domain: 'corp.example', routingOnly: false },
            { domain: '.', routingOnly: true },
          ],
          defaultRoute: true,
        });

        assert.deepEqual(await manager.dnsServers(), [
          { ifindex: 0, address: '9.9.9.9' },
          { ifindex: 3, address: '2001:db8::53' },
        ]);
        assert.deepEqual(resolved.calls.at(-1)?.body, ['org.freedesktop.resolve1.Manager', 'DNS']);

        await assert.rejects(
          manager.setLinkDns(99, ['100.100.111.1']),
          /SetLinkDNS on link 99: resolved does not know this link .*NoSuchLink: Link 99 not known/,
        );
        await assert.rejects(
          manager.revertLink(37),
          /RevertLink on link 37: access denied; changing link DNS needs root or CAP_NET_ADMIN/,
        );
      } finally {
        resolved.close();
      }

      const nowhere = `unix:path=${join(work, 'no-such-socket')}`;
      await assert.rejects(
        new DbusResolvedManager({ busAddress: nowhere }).flushCaches(),
        /FlushCaches: cannot talk to the system bus at unix:path=.*no-such-socket: .*ENOENT/,
      );
      assert.equal(await busNameHasOwner(RESOLVE1, { busAddress: nowhere }), false);
    } finally {
      await daemon.kill();
      await rm(work, { recursive: true, force: true });
    }
  });
});
