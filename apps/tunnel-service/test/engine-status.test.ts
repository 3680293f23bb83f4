import assert from 'node:assert/strict';
import { it } from 'node:test';
import { DROP_REASONS as ENGINE_DATA_PATH_REASONS } from '@gatehouse/engine';
import { DROP_REASONS } from '@gatehouse/protocol';
import { DROP_REASONS as WIREGUARD_REASONS } from '@gatehouse/wireguard';

void it("the protocol carries exactly the engine's drop reasons", () => {
  const engine = new Set<string>([...WIREGUARD_REASONS, ...ENGINE_DATA_PATH_REASONS]);
  assert.deepEqual([...engine].sort(), [...DROP_REASONS].sort());
});
