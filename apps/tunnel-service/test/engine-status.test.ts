import assert from 'node:assert/strict';
import { it } from 'node:test';
import {
  DROP_REASONS as ENGINE_DATA_PATH_REASONS,
  UNATTRIBUTED_ONLY_REASONS,
} from '@gatehouse/engine';
import type { EngineStatus } from '@gatehouse/engine';
import {
  DROP_REASONS,
  TunnelDetailsSchema,
  UNATTRIBUTED_DROP_REASONS,
  type DnsStatus,
} from '@gatehouse/protocol';
import { DROP_REASONS as WIREGUARD_REASONS } from '@gatehouse/wireguard';

import { tunnelStatusFromEngine } from '../src/engine-status.ts';

void it("the protocol carries exactly the engine's drop reasons", () => {
  const engine = new Set<string>([...WIREGUARD_REASONS, ...ENGINE_DATA_PATH_REASONS]);
  assert.deepEqual([...engine].sort(), [...DROP_REASONS].sort());
});

void it("the protocol's unattributed reasons are exactly the engine's", () => {
  const engine = new Set<string>([
    ...WIREGUARD_REASONS,
    ...ENGINE_DATA_PATH_REASONS,
    ...UNATTRIBUTED_ONLY_REASONS,
  ]);
  assert.deepEqual([...engine].sort(), [...UNATTRIBUTED_DROP_REASONS].sort());
});

/** The tunnel's part of a connected status: the service adds the state and its counters. */
const TUNNEL_REPORT_SCHEMA = TunnelDetailsSchema.strict();

void it('noRoute and every unattributed drop counter reach the protocol status', () => {
  const unattributedDrops = Object.fromEntries(
    UNATTRIBUTED_DROP_REASONS.map((reason, index) => [reason, index + 1]),
  ) as EngineStatus['unattributedDrops'];
  const status = tunnelStatusFromEngine(
    {
      interfaceName: 'gh0',
      listenPort: 51820,
      cryptoProvider: 'test',
      peers: [],
      noRoute: 7,
      unattributedDrops,
      workerRestarts: 0,
    },
    {
      servers: [],
      searchDomains: [],
      reapplied: 0,
      checkFailures: 0,
      applied: false,
      reason: 'test',
    },
    { patterns: [], stubRunning: false, stubAddresses: [], upstreams: [] },
  );
  assert.equal(status.noRoute, 7);
  assert.deepEqual(status.unattributedDrops, unattributedDrops);
  assert.deepEqual(TUNNEL_REPORT_SCHEMA.parse(status).unattributedDrops, unattributedDrops);
});

void it("the engine's worker restarts reach the protocol status", () => {
  const engine = {
    interfaceName: 'gh0',
    listenPort: 51820,
    cryptoProvider: 'test',
    peers: [],
    noRoute: 0,
    unattributedDrops: Object.fromEntries(
      UNATTRIBUTED_DROP_REASONS.map((reason) => [reason, 0]),
    ) as EngineStatus['unattributedDrops'],
    workerRestarts: 3,
  };
  const dns: DnsStatus = {
    servers: [],
    searchDomains: [],
    reapplied: 0,
    checkFailures: 0,
    applied: false,
    reason: 'test',
  };
  const resources = { patterns: [], stubRunning: false, stubAddresses: [], upstreams: [] };
  const running = tunnelStatusFromEngine(engine, dns, resources);
  assert.equal(running.workerRestarts, 3);
});
