/**
 * What the control thread and the data workers exchange at start-up and
 * through their shared control words (see engine-worker.ts).
 */
import type { MessagePort } from 'node:worker_threads';

import type { SharedMemoryTunQueues, TunOffloads } from '@gatehouse/tun';
import type { SharedLinuxUdpSocket, SharedMemoryUdpNetwork } from '@gatehouse/udp';
import type { CryptoProviderName, SharedTransportMemory } from '@gatehouse/wireguard';

import type { SharedAddressActivity } from './address-activity.ts';
import type { SharedAllowedIpsTable } from './allowed-ips.ts';

export type WorkerIo =
  | {
      kind: 'linux';
      tunFd: number;
      mtu: number;
      offloads: TunOffloads;
      udp: SharedLinuxUdpSocket;
      /** The worker's IPv6 socket, absent when the host has no IPv6. */
      udp6?: SharedLinuxUdpSocket;
    }
  | {
      kind: 'memory';
      tun: SharedMemoryTunQueues;
      queue: number;
      network: SharedMemoryUdpNetwork;
      socket: number;
    };

/** What the control thread compiles from the peers' configuration and posts to every worker. */
export interface PeerTables {
  allowedIps: SharedAllowedIpsTable;
  /** See policy.ts. */
  policy: SharedArrayBuffer;
}

export interface WorkerSetup {
  io: WorkerIo;
  transport: SharedTransportMemory;
  crypto: CryptoProviderName;
  tables: PeerTables;
  dropCounters: SharedArrayBuffer;
  activity: SharedAddressActivity;
  handshakes: SharedArrayBuffer;
  relay: SharedArrayBuffer;
  routeMisses: SharedArrayBuffer;
  /** For the MAC1 check before a handshake message enters the ring. */
  mac1Key: Uint8Array;
  control: SharedArrayBuffer;
  port: MessagePort;
}

export type WorkerReport = { ready: true } | { failed: string };

/** Words of the control buffer shared by the control thread and all workers. */
export const CONTROL_STOP = 0;
/** Bumped after a message is posted to every worker's port. */
export const CONTROL_CONFIG_EPOCH = 1;
export const CONTROL_WORDS = 2;
