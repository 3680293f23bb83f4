import type { DatagramBatch } from '../datagram-batch.ts';
import type { DatagramSocket } from '../datagram-socket.ts';
import { parseAddress } from '@gatehouse/addresses';
import type { AddressFamily } from '@gatehouse/addresses';
import { Doorbell } from './doorbell.ts';

export interface MemoryUdpNetworkOptions {
  maxSockets?: number;
  /** Datagrams a socket holds before it drops new ones. */
  queueDepth?: number;
  maxDatagramBytes?: number;
}

/** Everything another thread needs to join the same network (structured-cloneable). */
export interface SharedMemoryUdpNetwork {
  buffer: SharedArrayBuffer;
  maxSockets: number;
  queueDepth: number;
  maxDatagramBytes: number;
}

// Per socket, Int32 words: bound, family, port, address (4 words), then the queue state.
const SOCKET_WORDS = 16;
const BOUND = 0;
const FAMILY = 1;
const PORT = 2;
const ADDRESS = 3;
const LOCK = 7;
const HEAD = 8;
const TAIL = 9;
const DOORBELL = 10;
const WOKEN = 11;
const DROPPED = 12;
// Per queued datagram: length, tos, source family, source port, source address (4 words).
const ENTRY_HEADER_WORDS = 8;
const NETWORK_WORDS = 1;
const NEXT_EPHEMERAL_PORT = 0;

/**
 * An in-memory UDP network in one SharedArrayBuffer, usable from every
 * thread that attaches it: sockets bound to concrete addresses exchange
 * datagrams through bounded queues that drop when full, like a real network
 * under load. No GSO or GRO: every datagram travels alone.
 */
export class MemoryUdpNetwork {
  readonly shared: SharedMemoryUdpNetwork;
  readonly words: Int32Array;
  readonly bytes: Uint8Array;

  constructor(options: MemoryUdpNetworkOptions = {}) {
    const maxSockets = options.maxSockets ?? 16;
    const queueDepth = options.queueDepth ?? 256;
    const maxDatagramBytes = options.maxDatagramBytes ?? 2048;
    const entryBytes = ENTRY_HEADER_WORDS * 4 + maxDatagramBytes;
    const buffer = new SharedArrayBuffer(
      (NETWORK_WORDS + maxSockets * SOCKET_WORDS) * 4 + maxSockets * queueDepth * entryBytes,
    );
    this.shared = { buffer, maxSockets, queueDepth, maxDatagramBytes };
    this.words = new Int32Array(buffer);
    this.bytes = new Uint8Array(buffer);
    Atomics.store(this.words, NEXT_EPHEMERAL_PORT, 40_000);
  }

  static attach(shared: SharedMemoryUdpNetwork): MemoryUdpNetwork {
    const network = Object.create(MemoryUdpNetwork.prototype) as MemoryUdpNetwork;
    Object.assign(network, {
      shared,
      words: new Int32Array(shared.buffer),
      bytes: new Uint8Array(shared.buffer),
    });
    return network;
  }

  /** Binds a socket to a concrete address; port 0 picks a free one. */
  bind(address: string, port = 0): MemoryUdpSocket {
    const parsed = parseAddress(address);
    const chosenPort = port === 0 ? Atomics.add(this.words, NEXT_EPHEMERAL_PORT, 1) : port;
    const addressWords = addressToWords(parsed.address);
    for (let index = 0; index < this.shared.maxSockets; index++) {
      const base = socketBase(index);
      if (
        Atomics.load(this.words, base + BOUND) === 1 &&
        this.#matches(index, parsed.family, addressWords, chosenPort)
      ) {
        throw new Error(`address in use: ${address} port ${chosenPort}`);
      }
    }
    for (let index = 0; index < this.shared.maxSockets; index++) {
      const base = socketBase(index);
      if (Atomics.compareExchange(this.words, base + BOUND, 0, 2) !== 0) continue;
      this.words[base + FAMILY] = parsed.family;
      this.words[base + PORT] = chosenPort;
      for (let word = 0; word < 4; word++) this.words[base + ADDRESS + word] = addressWords[word]!;
      for (const word of [HEAD, TAIL, WOKEN, DROPPED]) this.words[base + word] = 0;
      Atomics.store(this.words, base + BOUND, 1);
      return new MemoryUdpSocket(this, index);
    }
    throw new Error(`memory network full (${this.shared.maxSockets} sockets)`);
  }

  /** The socket with this index, e.g. on another thread. */
  socket(index: number): MemoryUdpSocket {
    if (Atomics.load(this.words, socketBase(index) + BOUND) !== 1)
      throw new Error(`no socket ${index}`);
    return new MemoryUdpSocket(this, index);
  }

  /** The socket bound to a destination, or -1. Reads the address from a batch slot. */
  findSocket(family: number, addresses: Uint8Array, addressOffset: number, port: number): number {
    const words = this.words;
    for (let index = 0; index < this.shared.maxSockets; index++) {
      const base = socketBase(index);
      if (
        words[base + BOUND] !== 1 ||
        words[base + FAMILY] !== family ||
        words[base + PORT] !== port
      )
        continue;
      let same = true;
      for (let word = 0; word < 4 && same; word++) {
        const offset = addressOffset + word * 4;
        const value =
          (addresses[offset]! << 24) |
          (addresses[offset + 1]! << 16) |
          (addresses[offset + 2]! << 8) |
          addresses[offset + 3]!;
        same = value === words[base + ADDRESS + word];
      }
      if (same) return index;
    }
    return -1;
  }

  #matches(index: number, family: AddressFamily, addressWords: Int32Array, port: number): boolean {
    const base = socketBase(index);
    if (this.words[base + FAMILY] !== family || this.words[base + PORT] !== port) return false;
    for (let word = 0; word < 4; word++) {
      if (this.words[base + ADDRESS + word] !== addressWords[word]) return false;
    }
    return true;
  }

  entryOffset(socket: number, position: number): number {
    const { maxSockets, queueDepth, maxDatagramBytes } = this.shared;
    const entryBytes = ENTRY_HEADER_WORDS * 4 + maxDatagramBytes;
    return (
      (NETWORK_WORDS + maxSockets * SOCKET_WORDS) * 4 +
      (socket * queueDepth + (position % queueDepth)) * entryBytes
    );
  }

  lock(socket: number): void {
    const word = socketBase(socket) + LOCK;
    while (Atomics.compareExchange(this.words, word, 0, 1) !== 0)
      Atomics.wait(this.words, word, 1, 1);
  }

  unlock(socket: number): void {
    const word = socketBase(socket) + LOCK;
    Atomics.store(this.words, word, 0);
    Atomics.notify(this.words, word, 1);
  }
}

export class MemoryUdpSocket implements DatagramSocket {
  readonly index: number;
  readonly family: AddressFamily;
  readonly localPort: number;
  readonly gso = false;
  readonly gro = false;
  /** Rung whenever a datagram arrives or `wake` is called; other in-memory devices may ring it too. */
  readonly doorbell: Doorbell;
  readonly #network: MemoryUdpNetwork;
  readonly #base: number;

  constructor(network: MemoryUdpNetwork, index: number) {
    this.#network = network;
    this.index = index;
    this.#base = socketBase(index);
    this.family = network.words[this.#base + FAMILY] as AddressFamily;
    this.localPort = network.words[this.#base + PORT]!;
    this.doorbell = new Doorbell(network.words, this.#base + DOORBELL);
  }

  /** Datagrams this socket's queue dropped because it was full. */
  get dropped(): number {
    return Atomics.load(this.#network.words, this.#base + DROPPED);
  }

  receiveBatch(batch: DatagramBatch): number {
    const network = this.#network;
    const { words, bytes } = network;
    network.lock(this.index);
    let received = 0;
    let head = words[this.#base + HEAD]!;
    const tail = words[this.#base + TAIL]!;
    while (head !== tail && received < batch.capacity) {
      const entry = network.entryOffset(this.index, head);
      const header = entry >> 2;
      const length = words[header]!;
      if (length > batch.room(received))
        throw new RangeError(`slot ${received} too small for ${length} bytes`);
      const offset = batch.offsets[received]!;
      batch.data.set(
        bytes.subarray(entry + ENTRY_HEADER_WORDS * 4, entry + ENTRY_HEADER_WORDS * 4 + length),
        offset,
      );
      batch.lengths[received] = length;
      batch.segmentSizes[received] = 0;
      batch.tos[received] = words[header + 1]!;
      batch.families[received] = words[header + 2]!;
      batch.ports[received] = words[header + 3]!;
      for (let index = 0; index < 16; index++)
        batch.addresses[received * 16 + index] = bytes[entry + 16 + index]!;
      received++;
      head = (head + 1) | 0;
    }
    words[this.#base + HEAD] = head;
    network.unlock(this.index);
    return received;
  }

  sendBatch(batch: DatagramBatch, count: number): number {
    const network = this.#network;
    const { words, bytes } = network;
    const { queueDepth, maxDatagramBytes } = network.shared;
    let sent = 0;
    for (let slot = 0; slot < count; slot++) {
      const length = batch.lengths[slot]!;
      if (batch.families[slot] !== this.family || length > maxDatagramBytes) continue;
      const destination = network.findSocket(
        batch.families[slot]!,
        batch.addresses,
        slot * 16,
        batch.ports[slot]!,
      );
      if (destination < 0) continue;
      const base = socketBase(destination);
      network.lock(destination);
      const tail = words[base + TAIL]!;
      if (tail - words[base + HEAD]! >= queueDepth) {
        network.unlock(destination);
        Atomics.add(words, base + DROPPED, 1);
        continue;
      }
      const entry = network.entryOffset(destination, tail);
      const header = entry >> 2;
      words[header] = length;
      words[header + 1] = batch.tos[slot]!;
      words[header + 2] = this.family;
      words[header + 3] = this.localPort;
      for (let word = 0; word < 4; word++) words[header + 4 + word] = 0;
      for (let index = 0; index < (this.family === 4 ? 4 : 16); index++) {
        const word = words[this.#base + ADDRESS + (index >> 2)]!;
        bytes[entry + 16 + index] = (word >>> (24 - 8 * (index & 3))) & 0xff;
      }
      const offset = batch.offsets[slot]!;
      bytes.set(batch.data.subarray(offset, offset + length), entry + ENTRY_HEADER_WORDS * 4);
      words[base + TAIL] = (tail + 1) | 0;
      network.unlock(destination);
      Atomics.add(words, base + DOORBELL, 1);
      Atomics.notify(words, base + DOORBELL);
      sent++;
    }
    return sent;
  }

  waitReadable(timeoutMs: number): boolean {
    const words = this.#network.words;
    const seen = this.doorbell.current();
    if (Atomics.exchange(words, this.#base + WOKEN, 0) === 1) return true;
    if (Atomics.load(words, this.#base + HEAD) !== Atomics.load(words, this.#base + TAIL))
      return false;
    this.doorbell.wait(seen, timeoutMs);
    return Atomics.exchange(words, this.#base + WOKEN, 0) === 1;
  }

  wake(): void {
    Atomics.store(this.#network.words, this.#base + WOKEN, 1);
    this.doorbell.ring();
  }

  close(): void {
    Atomics.store(this.#network.words, this.#base + BOUND, 0);
  }
}

function socketBase(index: number): number {
  return NETWORK_WORDS + index * SOCKET_WORDS;
}

function addressToWords(address: Uint8Array): Int32Array {
  const words = new Int32Array(4);
  for (let index = 0; index < address.length; index++) {
    words[index >> 2]! |= address[index]! << (24 - 8 * (index & 3));
  }
  return words;
}
