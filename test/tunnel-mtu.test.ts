/**
 * Full-size packets at the default tunnel MTU: Gatehouse (`gatehouse-tunnel
 * up` with a wg-quick file without `MTU =`, so 1420) against Debian's
 * wireguard-go (its default, 1420) over a 1500-byte veth, with IPv4 and
 * with IPv6 endpoints. Transport padding must stop at the MTU: padded to
 * 16 bytes, a 1420-byte packet would become a 1504-byte IPv6 datagram,
 * which a UDP GSO send refuses (and TCP stalls). Checked both ways: pings
 * of exactly 1420 bytes that must not fragment, and a checksummed TCP
 * transfer of full-size segments, which the engine sends with UDP GSO.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import { systemTestSkipReason, withTestNetwork } from './lib/netns.ts';
import { describePing, ping } from './lib/ping.ts';
import { transferOverTcp } from './lib/tcp-transfer.ts';
import { PAIR_ADDRESSES, createTunnelPair } from './lib/tunnel-peers.ts';

const TOOLS = ['ip', 'ping', 'wg', 'wireguard-go'];
const TIMEOUT_MS = 90_000;
const TRANSFER_BYTES = 16 * 1024 * 1024;
const TRANSFER_PORT = 5002;
/** 1420 (the default MTU) − 20 (IPv4) − 8 (ICMP). */
const FULL_SIZE_PING_PAYLOAD = 1392;

const { left: LEFT, right: RIGHT } = PAIR_ADDRESSES;

for (const underlayFamily of [4, 6] as const) {
  void describe(`full-size packets at the default MTU over IPv${underlayFamily}`, () => {
    void test(
      'gatehouse ⇄ wireguard-go: unfragmented pings and TCP both ways',
      { timeout: TIMEOUT_MS },
      async (t) => {
        const skipReason = systemTestSkipReason(TOOLS);
        if (skipReason !== undefined) return skipLoudly(t, skipReason);
        await withTestNetwork('mtu', async (network) => {
          const pair = await createTunnelPair(network, ['gatehouse', 'wireguard-go'], {
            underlayFamily,
            mtu: 'default',
          });
          try {
            assert.match(pair.left.output(), /UDP GSO on/, 'the engine sends with UDP GSO');
            for (const [namespace, destination, what] of [
              [pair.leftNamespace, RIGHT.tunnel, 'gatehouse to wireguard-go'],
              [pair.rightNamespace, LEFT.tunnel, 'wireguard-go to gatehouse'],
            ] as const) {
              const result = await ping(network, namespace, destination, {
                count: 3,
                intervalSeconds: 0.2,
                deadlineSeconds: 10,
                payloadBytes: FULL_SIZE_PING_PAYLOAD,
                dontFragment: true,
              });
              assert.ok(result.received >= 3, `${what}: ${describePing(result)}`);
            }
            for (const [sender, receiver, address, what] of [
              [pair.leftNamespace, pair.rightNamespace, RIGHT.tunnel, 'gatehouse to wireguard-go'],
              [pair.rightNamespace, pair.leftNamespace, LEFT.tunnel, 'wireguard-go to gatehouse'],
            ] as const) {
              const result = await transferOverTcp(network, {
                senderNamespace: sender,
                receiverNamespace: receiver,
                address,
                port: TRANSFER_PORT,
                bytes: TRANSFER_BYTES,
                timeoutMs: 30_000,
              });
              assert.equal(result.received.bytes, TRANSFER_BYTES, `${what}: byte count`);
              assert.equal(result.received.sha256, result.sent.sha256, `${what}: SHA-256`);
              t.diagnostic(
                `IPv${underlayFamily} ${what}: ${((TRANSFER_BYTES * 8) / result.seconds / 1e6).toFixed(0)} Mbit/s`,
              );
            }
          } catch (error) {
            console.error(
              `--- gatehouse output (tail) ---\n${pair.left.output().split('\n').slice(-40).join('\n')}`,
            );
            throw error;
          }
        });
      },
    );
  });
}
