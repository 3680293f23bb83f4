import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';

import { readTunKernelDrops } from '../src/kernel-drops.ts';

function fakeSysClassNet(statistics: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'gh-sysfs-'));
  mkdirSync(join(root, 'gh0', 'statistics'), { recursive: true });
  for (const [name, value] of Object.entries(statistics)) {
    writeFileSync(join(root, 'gh0', 'statistics', name), value);
  }
  return root;
}

void it("reads the interface's tx_dropped and rx_dropped", () => {
  const root = fakeSysClassNet({ tx_dropped: '17\n', rx_dropped: '3\n' });
  try {
    assert.deepEqual(readTunKernelDrops('gh0', root), { txDropped: 17, rxDropped: 3 });
  } finally {
    rmSync(root, { recursive: true });
  }
});

void it('is undefined for a missing interface or a counter that is no number', () => {
  const root = fakeSysClassNet({ tx_dropped: 'x\n', rx_dropped: '0\n' });
  try {
    assert.equal(readTunKernelDrops('gh0', root), undefined);
    assert.equal(readTunKernelDrops('gh1', root), undefined);
  } finally {
    rmSync(root, { recursive: true });
  }
});

void it('reads a real interface of this host', () => {
  const drops = readTunKernelDrops('lo');
  assert.ok(drops !== undefined && drops.txDropped >= 0 && drops.rxDropped >= 0);
});
