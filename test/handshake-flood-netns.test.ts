/**
 * A handshake flood against `gatehouse-tunnel up` in namespace A (private
 * /etc): from an extra address of namespace B, a flooder sends well-formed
 * initiations with a valid MAC1 for A's public key from keys A does not know,
 * over several source ports. A's handshake queue backs up, A goes under load
 * and answers with cookie replies, which the flooder receives. Meanwhile the
 * legitimate peer, wireguard-go in B, gets a cookie too, retries with MAC2,
 * completes its handshake and pings through the tunnel, and `status` is
 * answered over the control socket. The flood rate held and the status
 * latencies are printed (console.log), never asserted.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { skipLoudly } from '@gatehouse/test-support';

import { systemTestSkipReason, TestNetwork } from './lib/netns.ts';
import { describePing, ping } from './lib/ping.ts';
import type { PingResult } from './lib/ping.ts';
import { gatehouseCli, startGatehouseUp, startPrivateEtc } from './lib/private-etc.ts';
import { generateKeyPair, WireGuardGo } from './lib/wireguard-go.ts';

const FLOODER = fileURLToPath(new URL('./fixtures/handshake-flooder.ts', import.meta.url));
const INTERFACE = 'ghflood0';
const A = { underlay: '10.210.0.1', tunnel: '10.211.0.1', listenPort: 51820 };
const B = { underlay: '10.210.0.2', tunnel: '10.211.0.2', listenPort: 51821 };
const FLOOD_SOURCE = '10.210.0.3';
/** Initiations per second: well above the few thousand that saturated the control thread before. */
const FLOOD_RATE = 4000;
const FLOOD_SECONDS = 40;
const FLOOD_PORTS = 8;
/** wireguard-go retries a handshake every REKEY_TIMEOUT (5 s): a few retries fit. */
const HANDSHAKE_WITHIN_MS = 25_000;

/** The part of `gatehouse-tunnel status --json` this test reads. */
interface Status {
  peers: { publicKey: string; lastHandshakeAt: number | null }[];
  unattributedDrops: Record<string, number>;
}

void it(
  'a handshake flood gets cookie replies while a legitimate peer completes its handshake and status is answered',
  { timeout: 120_000 },
  async (t) => {
    const skip = systemTestSkipReason([
      'ip',
      'unshare',
      'nsenter',
      'mount',
      'wireguard-go',
      'wg',
      'ping',
    ]);
    if (skip !== undefined) return skipLoudly(t, skip);

    const work = mkdtempSync(join(tmpdir(), 'gh-handshake-flood-'));
    const network = TestNetwork.create('hsflood');
    try {
      const [namespaceA, namespaceB] = await network.addLinkedPair(
        `${A.underlay}/24`,
        `${B.underlay}/24`,
      );
      await network.exec(namespaceB, ['ip', 'addr', 'add', `${FLOOD_SOURCE}/24`, 'dev', 'veth0']);
      const [keysA, keysB] = await Promise.all([generateKeyPair(), generateKeyPair()]);

      const wireguardB = await WireGuardGo.start(network, {
        namespace: namespaceB,
        privateKey: keysB.privateKey,
        listenPort: B.listenPort,
        address: `${B.tunnel}/24`,
      });
      await wireguardB.setPeer({
        publicKey: keysA.publicKey,
        endpoint: `${A.underlay}:${A.listenPort}`,
        allowedIps: [`${A.tunnel}/32`],
      });

      const privateEtc = await startPrivateEtc(network, namespaceA, work);
      const configFile = join(work, `${INTERFACE}.conf`);
      writeFileSync(
        configFile,
        `[Interface]
PrivateKey = ${keysA.privateKey}
Address = ${A.tunnel}/24
ListenPort = ${A.listenPort}

[Peer]
PublicKey = ${keysB.publicKey}
AllowedIPs = ${B.tunnel}/32
`,
        { mode: 0o600 },
      );
      const socketPath = join(work, 'run', 'tunnel.sock');
      const up = await startGatehouseUp(privateEtc, configFile, socketPath);

      const statusLatenciesMs: number[] = [];
      const status = async (): Promise<Status> => {
        const started = performance.now();
        const { stdout } = await gatehouseCli(privateEtc, socketPath, 'status', ['--json']);
        statusLatenciesMs.push(performance.now() - started);
        return JSON.parse(stdout) as Status;
      };
      await status();
      const idleStatusMs = statusLatenciesMs.pop()!;

      const flooder = network.spawn(namespaceB, [
        process.execPath,
        FLOODER,
        FLOOD_SOURCE,
        `${A.underlay}:${A.listenPort}`,
        keysA.publicKey,
        `${FLOOD_RATE}`,
        `${FLOOD_SECONDS}`,
        `${FLOOD_PORTS}`,
      ]);
      const cookiesSent = async (): Promise<number> =>
        (await status()).unattributedDrops['cookie-sent'] ?? 0;
      const underLoadBy = performance.now() + 15_000;
      while ((await cookiesSent()) === 0) {
        assert.ok(flooder.running, `the flooder stopped: ${flooder.output()}`);
        assert.ok(performance.now() < underLoadBy, `no cookie replies: ${flooder.output()}`);
        await sleep(200);
      }

      // The first ping makes wireguard-go initiate; its first initiation gets a cookie reply.
      const handshakeStarted = performance.now();
      let pinged: PingResult | undefined;
      while (performance.now() - handshakeStarted < HANDSHAKE_WITHIN_MS) {
        pinged = await ping(network, namespaceB, A.tunnel, {
          count: 1,
          intervalSeconds: 1,
          deadlineSeconds: 2,
        });
        await status();
        if (pinged.received > 0) break;
      }
      const handshakeSeconds = (performance.now() - handshakeStarted) / 1000;
      assert.ok(pinged !== undefined && pinged.received > 0, pinged && describePing(pinged));
      assert.ok(flooder.running, 'the handshake completed during the flood');
      for (let sample = 0; sample < 5 && flooder.running; sample++) await status();
      const during = await status();
      assert.notEqual(
        during.peers.find((peer) => peer.publicKey === keysB.publicKey)?.lastHandshakeAt,
        null,
      );

      assert.ok(flooder.running, 'status was sampled during the flood');
      await flooder.stop();
      const done = /flood: done sent=(\d+) cookies=(\d+) seconds=([\d.]+) rate=(\d+)/.exec(
        flooder.output(),
      );
      assert.ok(done !== null, `the flooder's summary: ${flooder.output()}`);
      const [, sent, cookies, seconds, rate] = done;
      assert.ok(Number(cookies) > 0, 'the flooder received cookie replies');
      const drops = (await status()).unattributedDrops;
      assert.ok((drops['cookie-sent'] ?? 0) > 0);

      const sorted = [...statusLatenciesMs].sort((a, b) => a - b);
      console.log(
        `handshake flood: ${rate} initiations/s held for ${seconds} s from ${FLOOD_PORTS} ports ` +
          `(${sent} sent, ${cookies} cookie replies received); A counted ` +
          `cookie-sent=${drops['cookie-sent']} unknown-peer=${drops['unknown-peer']} ` +
          `handshake-ring-full=${drops['handshake-ring-full']} bad-mac1=${drops['bad-mac1']}`,
      );
      console.log(
        `handshake flood: wireguard-go's handshake and first ping reply after ${handshakeSeconds.toFixed(1)} s of pinging`,
      );
      console.log(
        `handshake flood: status over the control socket (CLI round trip) idle ${idleStatusMs.toFixed(0)} ms, ` +
          `during the flood median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0)} ms, ` +
          `max ${sorted.at(-1)!.toFixed(0)} ms over ${sorted.length} calls`,
      );

      await gatehouseCli(privateEtc, socketPath, 'down');
      const exit = await up.exited;
      assert.equal(exit.code, 0, up.output());
    } finally {
      await network.destroy();
      rmSync(work, { recursive: true, force: true });
    }
  },
);
