/**
 * Peer configuration as the engine takes it: the peers checked as a whole
 * before anything changes, and compiled into the tables data workers look
 * up (AllowedIPs by slot, per-peer policy).
 */
import { parsePrefix } from '@gatehouse/addresses';
import type { Endpoint } from '@gatehouse/addresses';
import { checkPeerUpdate, encodeKey } from '@gatehouse/wireguard';

import { AllowedIps } from './allowed-ips.ts';
import { checkPolicyRule, compilePolicy } from './policy.ts';
import type { PolicyRule } from './policy.ts';
import type { PeerTables } from './worker-protocol.ts';

export interface EnginePeer {
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  endpoint?: Endpoint;
  allowedIps: string[];
  persistentKeepaliveSeconds?: number;
  /** Destinations its packets may reach (the gateway's policy); absent or empty: what AllowedIPs allow. */
  policy?: PolicyRule[];
}

export interface PeerEntry {
  config: EnginePeer;
  slot: number;
  /** Monotonic ms it was added: its activity before any packet. */
  addedMs: number;
}

/** The peers by key name; throws naming the first problem (a peer listed twice, a bad prefix, rule, endpoint or keepalive). */
export function checkedPeers(peers: readonly EnginePeer[]): Map<string, EnginePeer> {
  const wanted = new Map<string, EnginePeer>();
  for (const peer of peers) {
    const name = encodeKey(peer.publicKey);
    if (wanted.has(name)) throw new Error(`peer ${name} listed twice`);
    for (const cidr of peer.allowedIps) parsePrefix(cidr);
    for (const rule of peer.policy ?? []) checkPolicyRule(rule);
    checkPeerUpdate(name, peer);
    wanted.set(name, peer);
  }
  return wanted;
}

export function compilePeerTables(peers: Iterable<PeerEntry>, peerSlots: number): PeerTables {
  const entries = [...peers];
  const allowed = new AllowedIps();
  for (const entry of entries) {
    for (const cidr of entry.config.allowedIps) allowed.set(cidr, entry.slot);
  }
  const policies = entries.map(({ slot, config }) => ({ slot, rules: config.policy ?? [] }));
  return {
    allowedIps: allowed.compile().shared,
    policy: compilePolicy(policies, peerSlots),
  };
}

/** An unchanged configured endpoint is not written again: the peer may have roamed since. */
export function sameEndpointConfig(a: EnginePeer, b: EnginePeer): boolean {
  if (a.endpoint === undefined || b.endpoint === undefined) return a.endpoint === b.endpoint;
  return a.endpoint.port === b.endpoint.port && sameBytes(a.endpoint.address, b.endpoint.address);
}

export function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.length === b.length && a.every((byte, index) => byte === b[index]);
}
