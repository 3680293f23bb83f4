import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import { systemTestSkipReason, withTestNetwork } from './lib/netns.ts';
import {
  WireGuardGo,
  generateKeyPair,
  generatePresharedKey,
  parseDump,
} from './lib/wireguard-go.ts';

void describe('wireguard-go test peer', { timeout: 30_000 }, () => {
  void test('parses wg dump output', () => {
    const dump = parseDump(
      'PRIV\tPUB\t51820\toff\n' +
        'PEER1\t(none)\t10.98.0.2:4000\t10.99.0.2/32,10.99.1.0/24\t1700000000\t148\t92\t25\n' +
        'PEER2\tPSK\t(none)\t(none)\t0\t0\t0\toff\n',
    );
    assert.equal(dump.publicKey, 'PUB');
    assert.equal(dump.listenPort, 51820);
    assert.deepEqual(dump.peers, [
      {
        publicKey: 'PEER1',
        presharedKey: undefined,
        endpoint: '10.98.0.2:4000',
        allowedIps: ['10.99.0.2/32', '10.99.1.0/24'],
        latestHandshakeSeconds: 1700000000,
        rxBytes: 148,
        txBytes: 92,
        persistentKeepaliveSeconds: 25,
      },
      {
        publicKey: 'PEER2',
        presharedKey: 'PSK',
        endpoint: undefined,
        allowedIps: [],
        latestHandshakeSeconds: 0,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepaliveSeconds: undefined,
      },
    ]);
    assert.throws(
      () => parseDump('PRIV\tPUB\t1\toff\nshort\tline\n'),
      /unexpected wg dump peer line/,
    );
  });

  void test('two wireguard-go peers in namespaces handshake and carry pings', async (t) => {
    const skipReason = systemTestSkipReason(['ip', 'ping', 'wg', 'wireguard-go']);
    if (skipReason !== undefined) return skipLoudly(t, skipReason);
    let socketPaths: string[] = [];
    await withTestNetwork('wgpair', async (network) => {
      const left = await network.addNamespace();
      const right = await network.addNamespace();
      await network.addVethPair(
        { namespace: left, name: 'veth0', address: '10.202.0.1/24' },
        { namespace: right, name: 'veth0', address: '10.202.0.2/24' },
      );
      const [leftKeys, rightKeys, presharedKey] = await Promise.all([
        generateKeyPair(),
        generateKeyPair(),
        generatePresharedKey(),
      ]);
      const leftWg = await WireGuardGo.start(network, {
        namespace: left,
        privateKey: leftKeys.privateKey,
        listenPort: 51820,
        address: '10.203.0.1/24',
      });
      const rightWg = await WireGuardGo.start(network, {
        namespace: right,
        privateKey: rightKeys.privateKey,
        listenPort: 51821,
        address: '10.203.0.2/24',
      });
      assert.notEqual(leftWg.name, rightWg.name);
      assert.ok(leftWg.name.length <= 15);
      socketPaths = [leftWg, rightWg].map((wg) => `/var/run/wireguard/${wg.name}.sock`);
      await leftWg.setPeer({
        publicKey: rightKeys.publicKey,
        presharedKey,
        endpoint: '10.202.0.2:51821',
        allowedIps: ['10.203.0.2/32'],
      });
      await rightWg.setPeer({
        publicKey: leftKeys.publicKey,
        presharedKey,
        allowedIps: ['10.203.0.1/32'],
      });

      const before = await rightWg.peer(leftKeys.publicKey);
      assert.equal(before.latestHandshakeSeconds, 0);
      assert.equal(before.presharedKey, presharedKey);

      const { stdout } = await network.exec(left, [
        'ping',
        '-c',
        '3',
        '-i',
        '0.2',
        '-W',
        '1',
        '10.203.0.2',
      ]);
      assert.match(stdout, /3 packets transmitted, 3 received/);

      const dump = await leftWg.dump();
      assert.equal(dump.publicKey, leftKeys.publicKey);
      assert.equal(dump.listenPort, 51820);
      const after = await rightWg.peer(leftKeys.publicKey);
      assert.ok(after.latestHandshakeSeconds > 0, 'handshake recorded');
      assert.equal(after.endpoint, '10.202.0.1:51820');
      assert.ok(after.rxBytes > 0 && after.txBytes > 0);
    });
    for (const path of socketPaths) assert.ok(!existsSync(path), `${path} removed`);
  });
});
