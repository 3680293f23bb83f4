import assert from 'node:assert/strict';
import { it } from 'node:test';
import {
  DROP_REASONS as ENGINE_DATA_PATH_REASONS,
  UNATTRIBUTED_ONLY_REASONS,
} from '@gatehouse/engine';
import type { EngineStatus } from '@gatehouse/engine';
import {
  DROP_REASONS,
  TunnelStatusSchema,
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

/** The tunnel's part of the status: the service adds the rest. */
const TUNNEL_REPORT_SCHEMA = TunnelStatusSchema.omit({ controlSocket: true, logLinesLost: true });

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
      failure: null,
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

void it("a failed engine's error and its worker restarts reach the protocol status", () => {
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
    failure: null as string | null,
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
  assert.equal(running.state, 'running');
  assert.equal(running.workerRestarts, 3);
  assert.equal('error' in running, false);

  const failure = 'data worker 1 died 4 times within 60 s (last: exited with code 1)';
  const failed = tunnelStatusFromEngine({ ...engine, failure }, dns, resources);
  assert.equal(failed.state, 'failed');
  assert.equal(failed.error, failure);
});
