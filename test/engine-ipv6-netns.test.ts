/**
 * Two Gatehouse engines in two namespaces joined by a veth pair that
 * carries IPv6 only between them: each peer's endpoint is an IPv6 address
 * (wg-quick `Endpoint = [fd00:210::2]:51821`), so handshakes, keepalives
 * and data all go through the engines' IPv6 sockets. Checked: ping and a
 * checksummed TCP transfer through the tunnel, and both peers' endpoints
 * in the status as IPv6.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import { checkPingAndTransfer, startEnginePair } from './lib/engine-pair.ts';
import { systemTestSkipReason, withTestNetwork } from './lib/netns.ts';

const SIDES = [
  { underlay: 'fd00:210::1', tunnel: '10.213.0.1', port: 51830 },
  { underlay: 'fd00:210::2', tunnel: '10.213.0.2', port: 51831 },
] as const;

async function runPair(queues: number): Promise<void> {
  await withTestNetwork('engine6', async (network) => {
    const namespaces = [await network.addNamespace(), await network.addNamespace()] as const;
    // The veth carries IPv6 only; its IPv4 address is a link-local placeholder nobody routes to.
    await network.addVethPair(
      { namespace: namespaces[0], name: 'veth0', address: '169.254.213.1/30' },
      { namespace: namespaces[1], name: 'veth0', address: '169.254.213.2/30' },
    );
    for (const index of [0, 1] as const) {
      await network.exec(namespaces[index], [
        'ip',
        '-6',
        'addr',
        'add',
        `${SIDES[index].underlay}/64`,
        'dev',
        'veth0',
        'nodad',
      ]);
    }
    const engines = await startEnginePair(network, namespaces, SIDES, {
      interfacePrefix: 'gh6',
      mtu: 1400,
      queues,
    });
    for (const engine of engines) {
      assert.match(engine.process.output(), /IPv4\+IPv6/, engine.process.output());
    }

    await checkPingAndTransfer(network, namespaces, SIDES[1].tunnel, 4 * 1024 * 1024);

    for (const index of [0, 1] as const) {
      const status = await engines[index]!.status();
      const other = SIDES[1 - index]!;
      assert.equal(status.peers[0]?.endpoint, `[${other.underlay}]:${other.port}`);
    }
    for (const engine of engines) {
      assert.doesNotMatch(engine.process.output(), /no IPv6 socket/, engine.process.output());
    }

    await Promise.all(engines.map((engine) => engine.process.stop(3000)));
  });
}

void describe('two engines over an IPv6 underlay', () => {
  for (const queues of [2, 1]) {
    void it(`ping and a 4 MiB TCP transfer with IPv6 endpoints (${queues} queue(s))`, async (t) => {
      const skip = systemTestSkipReason(['ip', 'ping']);
      if (skip !== undefined) return skipLoudly(t, skip);
      await runPair(queues);
    });
  }
});
