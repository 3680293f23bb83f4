import type { DatagramBatch } from './datagram-batch.ts';
import type { AddressFamily } from '@gatehouse/addresses';

/**
 * A bound UDP socket that moves batches (the shape of wireguard-go's
 * `conn.Bind`). One thread uses a socket at a time; `wake` may be called
 * from any thread.
 */
export interface DatagramSocket {
  readonly family: AddressFamily;
  readonly localPort: number;
  /** True when `sendBatch` may coalesce equal-sized datagrams into one GSO send. */
  readonly gso: boolean;
  /** True when `receiveBatch` may return GRO-coalesced datagrams (see `segmentSizes`). */
  readonly gro: boolean;
  /**
   * Fills slots 0.. of `batch` with waiting datagrams, without blocking.
   * Returns how many; 0 when none is waiting.
   */
  receiveBatch(batch: DatagramBatch): number;
  /**
   * Sends slots 0..count-1 of `batch` (each slot one datagram to its own
   * endpoint). Returns how many were handed to the network; the rest were
   * dropped (buffers full for too long, or an unreachable destination).
   */
  sendBatch(batch: DatagramBatch, count: number): number;
  /**
   * Blocks until a datagram is waiting, `wake` is called, or `timeoutMs`
   * passes (-1: no limit). Returns true when woken by `wake`.
   */
  waitReadable(timeoutMs: number): boolean;
  /** Makes a current or the next `waitReadable` return. Safe from any thread. */
  wake(): void;
  close(): void;
}
