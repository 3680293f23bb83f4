/**
 * Tunnel interop in network namespaces: Gatehouse (`gatehouse-tunnel up`)
 * against wireguard-go and against itself — pings, a checksummed TCP
 * transfer, roaming (a peer's underlay address changes) and a peer
 * restarting. wireguard-go against itself runs the same scenarios as the
 * control that proves the scenarios themselves.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import { systemTestSkipReason, withTestNetwork } from './lib/netns.ts';
import type { TestNetwork } from './lib/netns.ts';
import { describePing, ping } from './lib/ping.ts';
import { transferOverTcp } from './lib/tcp-transfer.ts';
import { PAIR_ADDRESSES, UNDERLAY_INTERFACE, createTunnelPair } from './lib/tunnel-peers.ts';
import type { PeerKind, TunnelPair, TunnelPeer } from './lib/tunnel-peers.ts';

const TOOLS = ['ip', 'nft', 'ping', 'ss', 'wg', 'wireguard-go'];
const SCENARIO_TIMEOUT_MS = 60_000;
const TRANSFER_BYTES = 8 * 1024 * 1024;
const TRANSFER_PORT = 5001;
/** WireGuard re-handshakes after 10 s (keepalive) + 5 s (rekey) without an answer; then allow slack. */
const RECOVERY_DEADLINE_SECONDS = 30;

const PAIRS: readonly (readonly [PeerKind, PeerKind])[] = [
  ['gatehouse', 'wireguard-go'],
  ['gatehouse', 'gatehouse'],
  ['wireguard-go', 'wireguard-go'],
];

const { left: LEFT, right: RIGHT } = PAIR_ADDRESSES;
const ROAMED_UNDERLAY = '10.200.0.3';
const ROAMED_PORT = 40_003;

interface Side {
  peer: TunnelPeer;
  namespace: string;
  underlay: string;
  tunnelAddress: string;
  initialEndpoint: string;
}

function sideOf(pair: TunnelPair, which: 'left' | 'right'): Side {
  const addresses = PAIR_ADDRESSES[which];
  return {
    peer: pair[which],
    namespace: which === 'left' ? pair.leftNamespace : pair.rightNamespace,
    underlay: addresses.underlay,
    tunnelAddress: addresses.tunnel,
    initialEndpoint: `${addresses.underlay}:${addresses.listenPort}`,
  };
}

async function withPair(
  t: TestContext,
  kinds: readonly [PeerKind, PeerKind],
  body: (network: TestNetwork, pair: TunnelPair) => Promise<void>,
): Promise<void> {
  const skipReason = systemTestSkipReason(TOOLS);
  if (skipReason !== undefined) return skipLoudly(t, skipReason);
  await withTestNetwork('tunnel', async (network) => {
    const pair = await createTunnelPair(network, kinds);
    try {
      await body(network, pair);
    } catch (error) {
      for (const [side, peer] of [
        ['left', pair.left],
        ['right', pair.right],
      ] as const) {
        console.error(`--- ${side} ${peer.kind} output (tail) ---`);
        console.error(peer.output().trimEnd().split('\n').slice(-40).join('\n'));
      }
      throw error;
    }
  });
}

/** Every one of `count` pings from `namespace` must come back. */
async function assertPings(
  network: TestNetwork,
  namespace: string,
  destination: string,
  what: string,
  count = 5,
): Promise<void> {
  const result = await ping(network, namespace, destination, {
    count,
    intervalSeconds: 0.1,
    deadlineSeconds: 10,
  });
  // With a deadline, ping sends until `count` replies came back; late replies may add to them.
  assert.ok(result.received >= count, `${what}: ${describePing(result)}`);
}

/** Pings until `count` replies came back, within the recovery deadline; returns how long it took. */
async function assertRecovers(
  network: TestNetwork,
  namespace: string,
  destination: string,
  what: string,
): Promise<number> {
  const started = performance.now();
  const count = 3;
  const result = await ping(network, namespace, destination, {
    count,
    intervalSeconds: 0.2,
    deadlineSeconds: RECOVERY_DEADLINE_SECONDS,
  });
  assert.ok(result.received >= count, `${what}: ${describePing(result)}`);
  return (performance.now() - started) / 1000;
}

/**
 * Makes `peer` appear at `newAddress:newPort`, the way the other side sees
 * it roam. A Gatehouse peer really moves: its underlay address is replaced.
 * wireguard-go (0.0.20220316) cannot follow that — it keeps sending from the
 * removed address (a sticky source) and fails with ENETUNREACH — so it is
 * moved behind a NAT that rebinds it to the new address and port, which is
 * what the other side sees of a NAT rebinding.
 */
async function roam(
  network: TestNetwork,
  side: Side,
  newAddress: string,
  newPort: number,
): Promise<string> {
  const prefix = `/${PAIR_ADDRESSES.underlayPrefix}`;
  const dev = ['dev', UNDERLAY_INTERFACE];
  if (side.peer.kind === 'gatehouse') {
    await network.exec(side.namespace, ['ip', 'addr', 'del', `${side.underlay}${prefix}`, ...dev]);
    await network.exec(side.namespace, ['ip', 'addr', 'add', `${newAddress}${prefix}`, ...dev]);
    return `${newAddress}:${side.peer.options.listenPort}`;
  }
  await network.exec(side.namespace, ['ip', 'addr', 'add', `${newAddress}${prefix}`, ...dev]);
  await network.exec(side.namespace, ['nft', '-f', '-'], {
    input: `table ip gatehouse_roam {
      chain postrouting {
        type nat hook postrouting priority srcnat;
        udp sport ${side.peer.options.listenPort} snat to ${newAddress}:${newPort}
      }
    }\n`,
  });
  return `${newAddress}:${newPort}`;
}

function assertStoppedCleanly(
  peer: TunnelPeer,
  exit: { code: number | null; signal: string | null },
): void {
  if (peer.kind !== 'gatehouse') return;
  assert.deepEqual(
    exit,
    { code: 0, signal: null },
    `gatehouse-tunnel exits 0 on SIGTERM: ${peer.output()}`,
  );
}

for (const kinds of PAIRS) {
  void describe(`tunnel interop: ${kinds[0]} ⇄ ${kinds[1]}`, () => {
    void test('pings through the tunnel both ways', { timeout: SCENARIO_TIMEOUT_MS }, (t) =>
      withPair(t, kinds, async (network, pair) => {
        await assertPings(network, pair.leftNamespace, RIGHT.tunnel, 'left pings right', 10);
        await assertPings(network, pair.rightNamespace, LEFT.tunnel, 'right pings left', 10);
        // Full-size packets, not fragmented: 1420 MTU - 20 IPv4 - 8 ICMP.
        const fullSize = await network.exec(pair.leftNamespace, [
          'ping',
          '-n',
          '-c',
          '3',
          '-i',
          '0.1',
          '-W',
          '1',
          '-M',
          'do',
          '-s',
          '1392',
          RIGHT.tunnel,
        ]);
        assert.match(fullSize.stdout, /3 packets transmitted, 3 received/);
      }),
    );

    void test('TCP transfers arrive intact both ways', { timeout: SCENARIO_TIMEOUT_MS }, (t) =>
      withPair(t, kinds, async (network, pair) => {
        for (const [sender, receiver, address, what] of [
          [pair.leftNamespace, pair.rightNamespace, RIGHT.tunnel, 'left to right'],
          [pair.rightNamespace, pair.leftNamespace, LEFT.tunnel, 'right to left'],
        ] as const) {
          const result = await transferOverTcp(network, {
            senderNamespace: sender,
            receiverNamespace: receiver,
            address,
            port: TRANSFER_PORT,
            bytes: TRANSFER_BYTES,
            timeoutMs: 20_000,
          });
          assert.equal(result.received.bytes, TRANSFER_BYTES, `${what}: byte count`);
          assert.equal(result.received.sha256, result.sent.sha256, `${what}: SHA-256`);
        }
      }),
    );

    for (const roamer of ['right', 'left'] as const) {
      const stayer = roamer === 'right' ? 'left' : 'right';
      void test(
        `roaming: the ${stayer} side learns the ${roamer} side's new endpoint`,
        { timeout: SCENARIO_TIMEOUT_MS },
        (t) =>
          withPair(t, kinds, async (network, pair) => {
            const roaming = sideOf(pair, roamer);
            const staying = sideOf(pair, stayer);
            await assertPings(network, staying.namespace, roaming.tunnelAddress, 'before roaming');
            assert.equal(await staying.peer.remoteEndpoint(), roaming.initialEndpoint);

            const seenAt = await roam(network, roaming, ROAMED_UNDERLAY, ROAMED_PORT);
            // The roamed side speaks first: the other learns its endpoint from authenticated packets.
            await assertPings(network, roaming.namespace, staying.tunnelAddress, 'after roaming');
            assert.equal(await staying.peer.remoteEndpoint(), seenAt, 'the learned endpoint');
            await assertPings(
              network,
              staying.namespace,
              roaming.tunnelAddress,
              'to the roamed side',
            );
          }),
      );
    }

    void test('a peer restarting: traffic recovers', { timeout: SCENARIO_TIMEOUT_MS }, (t) =>
      withPair(t, kinds, async (network, pair) => {
        await assertPings(network, pair.leftNamespace, RIGHT.tunnel, 'before restarts');

        // Left still holds the old session, which the restarted right no longer knows:
        // left's timers must notice the silence and handshake again.
        assertStoppedCleanly(pair.right, await pair.right.restart());
        const afterRightRestart = await assertRecovers(
          network,
          pair.leftNamespace,
          RIGHT.tunnel,
          'left to the restarted right',
        );

        // The restarted side has no session and starts the handshake itself.
        assertStoppedCleanly(pair.left, await pair.left.restart());
        const afterLeftRestart = await assertRecovers(
          network,
          pair.leftNamespace,
          RIGHT.tunnel,
          'the restarted left to right',
        );
        t.diagnostic(
          `recovered after ${afterRightRestart.toFixed(1)} s (right restarted), ` +
            `${afterLeftRestart.toFixed(1)} s (left restarted)`,
        );
      }),
    );
  });
}
