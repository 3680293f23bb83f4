/**
 * The seam between the service (control socket, CLI, signals) and the data
 * plane. The engine that moves packets and configures the interface
 * implements Tunnel; the service only starts it, asks it for status and
 * stops it.
 */

import type { EngineEvent } from '@gatehouse/engine';
import type {
  ConnectionFailureReason,
  DnsResourcesStatus,
  TunnelDetails,
} from '@gatehouse/protocol';
import type { TunnelSpec } from './tunnel-spec.ts';

/** The tunnel's part of a connected status; the service adds the state and its own counters. */
export type TunnelReport = TunnelDetails;

/** A start that failed, and at which step (the connection state's failure reason). */
export class TunnelStartError extends Error {
  override readonly name = 'TunnelStartError';
  readonly reason: ConnectionFailureReason;

  constructor(reason: ConnectionFailureReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

export const NO_DNS_RESOURCES: DnsResourcesStatus = {
  patterns: [],
  stubRunning: false,
  stubAddresses: [],
  upstreams: [],
};

/** What the tunnel's owner hears from a running tunnel. */
export interface TunnelEvents {
  /** The data plane failed for good after start (the service then stops the tunnel). */
  onFailed?: (error: Error) => void;
  /**
   * The engine's events: a route miss (the first packet to an address no peer covers; a few are
   * held and flow once apply() gives a peer that covers it), a peer's handshake failing, a
   * handshake completing, a peer going idle.
   */
  onEngineEvent?: (event: EngineEvent) => void;
}

/** A DNS resource's name for one of the proxy addresses the stub handed out, with all of them. */
export interface ProxyAddressName {
  name: string;
  proxyAddresses: string[];
}

export interface Tunnel {
  /**
   * Creates and configures the interface (addresses with their prefixes,
   * MTU, link up, routes, FwMark), system DNS and the DNS resources, and
   * starts moving packets.
   * On failure it undoes whatever it had done before rejecting, with a
   * TunnelStartError naming the step. `events` hears what happens after start.
   */
  start(spec: TunnelSpec, events?: TunnelEvents): Promise<void>;
  /**
   * Changes the running tunnel into `spec`, touching only what differs (see
   * diffTunnelSpecs): a peer's change leaves the other peers' sessions alone.
   * Refuses a change of what the tunnel is built around (FIXED_FIELDS).
   */
  apply(spec: TunnelSpec): Promise<void>;
  /** Undoes everything start did. Safe to call twice, and after a failed start. */
  stop(): Promise<void>;
  /** Peers and counters right now; only called between start and stop. */
  status(): TunnelReport;
  /**
   * Applies the running spec with these DNS resources (name patterns,
   * already checked) the DNS stub answers with proxy addresses; an empty
   * list stops the stub. Resolves with the DNS resources' status after it.
   */
  setDnsResources(patterns: readonly string[]): Promise<DnsResourcesStatus>;
  /**
   * The name the DNS stub gave `address` (one of its proxy addresses) and all of that name's
   * proxy addresses; undefined when the stub does not run or never handed it out.
   */
  lookupProxyAddress(address: string): ProxyAddressName | undefined;
}
