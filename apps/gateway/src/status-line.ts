/**
 * The one line SIGUSR1 logs: the portal connection, the engine's peers and
 * drops by reason, the nft counter of unmapped proxy addresses, and the
 * session's and the shell's counters (only those that are not zero).
 */
import type { EngineStatus } from '@gatehouse/engine';

import type { UnmappedCount } from './nftables.ts';

export interface StatusInput {
  portalState: string;
  portalReconnects: number;
  engine: EngineStatus;
  /** undefined when it could not be read. */
  unmapped: UnmappedCount | undefined;
  planVersion: number;
  appliedVersion: number | undefined;
  /** The shell's own counters. */
  counters: Readonly<Record<string, number>>;
  sessionStats: unknown;
}

export function formatStatusLine(input: StatusInput): string {
  const { engine } = input;
  const handshaken = engine.peers.filter((peer) => peer.lastHandshake !== null).length;
  const rx = engine.peers.reduce((sum, peer) => sum + peer.rxBytes, 0);
  const tx = engine.peers.reduce((sum, peer) => sum + peer.txBytes, 0);
  const drops: Record<string, number> = {};
  for (const peer of engine.peers) {
    for (const [reason, count] of Object.entries(peer.drops))
      drops[reason] = (drops[reason] ?? 0) + count;
  }
  const parts = [
    `portal ${input.portalState} (reconnects ${input.portalReconnects})`,
    `peers ${engine.peers.length} (${handshaken} with a handshake, rx ${rx} B, tx ${tx} B)`,
    `drops {${nonZero(drops)}}`,
    `unattributed drops {${nonZero(engine.unattributedDrops)}}`,
    `no-route ${engine.noRoute}`,
    `proxy_unmapped ${input.unmapped === undefined ? '?' : `${input.unmapped.packets} packets`}`,
    `plan v${input.planVersion} (applied ${input.appliedVersion === undefined ? 'none' : `v${input.appliedVersion}`})`,
    `gateway {${nonZero(input.counters)}}`,
    `session {${nonZero(flatten(input.sessionStats))}}`,
  ];
  if (engine.failure !== null) parts.push(`engine failed: ${engine.failure}`);
  return `status: ${parts.join(', ')}`;
}

/** `a.b=1 c=2` for the numbers in `counts` that are not zero. */
function nonZero(counts: Readonly<Record<string, number>>): string {
  return Object.entries(counts)
    .filter(([, count]) => count !== 0)
    .map(([name, count]) => `${name}=${count}`)
    .join(' ');
}

/** The numbers in a nested stats object, keyed by their dotted paths. */
export function flatten(value: unknown, prefix = ''): Record<string, number> {
  const out: Record<string, number> = {};
  if (typeof value === 'number') {
    out[prefix || 'value'] = value;
    return out;
  }
  if (value === null || typeof value !== 'object') return out;
  for (const [key, inner] of Object.entries(value as Record<string, unknown>)) {
    Object.assign(out, flatten(inner, prefix === '' ? key : `${prefix}.${key}`));
  }
  return out;
}
