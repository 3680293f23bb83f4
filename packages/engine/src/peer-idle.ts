/**
 * Which peers went idle: no authenticated traffic either way (keepalives
 * count) for PEER_IDLE_AFTER_MS. Sans-IO: the caller passes the stamps the
 * data workers record and the time; each idle spell is reported once.
 */

export const PEER_IDLE_AFTER_MS = 180_000;

export interface PeerActivity {
  peer: string;
  /** The latest packet sent or received, else when the peer was configured. */
  lastActivityMs: number;
}

export class PeerIdleWatch {
  readonly #idle = new Set<string>();

  /** The peers that became idle since the last call, with how long they have been quiet. */
  check(peers: Iterable<PeerActivity>, nowMs: number): { peer: string; idleMs: number }[] {
    const becameIdle: { peer: string; idleMs: number }[] = [];
    const seen = new Set<string>();
    for (const { peer, lastActivityMs } of peers) {
      seen.add(peer);
      const idleMs = nowMs - lastActivityMs;
      if (idleMs < PEER_IDLE_AFTER_MS) this.#idle.delete(peer);
      else if (!this.#idle.has(peer)) {
        this.#idle.add(peer);
        becameIdle.push({ peer, idleMs });
      }
    }
    for (const peer of this.#idle) if (!seen.has(peer)) this.#idle.delete(peer);
    return becameIdle;
  }
}
