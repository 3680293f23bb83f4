/**
 * Two Gatehouse engines, each in its own process in its own namespace,
 * joined by a veth pair: the kernel's ping and a checksummed TCP transfer
 * through the tunnel, with offloads on and off.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import { checkPingAndTransfer, startEnginePair } from './lib/engine-pair.ts';
import { systemTestSkipReason, withTestNetwork } from './lib/netns.ts';

const SIDES = [
  { underlay: '10.210.0.1', tunnel: '10.211.0.1', port: 51820 },
  { underlay: '10.210.0.2', tunnel: '10.211.0.2', port: 51821 },
] as const;

async function runPair(settings: { queues: number; offloads: boolean }): Promise<void> {
  await withTestNetwork('engine', async (network) => {
    const namespaces = [await network.addNamespace(), await network.addNamespace()] as const;
    await network.addVethPair(
      { namespace: namespaces[0], name: 'veth0', address: `${SIDES[0].underlay}/24` },
      { namespace: namespaces[1], name: 'veth0', address: `${SIDES[1].underlay}/24` },
    );
    const engines = await startEnginePair(network, namespaces, SIDES, {
      interfacePrefix: 'ghe',
      mtu: 1420,
      ...settings,
    });

    await checkPingAndTransfer(network, namespaces, SIDES[1].tunnel, 8 * 1024 * 1024);

    const started = performance.now();
    await Promise.all(engines.map((engine) => engine.process.stop(3000)));
    assert.ok(performance.now() - started < 3000, 'both engines stopped on SIGTERM');
  });
}
void describe('two engines in two namespaces', () => {
  for (const settings of [
    { queues: 2, offloads: true },
    { queues: 1, offloads: false },
  ]) {
    void it(`ping and an 8 MiB TCP transfer (${settings.queues} queue(s), offloads ${settings.offloads ? 'on' : 'off'})`, async (t) => {
      const skip = systemTestSkipReason(['ip', 'ping']);
      if (skip !== undefined) return skipLoudly(t, skip);
      await runPair(settings);
    });
  }
});
