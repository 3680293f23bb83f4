/**
 * The seam between the service (control socket, CLI, signals) and the data
 * plane. The engine that moves packets and configures the interface
 * implements Tunnel; the service only starts it, asks it for status and
 * stops it.
 */

import type { DnsResourcesStatus, TunnelStatus } from '@gatehouse/protocol';
import type { WgQuickConfig } from './wg-quick-config.ts';

/** The tunnel's part of the status; the service adds its control socket's and its log's counters. */
export type TunnelReport = Omit<TunnelStatus, 'controlSocket' | 'logLinesLost'>;

export interface TunnelConfig extends WgQuickConfig {
  /** The network interface to create, e.g. from the configuration file's name as wg-quick does. */
  interfaceName: string;
}

export const NO_DNS_RESOURCES: DnsResourcesStatus = {
  patterns: [],
  stubRunning: false,
  stubAddresses: [],
  upstreams: [],
};

export interface Tunnel {
  /**
   * Creates and configures the interface (addresses with their prefixes,
   * MTU, link up, routes for AllowedIPs, FwMark) and starts moving packets.
   * On failure it undoes whatever it had done before rejecting. `onFailed`
   * hears when the data plane fails for good after start; status() then
   * reports state 'failed' with the error.
   */
  start(config: TunnelConfig, onFailed?: (error: Error) => void): Promise<void>;
  /** Undoes everything start did. Safe to call twice, and after a failed start. */
  stop(): Promise<void>;
  /** Peers and counters right now; only called between start and stop. */
  status(): TunnelReport;
  /**
   * Replaces the DNS resources (name patterns, already checked) the DNS stub
   * answers with proxy addresses; an empty list stops the stub. Resolves
   * with the DNS resources' status after the change.
   */
  setDnsResources(patterns: readonly string[]): Promise<DnsResourcesStatus>;
}
