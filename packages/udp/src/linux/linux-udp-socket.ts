import { DEFAULT_BATCH_SIZE, MAX_DATAGRAM_BYTES } from '../datagram-batch.ts';
import type { DatagramBatch } from '../datagram-batch.ts';
import type { DatagramSocket } from '../datagram-socket.ts';
import { parseAddress } from '@gatehouse/addresses';
import type { AddressFamily } from '@gatehouse/addresses';
import { FdPoller, Waker } from './fd-poller.ts';
import * as libc from '@gatehouse/libc';
import { addressOf } from '@gatehouse/libc';

export interface LinuxUdpSocketOptions {
  family: AddressFamily;
  /** Local address to bind; the wildcard address by default. */
  address?: string;
  /** 0 (default) picks an ephemeral port. */
  port?: number;
  /** Lets several sockets share the port; the kernel spreads senders across them by address hash. */
  reusePort?: boolean;
  /** SO_MARK for every datagram sent, so policy routing can keep tunnel traffic out of the tunnel. Needs CAP_NET_ADMIN. */
  fwmark?: number;
  /** Send and receive buffer size; forced past the sysctl limits when privileged. */
  bufferBytes?: number;
  /** Use UDP GSO on send when the kernel has it (default true). */
  gso?: boolean;
  /** Ask for UDP GRO on receive (default true); receive slots then need MAX_DATAGRAM_BYTES of room. */
  gro?: boolean;
}

/** What another thread needs to use the same socket: plain numbers, structured-cloneable. */
export interface SharedLinuxUdpSocket {
  fd: number;
  wakeFd: number;
  family: AddressFamily;
  localPort: number;
  gso: boolean;
  gro: boolean;
}

const DEFAULT_BUFFER_BYTES = 7 << 20;
/** GSO sends at most this many segments in one go (the kernel's UDP_MAX_SEGMENTS is 64 or more). */
const MAX_GSO_SEGMENTS = 64;
const MESSAGES_PER_CALL = DEFAULT_BATCH_SIZE;
const IOVECS_PER_CALL = MESSAGES_PER_CALL * MAX_GSO_SEGMENTS;
const MMSGHDR_BYTES = 64;
const IOVEC_BYTES = 16;
const NAME_BYTES = 32;
const CONTROL_BYTES = 64;
const SEND_STALL_LIMIT_MS = 200;
const MSG_TRUNC = 0x20;

/**
 * A UDP socket through koffi: batches of up to 64 datagrams per system call
 * (recvmmsg/sendmmsg), UDP GSO on send and GRO on receive, the IP TOS /
 * traffic class byte per datagram both ways, SO_MARK and large buffers.
 * The socket is non-blocking; `waitReadable` sleeps in poll() next to an
 * eventfd that `wake` (from any thread, via `share`) signals.
 */
export class LinuxUdpSocket implements DatagramSocket {
  readonly fd: number;
  readonly family: AddressFamily;
  readonly localPort: number;
  readonly wakeFd: number;
  #gso: boolean;
  readonly gro: boolean;
  readonly #waker: Waker;
  readonly #ownsFds: boolean;
  #poller: FdPoller | undefined;
  #closed = false;

  /** mmsghdr[64] | iovec[4096] | sockaddr[64] | control[64], handed to the kernel by address. */
  readonly #native = new ArrayBuffer(
    MESSAGES_PER_CALL * (MMSGHDR_BYTES + NAME_BYTES + CONTROL_BYTES) +
      IOVECS_PER_CALL * IOVEC_BYTES,
  );
  readonly #bytes = new Uint8Array(this.#native);
  readonly #words = new Uint32Array(this.#native);
  readonly #view = new DataView(this.#native);
  readonly #base: number;
  readonly #iovecs: number;
  readonly #names: number;
  readonly #controls: number;
  /** For each message of a send call, the first slot after its group. */
  readonly #groupEnds = new Uint32Array(MESSAGES_PER_CALL);
  readonly #writablePollfd = new Int32Array(2);

  private constructor(shared: SharedLinuxUdpSocket, waker: Waker, ownsFds: boolean) {
    this.fd = shared.fd;
    this.wakeFd = shared.wakeFd;
    this.family = shared.family;
    this.localPort = shared.localPort;
    this.#gso = shared.gso;
    this.gro = shared.gro;
    this.#waker = waker;
    this.#ownsFds = ownsFds;
    this.#base = addressOf(this.#bytes);
    this.#iovecs = MESSAGES_PER_CALL * MMSGHDR_BYTES;
    this.#names = this.#iovecs + IOVECS_PER_CALL * IOVEC_BYTES;
    this.#controls = this.#names + MESSAGES_PER_CALL * NAME_BYTES;
  }

  static open(options: LinuxUdpSocketOptions): LinuxUdpSocket {
    const domain = options.family === 4 ? libc.AF_INET : libc.AF_INET6;
    const fd = libc.socket(domain, libc.SOCK_DGRAM | libc.SOCK_NONBLOCK | libc.SOCK_CLOEXEC, 0);
    if (fd < 0) throw new libc.SystemCallError('socket', libc.errno());
    try {
      configure(fd, options);
      bindSocket(fd, options);
      const gso =
        (options.gso ?? true) && getIntOption(fd, libc.SOL_UDP, libc.UDP_SEGMENT) !== undefined;
      const gro = (options.gro ?? true) && setIntOption(fd, libc.SOL_UDP, libc.UDP_GRO, 1) === 0;
      const waker = Waker.create();
      const shared = {
        fd,
        wakeFd: waker.fd,
        family: options.family,
        localPort: localPort(fd),
        gso,
        gro,
      };
      return new LinuxUdpSocket(shared, waker, true);
    } catch (error) {
      libc.close(fd);
      throw error;
    }
  }

  /** The same socket for use on another thread; the original keeps ownership of the fds. */
  static adopt(shared: SharedLinuxUdpSocket): LinuxUdpSocket {
    return new LinuxUdpSocket(shared, Waker.fromFd(shared.wakeFd), false);
  }

  share(): SharedLinuxUdpSocket {
    return {
      fd: this.fd,
      wakeFd: this.wakeFd,
      family: this.family,
      localPort: this.localPort,
      gso: this.#gso,
      gro: this.gro,
    };
  }

  get gso(): boolean {
    return this.#gso;
  }

  receiveBatch(batch: DatagramBatch): number {
    const messages = Math.min(batch.capacity, MESSAGES_PER_CALL);
    const words = this.#words;
    const dataAddress = addressOf(batch.data);
    for (let message = 0; message < messages; message++) {
      const room = batch.room(message);
      if (this.gro && room < MAX_DATAGRAM_BYTES) {
        throw new RangeError(
          `GRO receive needs ${MAX_DATAGRAM_BYTES} bytes per slot, slot ${message} has ${room}`,
        );
      }
      const iovec = this.#iovecs + message * IOVEC_BYTES;
      this.#setPointer(iovec, dataAddress + batch.offsets[message]!);
      this.#setPointer(iovec + 8, room);
      this.#writeMessageHeader(message, message, 1, NAME_BYTES, CONTROL_BYTES);
    }
    const received = libc.recvmmsg(this.fd, this.#base, messages, libc.MSG_DONTWAIT, 0);
    if (received < 0) {
      const code = libc.errno();
      if (code === libc.EAGAIN || code === libc.EINTR) return 0;
      throw new libc.SystemCallError('recvmmsg', code);
    }
    const bytes = this.#bytes;
    for (let message = 0; message < received; message++) {
      const header = message * MMSGHDR_BYTES;
      const length = words[(header + 56) >> 2]!;
      batch.lengths[message] = (words[(header + 48) >> 2]! & MSG_TRUNC) !== 0 ? 0 : length;
      const name = this.#names + message * NAME_BYTES;
      const port = (bytes[name + 2]! << 8) | bytes[name + 3]!;
      batch.ports[message] = port;
      const address = message * 16;
      if (this.family === 4) {
        batch.families[message] = 4;
        for (let index = 0; index < 4; index++)
          batch.addresses[address + index] = bytes[name + 4 + index]!;
      } else {
        batch.families[message] = 6;
        for (let index = 0; index < 16; index++)
          batch.addresses[address + index] = bytes[name + 8 + index]!;
      }
      this.#readControl(batch, message, words[(header + 40) >> 2]!, length);
    }
    return received;
  }

  #readControl(batch: DatagramBatch, message: number, controlLength: number, length: number): void {
    batch.segmentSizes[message] = 0;
    batch.tos[message] = 0;
    const control = this.#controls + message * CONTROL_BYTES;
    const view = this.#view;
    for (let offset = 0; offset + 16 <= controlLength;) {
      const cmsgLength = view.getUint32(control + offset, true);
      if (cmsgLength < 16) break;
      const level = view.getInt32(control + offset + 8, true);
      const type = view.getInt32(control + offset + 12, true);
      const data = control + offset + 16;
      if (level === libc.SOL_UDP && type === libc.UDP_GRO) {
        const segment = view.getInt32(data, true);
        if (segment > 0 && segment < length) batch.segmentSizes[message] = segment;
      } else if (level === libc.IPPROTO_IP && type === libc.IP_TOS) {
        batch.tos[message] = this.#bytes[data]!;
      } else if (level === libc.IPPROTO_IPV6 && type === libc.IPV6_TCLASS) {
        batch.tos[message] = view.getInt32(data, true) & 0xff;
      }
      offset += (cmsgLength + 7) & ~7;
    }
  }

  sendBatch(batch: DatagramBatch, count: number): number {
    return this.#sendRange(batch, 0, count);
  }

  /** As `sendBatch`, for slots `from`..`to`-1 only; returns how many were handed to the network. */
  sendRange(batch: DatagramBatch, from: number, to: number): number {
    return this.#sendRange(batch, from, to);
  }

  #sendRange(batch: DatagramBatch, from: number, to: number): number {
    let sent = 0;
    let slot = from;
    while (slot < to) {
      const messages = this.#prepareSend(batch, slot, to);
      const end = this.#groupEnds[messages - 1]!;
      sent += this.#sendPrepared(batch, slot, messages);
      slot = end;
    }
    return sent;
  }

  /** Groups slots from `first` into at most 64 messages; returns the message count. */
  #prepareSend(batch: DatagramBatch, first: number, count: number): number {
    const dataAddress = addressOf(batch.data);
    const { lengths, tos } = batch;
    const maxPayload = this.family === 4 ? 65_507 : 65_527;
    let messages = 0;
    let slot = first;
    while (slot < count && messages < MESSAGES_PER_CALL) {
      const start = slot;
      const size = lengths[start]!;
      let total = size;
      slot++;
      if (this.#gso) {
        while (
          slot < count &&
          slot - start < MAX_GSO_SEGMENTS &&
          slot - first < IOVECS_PER_CALL &&
          lengths[slot]! <= size &&
          lengths[slot]! > 0 &&
          total + lengths[slot]! <= maxPayload &&
          tos[slot] === tos[start] &&
          batch.sameEndpoint(start, slot)
        ) {
          total += lengths[slot]!;
          slot++;
          if (lengths[slot - 1]! < size) break;
        }
      }
      for (let member = start; member < slot; member++) {
        const iovec = this.#iovecs + (member - first) * IOVEC_BYTES;
        this.#setPointer(iovec, dataAddress + batch.offsets[member]!);
        this.#setPointer(iovec + 8, lengths[member]!);
      }
      const nameLength = this.#writeName(messages, batch, start);
      const controlLength = this.#writeSendControl(
        messages,
        slot - start > 1 ? size : 0,
        tos[start]!,
      );
      this.#writeMessageHeader(messages, start - first, slot - start, nameLength, controlLength);
      this.#groupEnds[messages] = slot;
      messages++;
    }
    return messages;
  }

  #sendPrepared(batch: DatagramBatch, first: number, messages: number): number {
    let done = 0;
    let sent = 0;
    let stalledSince = 0;
    while (done < messages) {
      const result = libc.sendmmsg(this.fd, this.#base + done * MMSGHDR_BYTES, messages - done, 0);
      const groupStart = done === 0 ? first : this.#groupEnds[done - 1]!;
      if (result > 0) {
        sent += this.#groupEnds[done + result - 1]! - groupStart;
        done += result;
        stalledSince = 0;
        continue;
      }
      const code = libc.errno();
      if (code === libc.EINTR) continue;
      if (code === libc.EAGAIN) {
        const now = performance.now();
        if (stalledSince === 0) stalledSince = now;
        else if (now - stalledSince > SEND_STALL_LIMIT_MS) return sent;
        this.#waitWritable();
        continue;
      }
      if (code === libc.EIO && this.#gso && this.#groupEnds[done]! - groupStart > 1) {
        // Some devices cannot checksum-offload segmented sends: stop using GSO.
        this.#gso = false;
        return sent + this.#sendRange(batch, groupStart, this.#groupEnds[messages - 1]!);
      }
      // This datagram cannot go (e.g. unreachable destination): drop it, send the rest.
      done++;
    }
    return sent;
  }

  #waitWritable(): void {
    this.#writablePollfd[0] = this.fd;
    this.#writablePollfd[1] = libc.POLLOUT;
    libc.poll(addressOf(this.#writablePollfd), 1, 10);
  }

  #writeMessageHeader(
    message: number,
    firstIovec: number,
    iovecs: number,
    nameLength: number,
    controlLength: number,
  ): void {
    const header = message * MMSGHDR_BYTES;
    this.#setPointer(header, this.#base + this.#names + message * NAME_BYTES);
    this.#words[(header + 8) >> 2] = nameLength;
    this.#setPointer(header + 16, this.#base + this.#iovecs + firstIovec * IOVEC_BYTES);
    this.#setPointer(header + 24, iovecs);
    this.#setPointer(
      header + 32,
      controlLength === 0 ? 0 : this.#base + this.#controls + message * CONTROL_BYTES,
    );
    this.#setPointer(header + 40, controlLength);
    this.#words[(header + 48) >> 2] = 0;
    this.#words[(header + 56) >> 2] = 0;
  }

  #writeName(message: number, batch: DatagramBatch, slot: number): number {
    const name = this.#names + message * NAME_BYTES;
    const bytes = this.#bytes;
    const port = batch.ports[slot]!;
    bytes.fill(0, name, name + NAME_BYTES);
    bytes[name + 2] = port >> 8;
    bytes[name + 3] = port & 0xff;
    if (this.family === 4) {
      bytes[name] = libc.AF_INET;
      for (let index = 0; index < 4; index++)
        bytes[name + 4 + index] = batch.addresses[slot * 16 + index]!;
      return 16;
    }
    bytes[name] = libc.AF_INET6;
    for (let index = 0; index < 16; index++)
      bytes[name + 8 + index] = batch.addresses[slot * 16 + index]!;
    return 28;
  }

  #writeSendControl(message: number, segmentSize: number, tos: number): number {
    const control = this.#controls + message * CONTROL_BYTES;
    const view = this.#view;
    let length = 0;
    if (segmentSize > 0) {
      this.#setPointer(control, 18);
      view.setInt32(control + 8, libc.SOL_UDP, true);
      view.setInt32(control + 12, libc.UDP_SEGMENT, true);
      view.setUint16(control + 16, segmentSize, true);
      length = 24;
    }
    if (tos !== 0) {
      this.#setPointer(control + length, 20);
      view.setInt32(
        control + length + 8,
        this.family === 4 ? libc.IPPROTO_IP : libc.IPPROTO_IPV6,
        true,
      );
      view.setInt32(
        control + length + 12,
        this.family === 4 ? libc.IP_TOS : libc.IPV6_TCLASS,
        true,
      );
      view.setInt32(control + length + 16, tos, true);
      length += 24;
    }
    return length;
  }

  #setPointer(byteOffset: number, value: number): void {
    this.#words[byteOffset >> 2] = value >>> 0;
    this.#words[(byteOffset >> 2) + 1] = Math.floor(value / 0x1_0000_0000);
  }

  waitReadable(timeoutMs: number): boolean {
    this.#poller ??= new FdPoller([this.fd], this.#waker);
    const ready = this.#poller.wait(timeoutMs);
    return (ready & 0b10) !== 0;
  }

  wake(): void {
    this.#waker.wake();
  }

  close(): void {
    if (this.#closed || !this.#ownsFds) return;
    this.#closed = true;
    libc.close(this.fd);
    this.#waker.close();
  }
}

function configure(fd: number, options: LinuxUdpSocketOptions): void {
  if (options.reusePort === true)
    mustSet(fd, libc.SOL_SOCKET, libc.SO_REUSEPORT, 1, 'SO_REUSEPORT');
  if (options.fwmark !== undefined)
    mustSet(fd, libc.SOL_SOCKET, libc.SO_MARK, options.fwmark, 'SO_MARK');
  const bufferBytes = options.bufferBytes ?? DEFAULT_BUFFER_BYTES;
  if (setIntOption(fd, libc.SOL_SOCKET, libc.SO_RCVBUFFORCE, bufferBytes) !== 0) {
    setIntOption(fd, libc.SOL_SOCKET, libc.SO_RCVBUF, bufferBytes);
  }
  if (setIntOption(fd, libc.SOL_SOCKET, libc.SO_SNDBUFFORCE, bufferBytes) !== 0) {
    setIntOption(fd, libc.SOL_SOCKET, libc.SO_SNDBUF, bufferBytes);
  }
  if (options.family === 4) {
    mustSet(fd, libc.IPPROTO_IP, libc.IP_RECVTOS, 1, 'IP_RECVTOS');
  } else {
    mustSet(fd, libc.IPPROTO_IPV6, libc.IPV6_V6ONLY, 1, 'IPV6_V6ONLY');
    mustSet(fd, libc.IPPROTO_IPV6, libc.IPV6_RECVTCLASS, 1, 'IPV6_RECVTCLASS');
  }
}

function bindSocket(fd: number, options: LinuxUdpSocketOptions): void {
  const name = new Uint8Array(NAME_BYTES);
  const port = options.port ?? 0;
  name[2] = port >> 8;
  name[3] = port & 0xff;
  let length: number;
  if (options.family === 4) {
    name[0] = libc.AF_INET;
    if (options.address !== undefined) name.set(addressBytes(options.address, 4), 4);
    length = 16;
  } else {
    name[0] = libc.AF_INET6;
    if (options.address !== undefined) name.set(addressBytes(options.address, 6), 8);
    length = 28;
  }
  if (libc.bind(fd, addressOf(name), length) !== 0) {
    throw new libc.SystemCallError(`bind ${options.address ?? 'any'} port ${port}`, libc.errno());
  }
}

function addressBytes(text: string, family: AddressFamily): Uint8Array {
  const parsed = parseAddress(text);
  if (parsed.family !== family) throw new RangeError(`${text} is not an IPv${family} address`);
  return parsed.address;
}

function localPort(fd: number): number {
  const name = new Uint8Array(NAME_BYTES);
  const length = new Uint32Array([NAME_BYTES]);
  if (libc.getsockname(fd, addressOf(name), addressOf(length)) !== 0) {
    throw new libc.SystemCallError('getsockname', libc.errno());
  }
  return (name[2]! << 8) | name[3]!;
}

/** The option's value, or undefined when the kernel does not know it. */
export function getIntOption(fd: number, level: number, option: number): number | undefined {
  const value = new Int32Array(2);
  value[1] = 4;
  const result = libc.getsockopt(fd, level, option, addressOf(value), addressOf(value) + 4);
  return result === 0 ? value[0] : undefined;
}

function setIntOption(fd: number, level: number, option: number, value: number): number {
  const word = new Int32Array([value]);
  return libc.setsockopt(fd, level, option, addressOf(word), 4);
}

function mustSet(fd: number, level: number, option: number, value: number, name: string): void {
  if (setIntOption(fd, level, option, value) !== 0)
    throw new libc.SystemCallError(`setsockopt ${name}`, libc.errno());
}
