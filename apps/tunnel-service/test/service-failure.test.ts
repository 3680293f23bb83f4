import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import type { TunnelStatus } from '@gatehouse/protocol';
import type { Logger } from '@gatehouse/logging';
import { ServiceClient } from '@gatehouse/service-ipc';

import { DryRunTunnel } from '../src/dry-run-tunnel.ts';
import { runTunnelService } from '../src/service.ts';
import type { TunnelSpec } from '../src/tunnel-spec.ts';
import type { TunnelEvents } from '../src/tunnel.ts';
import { parseWgQuickConfig, tunnelSpecFromWgQuick } from '../src/wg-quick-config.ts';

const key = (byte: number) => Buffer.alloc(32, byte).toString('base64');

/** A dry-run tunnel whose data plane the test can fail, as the engine does after its 4th worker death. */
class FailingTunnel extends DryRunTunnel {
  #onFailed: ((error: Error) => void) | undefined;
  stops = 0;

  override async start(spec: TunnelSpec, events?: TunnelEvents): Promise<void> {
    this.#onFailed = events?.onFailed;
    await super.start(spec);
  }

  fail(message: string): void {
    this.#onFailed?.(new Error(message));
  }

  get started(): boolean {
    return this.#onFailed !== undefined;
  }

  override async stop(): Promise<void> {
    this.stops++;
    await super.stop();
  }
}

void it('a data plane that fails for good: status says failed with the error, then the tunnel comes down and up exits 1', async () => {
  const parsed = parseWgQuickConfig(`[Interface]
PrivateKey = ${key(1)}
Address = 10.9.0.2/24

[Peer]
PublicKey = ${key(2)}
AllowedIPs = 10.9.0.0/24
`);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  const directory = await mkdtemp(join(tmpdir(), 'gh-service-failure-'));
  try {
    const socketPath = join(directory, 'tunnel.sock');
    const errors: string[] = [];
    const logger: Logger = {
      debug: () => {},
      info: () => {},
      warn: () => {},
      error: (message) => errors.push(message),
    };
    const tunnel = new FailingTunnel();
    const exitCode = runTunnelService({
      foreground: { spec: tunnelSpecFromWgQuick(parsed.config, 'gh-fail0'), dnsControl: 'auto' },
      socketPath,
      createTunnel: () => tunnel,
      serviceVersion: 'test',
      logger,
    });
    const deadline = performance.now() + 10_000;
    while (!tunnel.started) {
      if (performance.now() > deadline) throw new Error('the service never started the tunnel');
      await sleep(10);
    }
    const client = await ServiceClient.connect({ socketPath, serviceUid: process.getuid!() });
    const seen: TunnelStatus[] = [];
    client.onEvent((event) => {
      if (event.event === 'status-changed') seen.push(event.status);
    });

    tunnel.fail('data worker 0 died 4 times within 60 s (last: exited with code 1)');
    const seenBy = performance.now() + 5_000;
    while (!seen.some((status) => status.state === 'disconnected') && performance.now() < seenBy) {
      await sleep(10);
    }

    assert.equal(await exitCode, 1);
    client.close();
    assert.equal(tunnel.stops, 1, 'the tunnel was taken down');
    assert.ok(
      errors.some((line) => /the tunnel failed: data worker 0 died 4 times/.test(line)),
      errors.join('\n'),
    );
    const failed = seen.filter((status) => status.state === 'disconnecting');
    const down = seen.filter((status) => status.state === 'disconnected');
    assert.equal(failed.length, 1, JSON.stringify(seen.map((s) => s.state)));
    assert.equal(down.length, 1, JSON.stringify(seen.map((s) => s.state)));
    for (const status of [...failed, ...down]) {
      assert.equal(status.failure?.reason, 'engine-failed');
      assert.match(status.failure?.message ?? '', /data worker 0 died 4 times/);
    }
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
});
