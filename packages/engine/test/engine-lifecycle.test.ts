import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { MemoryTunQueues } from '@gatehouse/tun';
import { MemoryUdpNetwork } from '@gatehouse/udp';
import { generateKeyPair } from '@gatehouse/wireguard';

import { Engine } from '../src/engine.ts';

const MTU = 1280;

void describe('engine lifecycle', () => {
  void it('wipes the private key it was given when it stops, and when it fails to start', async () => {
    const network = new MemoryUdpNetwork({ maxSockets: 4, queueDepth: 64 });
    const started = generateKeyPair().privateKey;
    const engine = await Engine.startWithMemoryDevices(
      { interfaceName: 'wipe0', privateKey: started, mtu: MTU },
      [{ publicKey: generateKeyPair().publicKey, allowedIps: ['10.1.0.0/24'] }],
      {
        tun: new MemoryTunQueues({ queues: 1, mtu: MTU }),
        network,
        sockets: [network.bind('10.0.0.1', 1)],
      },
    );
    assert.ok(
      started.some((byte) => byte !== 0),
      'kept while running',
    );
    await engine.stop();
    assert.ok(
      started.every((byte) => byte === 0),
      'wiped by stop',
    );

    const refused = generateKeyPair().privateKey;
    await assert.rejects(
      Engine.startWithMemoryDevices({ interfaceName: 'wipe1', privateKey: refused, mtu: MTU }, [], {
        tun: new MemoryTunQueues({ queues: 2, mtu: MTU }),
        network,
        sockets: [network.bind('10.0.0.2', 1)],
      }),
      /one socket per TUN queue/,
    );
    assert.ok(
      refused.every((byte) => byte === 0),
      'wiped by the failed start',
    );
  });
});
