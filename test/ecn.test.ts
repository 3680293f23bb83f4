/**
 * ECN through the tunnel (RFC 6040 decapsulation): ECT(0)-marked inner
 * packets cross a path where an nftables rule sets CE on the outer UDP
 * packets; the receiving Gatehouse must hand the inner packets to its TUN
 * with CE set. Without the rule, the inner packets keep ECT(0).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import { systemTestSkipReason, withTestNetwork } from './lib/netns.ts';
import type { TestNetwork } from './lib/netns.ts';
import { describePing, ping } from './lib/ping.ts';
import { PAIR_ADDRESSES, UNDERLAY_INTERFACE, createTunnelPair } from './lib/tunnel-peers.ts';
import type { PeerKind, TunnelPair } from './lib/tunnel-peers.ts';

const TOOLS = ['ip', 'nft', 'ping', 'ss', 'wg', 'wireguard-go'];
const ECT0_TOS = 0x02;
const PINGS = 10;
const SEEN_TABLE = 'gatehouse_ecn_seen';
const MARK_TABLE = 'gatehouse_ecn_mark';

/** [sender, receiver]: the receiver is Gatehouse, whose decapsulation is under test. */
const PAIRS: readonly (readonly [PeerKind, PeerKind])[] = [
  ['gatehouse', 'gatehouse'],
  ['wireguard-go', 'gatehouse'],
];

type Codepoint = 'not-ect' | 'ect1' | 'ect0' | 'ce';
const CODEPOINTS: readonly Codepoint[] = ['not-ect', 'ect1', 'ect0', 'ce'];

/** Counts the echo requests arriving from the tunnel interface, one named counter per ECN codepoint. */
async function countInnerCodepoints(network: TestNetwork, pair: TunnelPair): Promise<void> {
  const tunnel = pair.right.interfaceName;
  const counters = CODEPOINTS.map((codepoint) => `counter ${counterName(codepoint)} {}`);
  const rules = CODEPOINTS.map(
    (codepoint) =>
      `iifname "${tunnel}" icmp type echo-request ip ecn ${codepoint} counter name "${counterName(codepoint)}"`,
  );
  await network.exec(pair.rightNamespace, ['nft', '-f', '-'], {
    input: `table ip ${SEEN_TABLE} {
      ${counters.join('\n      ')}
      chain input {
        type filter hook input priority filter; policy accept;
        ${rules.join('\n        ')}
      }
    }\n`,
  });
}

function counterName(codepoint: Codepoint): string {
  return codepoint.replace('-', '_');
}

async function readCounter(
  network: TestNetwork,
  namespace: string,
  table: string,
  name: string,
): Promise<number> {
  const { stdout } = await network.exec(namespace, ['nft', 'list', 'counter', 'ip', table, name]);
  const packets = /packets (\d+)/.exec(stdout)?.[1];
  if (packets === undefined) throw new Error(`no packet count in: ${stdout}`);
  return Number(packets);
}

async function innerCodepoints(
  network: TestNetwork,
  pair: TunnelPair,
): Promise<Record<Codepoint, number>> {
  const entries = await Promise.all(
    CODEPOINTS.map(
      async (codepoint) =>
        [
          codepoint,
          await readCounter(network, pair.rightNamespace, SEEN_TABLE, counterName(codepoint)),
        ] as const,
    ),
  );
  return Object.fromEntries(entries) as Record<Codepoint, number>;
}

/** On the sender's way out: CE on every outer UDP packet to the receiver, as a congested router would. */
async function markOuterCongestion(network: TestNetwork, pair: TunnelPair): Promise<void> {
  await network.exec(pair.leftNamespace, ['nft', '-f', '-'], {
    input: `table ip ${MARK_TABLE} {
      counter marked {}
      chain postrouting {
        type filter hook postrouting priority filter; policy accept;
        oifname "${UNDERLAY_INTERFACE}" udp dport ${PAIR_ADDRESSES.right.listenPort} ip ecn set ce counter name "marked"
      }
    }\n`,
  });
}

/** Sends ECT(0) echo requests through the tunnel; returns the codepoints the receiver saw meanwhile. */
async function sendEct0Pings(
  network: TestNetwork,
  pair: TunnelPair,
): Promise<Record<Codepoint, number>> {
  const before = await innerCodepoints(network, pair);
  const result = await ping(network, pair.leftNamespace, PAIR_ADDRESSES.right.tunnel, {
    count: PINGS,
    intervalSeconds: 0.05,
    deadlineSeconds: 10,
    tos: ECT0_TOS,
  });
  assert.ok(result.received >= PINGS, describePing(result));
  const after = await innerCodepoints(network, pair);
  return Object.fromEntries(
    CODEPOINTS.map((codepoint) => [codepoint, after[codepoint] - before[codepoint]]),
  ) as Record<Codepoint, number>;
}

for (const kinds of PAIRS) {
  void describe(`ECN: ${kinds[0]} sends, ${kinds[1]} receives`, () => {
    void test(
      'CE on the outer packets reaches the inner packets; without it ECT(0) stays',
      { timeout: 60_000 },
      async (t) => {
        const skipReason = systemTestSkipReason(TOOLS);
        if (skipReason !== undefined) return skipLoudly(t, skipReason);
        await withTestNetwork('ecn', async (network) => {
          const pair = await createTunnelPair(network, kinds);
          try {
            await countInnerCodepoints(network, pair);

            const unmarked = await sendEct0Pings(network, pair);
            // ping keeps sending until PINGS replies came back: at least PINGS arrive.
            assert.ok(unmarked.ect0 >= PINGS, `ECT(0) arrivals: ${JSON.stringify(unmarked)}`);
            assert.deepEqual(
              { ...unmarked, ect0: PINGS },
              { 'not-ect': 0, ect1: 0, ect0: PINGS, ce: 0 },
              'without congestion the inner packets arrive as sent, ECT(0)',
            );

            await markOuterCongestion(network, pair);
            const marked = await sendEct0Pings(network, pair);
            const outerMarked = await readCounter(
              network,
              pair.leftNamespace,
              MARK_TABLE,
              'marked',
            );
            assert.ok(outerMarked >= PINGS, `the rule set CE on ${outerMarked} outer packets`);
            assert.ok(marked.ce >= PINGS, `CE arrivals: ${JSON.stringify(marked)}`);
            assert.deepEqual(
              { ...marked, ce: PINGS },
              { 'not-ect': 0, ect1: 0, ect0: 0, ce: PINGS },
              'CE on the outer packets is copied to the inner ECT(0) packets',
            );
          } catch (error) {
            console.error(`--- receiver (${pair.right.kind}) output (tail) ---`);
            console.error(pair.right.output().trimEnd().split('\n').slice(-40).join('\n'));
            throw error;
          }
        });
      },
    );
  });
}
