/**
 * The JSON-lines protocol between the interop orchestrator and the Gatehouse
 * peer child: one command per line on the child's stdin, one event per line
 * on its stdout. Keys are base64, as `wg` prints them.
 */

export interface PeerConfiguration {
  privateKey: string;
  /** UDP port to bind; 0 picks one. */
  listenPort: number;
  /** The peer's own tunnel address: echo requests to it are answered. */
  tunnelAddress: string;
  peer: {
    publicKey: string;
    presharedKey?: string;
    endpoint?: { address: string; port: number };
  };
}

export type PeerCommand =
  | { cmd: 'configure'; configuration: PeerConfiguration }
  | {
      cmd: 'echo';
      requestId: number;
      destination: string;
      count: number;
      intervalMs: number;
      timeoutMs: number;
    }
  | { cmd: 'rekey'; requestId: number }
  | { cmd: 'stats'; requestId: number }
  | { cmd: 'exit' };

export type PeerEvent =
  | { event: 'ready'; provider: string; reason: string; port: number }
  | { event: 'handshake-complete'; initiator: boolean; handshakes: number }
  | { event: 'handshake-gave-up'; droppedPackets: number }
  | { event: 'drop'; reason: string }
  | { event: 'echo-done'; requestId: number; sent: number; received: number; failures: string[] }
  | { event: 'echo-request-answered'; source: string; sequence: number }
  | { event: 'unexpected-packet'; reason: string; hex: string }
  | { event: 'rekey-initiated'; requestId: number }
  | { event: 'stats'; requestId: number; stats: Record<string, unknown> }
  | { event: 'error'; message: string };
