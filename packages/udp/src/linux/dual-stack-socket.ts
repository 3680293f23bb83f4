import type { DatagramBatch } from '../datagram-batch.ts';
import type { DatagramSocket } from '../datagram-socket.ts';
import type { AddressFamily } from '@gatehouse/addresses';
import { FdPoller, Waker } from './fd-poller.ts';
import type { LinuxUdpSocket } from './linux-udp-socket.ts';

/**
 * An IPv4 socket and, when the host has IPv6, a v6-only socket on the same
 * port, used as one DatagramSocket: sends go to the socket of each slot's
 * endpoint family (slots of a family nobody serves are dropped), receives
 * take turns between the two so neither starves the other. `wake` and the
 * wake fd are the IPv4 socket's, so a poller over both fds (`fds`) plus
 * that eventfd sees every wake-up.
 */
export class DualStackSocket implements DatagramSocket {
  readonly v4: LinuxUdpSocket;
  readonly v6: LinuxUdpSocket | undefined;
  /** The IPv4 socket's: the family this socket is bound for first. */
  readonly family: AddressFamily = 4;
  readonly localPort: number;
  readonly gro: boolean;
  #v6First = false;
  #poller: FdPoller | undefined;

  constructor(v4: LinuxUdpSocket, v6: LinuxUdpSocket | undefined) {
    if (v4.family !== 4 || (v6 !== undefined && v6.family !== 6)) {
      throw new RangeError('DualStackSocket takes an IPv4 and an IPv6 socket');
    }
    this.v4 = v4;
    this.v6 = v6;
    this.localPort = v4.localPort;
    // Receive slots are sized for GRO when either socket coalesces.
    this.gro = v4.gro || (v6?.gro ?? false);
  }

  get gso(): boolean {
    return this.v4.gso;
  }

  /** The fds to poll for readability: IPv4's, then IPv6's when open. */
  get fds(): number[] {
    return this.v6 === undefined ? [this.v4.fd] : [this.v4.fd, this.v6.fd];
  }

  get wakeFd(): number {
    return this.v4.wakeFd;
  }

  /** Whether datagrams to `family` endpoints can be sent. */
  has(family: AddressFamily): boolean {
    return family === 4 || this.v6 !== undefined;
  }

  receiveBatch(batch: DatagramBatch): number {
    const v6 = this.v6;
    if (v6 === undefined) return this.v4.receiveBatch(batch);
    this.#v6First = !this.#v6First;
    const [first, second] = this.#v6First ? [v6, this.v4] : [this.v4, v6];
    const received = first.receiveBatch(batch);
    return received > 0 ? received : second.receiveBatch(batch);
  }

  sendBatch(batch: DatagramBatch, count: number): number {
    const families = batch.families;
    let sent = 0;
    for (let start = 0; start < count;) {
      const family = families[start];
      let end = start + 1;
      while (end < count && families[end] === family) end++;
      const socket = family === 6 ? this.v6 : this.v4;
      if (socket !== undefined) sent += socket.sendRange(batch, start, end);
      start = end;
    }
    return sent;
  }

  waitReadable(timeoutMs: number): boolean {
    this.#poller ??= new FdPoller(this.fds, Waker.fromFd(this.v4.wakeFd));
    return (this.#poller.wait(timeoutMs) & (1 << this.fds.length)) !== 0;
  }

  wake(): void {
    this.v4.wake();
  }

  close(): void {
    this.v4.close();
    this.v6?.close();
  }
}
