import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DnsResourcesStatus } from '@gatehouse/protocol';
import { silentLogger } from '@gatehouse/logging';
import { ServiceClient } from '@gatehouse/service-ipc';
import { skipLoudly } from '@gatehouse/test-support';
import { DryRunTunnel } from '../src/dry-run-tunnel.ts';
import { runTunnelService } from '../src/service.ts';
import type { TunnelReport } from '../src/tunnel.ts';
import type { TunnelSpec } from '../src/tunnel-spec.ts';
import { parseWgQuickConfig, tunnelSpecFromWgQuick } from '../src/wg-quick-config.ts';

const key = (fill: number) => Buffer.alloc(32, fill).toString('base64');

function spec(): TunnelSpec {
  const parsed = parseWgQuickConfig(
    `[Interface]\nPrivateKey = ${key(1)}\nAddress = 10.9.0.2/24\n[Peer]\nPublicKey = ${key(2)}\nAllowedIPs = 10.9.0.0/24\n`,
  );
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  return tunnelSpecFromWgQuick(parsed.config, 'gh-unit0');
}

/** A dry-run tunnel whose status and DNS resource calls fail when told to; it records stops. */
class FaultyTunnel extends DryRunTunnel {
  statusFailures = 0;
  rejectDnsResources = false;
  stops = 0;

  override status(): TunnelReport {
    if (this.statusFailures > 0) {
      this.statusFailures--;
      throw new Error('status broke');
    }
    return super.status();
  }

  override async setDnsResources(patterns: readonly string[]): Promise<DnsResourcesStatus> {
    if (this.rejectDnsResources) throw new Error('the stub broke, later');
    return super.setDnsResources(patterns);
  }

  override async stop(): Promise<void> {
    this.stops++;
    return super.stop();
  }
}

void test('a handler that throws, one that rejects later and failing status events cost one request or event each, never the tunnel', async (t) => {
  if (process.getuid?.() !== 0) {
    skipLoudly(t, 'needs root: the control socket only admits root (SO_PEERCRED uid 0)');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-service-'));
  const socketPath = join(dir, 'run', 'tunnel.sock');
  const tunnel = new FaultyTunnel();
  // The status event right after start cannot be built.
  tunnel.statusFailures = 1;
  const errors: string[] = [];
  const service = runTunnelService({
    foreground: { spec: spec(), dnsControl: 'auto' },
    socketPath,
    createTunnel: () => tunnel,
    serviceVersion: '0.0.0-test',
    logger: { ...silentLogger, error: (message) => errors.push(message) },
  });
  let finished = false;
  void service.then(() => (finished = true));
  let client: ServiceClient | undefined;
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      client = await ServiceClient.connect({ socketPath }).catch(() => undefined);
      if (client !== undefined && (await client.request('status', {}).catch(() => false))) break;
      client?.close();
      assert.ok(Date.now() < deadline, 'the service did not start serving');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }

    tunnel.statusFailures = 1;
    await assert.rejects(client.request('status', {}), /"status" request failed inside/);

    tunnel.rejectDnsResources = true;
    await assert.rejects(
      client.request('set-dns-resources', { resources: [{ address: 'app.example' }] }),
      /"set-dns-resources" request failed inside/,
    );

    // Applied, then the status event after it cannot be built: the request still succeeds.
    tunnel.rejectDnsResources = false;
    tunnel.statusFailures = 1;
    const applied = await client.request('set-dns-resources', {
      resources: [{ address: 'app.example' }],
    });
    assert.deepEqual(applied.patterns, ['app.example']);

    const status = await client.request('status', {});
    assert.equal(status.state, 'connected');
    assert.deepEqual(status.controlSocket, {
      refusedConnections: 0,
      idleClosed: 0,
      slowClosed: 0,
      badRequests: 0,
      refusedRequests: 0,
      handlerErrors: 2,
      internalErrors: 2,
    });
    assert.equal(tunnel.stops, 0, 'the tunnel was torn down');
    assert.equal(errors.length, 4, errors.join('\n'));
    assert.ok(
      errors.every((message) => !/unexpected error/.test(message)),
      'reached the process-level handler',
    );

    await client.request('down', {});
    assert.equal(await service, 0);
    assert.equal(tunnel.stops, 1);
    assert.equal(existsSync(socketPath), false);
  } finally {
    client?.close();
    // Still running only when an assertion failed: its SIGTERM handler stops it.
    if (!finished) process.kill(process.pid, 'SIGTERM');
    await service;
    rmSync(dir, { recursive: true, force: true });
  }
});
