import { describe, it } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import { LINUX_ONLY } from './linux-tun-queue-harness.ts';
import { runContractCase, systemSkipReason } from './netns-harness.ts';
import { CONTRACT, openMemoryHarness } from './tun-queue-contract.ts';

void describe('memory TUN queues', () => {
  for (const [name, run] of Object.entries(CONTRACT)) {
    void it(name, () => run(openMemoryHarness));
  }
});

const skip = systemSkipReason();
for (const variant of ['plain', 'offload'] as const) {
  void describe(`linux TUN queues, offloads ${variant === 'offload' ? 'on' : 'off'}`, () => {
    for (const name of [...Object.keys(CONTRACT), ...Object.keys(LINUX_ONLY)]) {
      void it(name, (t) => (skip ? skipLoudly(t, skip) : runContractCase(name, variant)));
    }
  });
}
