/**
 * One worker's share of the data plane, independent of threads: TUN packets
 * → peer by destination (AllowedIPs) → sealed in shared-memory keypairs →
 * batched UDP send; batched UDP receive → opened (replay-checked) → source
 * address checked against the peer's AllowedIPs → RFC 6040 ECN → TUN.
 * Handshake messages are handed to the control thread through a callback.
 *
 * Everything per packet is allocation-free: packets stay in preallocated
 * batches, keys and counters come from the WireGuard worker contract,
 * statistics go to shared counters.
 */
import {
  applyDecapsulationEcn,
  ecnForEncapsulation,
  getEcn,
  PacketBatch,
  TUN_BATCH_SIZE,
} from '@gatehouse/tun';
import type { TunDevice } from '@gatehouse/tun';
import { DatagramBatch, MAX_DATAGRAM_BYTES } from '@gatehouse/udp';
import type { DatagramSocket, Endpoint } from '@gatehouse/udp';

// TODO(wireguard): import from '@gatehouse/wireguard' once its index.ts exports these.
import type { CryptoProvider } from '../../wireguard/src/crypto/provider.ts';
import {
  sealedLength,
  TRANSPORT_DECRYPT_FAILED,
  TRANSPORT_EXPIRED,
  TRANSPORT_INVALID_INNER_PACKET,
  TRANSPORT_NO_SESSION,
  TRANSPORT_REPLAY,
  TRANSPORT_UNKNOWN_RECEIVER,
  TransportPath,
} from '../../wireguard/src/transport.ts';
import {
  NO_SLOT,
  P_CURRENT,
  P_ENDPOINT_SEQUENCE,
  peerBase,
  raiseSignal,
  readEndpointWords,
  SIGNAL_HANDSHAKE_NEEDED,
  writeEndpointWords,
} from '../../wireguard/src/worker-contract.ts';
import type { SharedTransportMemory } from '../../wireguard/src/worker-contract.ts';
import { AllowedIpsTable, NO_PEER } from './allowed-ips.ts';
import type { SharedAllowedIpsTable } from './allowed-ips.ts';
import {
  DROP_DECRYPT_FAILED,
  DROP_ECN_NOT_ECT,
  DROP_EXPIRED,
  DROP_HOLD_OVERFLOW,
  DROP_INVALID_INNER_PACKET,
  DROP_REPLAY,
  DROP_SOURCE_NOT_ALLOWED,
  DROP_TUN_FULL,
  DROP_UDP_SEND_FAILED,
  DROP_UNKNOWN_RECEIVER,
  DropCounters,
  UNATTRIBUTED,
} from './drop-counters.ts';

export interface DataPathOptions {
  transport: SharedTransportMemory;
  crypto: CryptoProvider;
  allowedIps: SharedAllowedIpsTable;
  dropCounters: SharedArrayBuffer;
  tun: TunDevice;
  udp: DatagramSocket;
  /** A handshake message (types 1–3) for the control thread; `datagram` is a copy. */
  onHandshakeMessage: (datagram: Uint8Array, source: Endpoint) => void;
  /** Monotonic milliseconds. */
  now: () => number;
  /** Packets held per peer while a handshake is under way (default 128). */
  holdPerPeer?: number;
}

const TRANSPORT_HEADER = 16;
const MESSAGE_TRANSPORT_DATA = 4;

export class DataPath {
  readonly #transport: TransportPath;
  readonly #transportWords: Int32Array;
  readonly #keypairSlots: number;
  #allowedIps: AllowedIpsTable;
  readonly #drops: DropCounters;
  readonly #tun: TunDevice;
  readonly #udp: DatagramSocket;
  readonly #onHandshakeMessage: DataPathOptions['onHandshakeMessage'];
  readonly #now: () => number;
  readonly #holdPerPeer: number;

  readonly #fromTun = new PacketBatch(TUN_BATCH_SIZE);
  readonly #toUdp: DatagramBatch;
  readonly #fromUdp: DatagramBatch;
  /** Per peer: the endpoint as last read from shared memory, keyed by its seqlock value. */
  readonly #endpointSequence: Int32Array;
  readonly #endpointFamily: Uint8Array;
  readonly #endpointPort: Uint16Array;
  readonly #endpointAddress: Uint8Array;
  readonly #scratchAddress = new Uint8Array(16);
  /** Packets waiting for a session, per peer (allocated only while a handshake is pending). */
  readonly #held = new Map<number, Uint8Array[]>();

  constructor(options: DataPathOptions) {
    this.#transport = new TransportPath(options.transport, options.crypto);
    this.#transportWords = new Int32Array(options.transport.buffer);
    this.#keypairSlots = options.transport.keypairSlots;
    this.#allowedIps = new AllowedIpsTable(options.allowedIps);
    this.#drops = new DropCounters(options.dropCounters);
    this.#tun = options.tun;
    this.#udp = options.udp;
    this.#onHandshakeMessage = options.onHandshakeMessage;
    this.#now = options.now;
    this.#holdPerPeer = options.holdPerPeer ?? 128;
    const peers = options.transport.peerSlots;
    this.#endpointSequence = new Int32Array(peers).fill(-1);
    this.#endpointFamily = new Uint8Array(peers);
    this.#endpointPort = new Uint16Array(peers);
    this.#endpointAddress = new Uint8Array(peers * 16);
    this.#toUdp = new DatagramBatch(TUN_BATCH_SIZE, Math.max(2048, sealedLength(options.tun.mtu)));
    this.#fromUdp = new DatagramBatch(TUN_BATCH_SIZE, options.udp.gro ? MAX_DATAGRAM_BYTES : 2048);
  }

  /** A new AllowedIPs table from the control thread (peer configuration changed). */
  setAllowedIps(shared: SharedAllowedIpsTable): void {
    this.#allowedIps = new AllowedIpsTable(shared);
  }

  /** Moves one batch from the TUN device to the network; returns packets read. */
  outbound(): number {
    const batch = this.#fromTun;
    const count = this.#tun.receive(batch);
    if (count === 0) return 0;
    const now = this.#now();
    let queued = 0;
    for (let index = 0; index < count; index++) {
      const buffer = batch.buffers[index]!;
      const offset = batch.offsets[index]!;
      const length = batch.lengths[index]!;
      const peer = this.#allowedIps.lookupDestination(buffer, offset);
      if (peer === NO_PEER) {
        this.#drops.addNoRoute();
        continue;
      }
      if (this.#sealInto(queued, peer, buffer, offset, length, now)) queued++;
    }
    this.#tun.release(batch);
    this.#send(queued);
    return count;
  }

  /** Moves one batch from the network to the TUN device; returns datagrams received. */
  inbound(): number {
    const batch = this.#fromUdp;
    const count = this.#udp.receiveBatch(batch);
    if (count === 0) return 0;
    const now = this.#now();
    for (let slot = 0; slot < count; slot++) {
      const start = batch.offsets[slot]!;
      const end = start + batch.lengths[slot]!;
      const segment = batch.segmentSizes[slot] || batch.lengths[slot]!;
      for (let offset = start; offset < end; offset += segment) {
        this.#receiveDatagram(slot, offset, Math.min(segment, end - offset), now);
      }
    }
    return count;
  }

  /** Sends what was held for peers whose session now exists; returns packets sent. */
  flushHeld(): number {
    if (this.#held.size === 0) return 0;
    const now = this.#now();
    let queued = 0;
    for (const [peer, packets] of this.#held) {
      const current = Atomics.load(
        this.#transportWords,
        peerBase(this.#keypairSlots, peer) + P_CURRENT,
      );
      if (current === NO_SLOT) continue;
      this.#held.delete(peer);
      for (const packet of packets) {
        if (queued === this.#toUdp.capacity) {
          this.#send(queued);
          queued = 0;
        }
        if (this.#sealInto(queued, peer, packet, 0, packet.length, now)) queued++;
      }
    }
    this.#send(queued);
    return queued;
  }

  get holding(): number {
    let held = 0;
    for (const packets of this.#held.values()) held += packets.length;
    return held;
  }

  destroy(): void {
    this.#transport.destroy();
  }

  #sealInto(
    slot: number,
    peer: number,
    buffer: Uint8Array,
    offset: number,
    length: number,
    now: number,
  ): boolean {
    const out = this.#toUdp;
    const dstOffset = out.offsets[slot]!;
    const sealed = this.#transport.seal(peer, buffer, offset, length, out.data, dstOffset, now);
    if (sealed < 0) {
      if (sealed === TRANSPORT_NO_SESSION || sealed === TRANSPORT_EXPIRED)
        this.#hold(peer, buffer, offset, length);
      else this.#drops.add(peer, DROP_INVALID_INNER_PACKET);
      return false;
    }
    if (!this.#loadEndpoint(peer, slot)) {
      this.#hold(peer, buffer, offset, length);
      return false;
    }
    out.lengths[slot] = sealed;
    out.tos[slot] = length > 0 ? ecnForEncapsulation(getEcn(buffer, offset)) : 0;
    return true;
  }

  #send(count: number): void {
    if (count === 0) return;
    const sent = this.#udp.sendBatch(this.#toUdp, count);
    if (sent < count) this.#drops.add(UNATTRIBUTED, DROP_UDP_SEND_FAILED, count - sent);
  }

  #hold(peer: number, buffer: Uint8Array, offset: number, length: number): void {
    let held = this.#held.get(peer);
    if (held === undefined) {
      held = [];
      this.#held.set(peer, held);
    }
    if (held.length >= this.#holdPerPeer) {
      this.#drops.add(peer, DROP_HOLD_OVERFLOW);
      return;
    }
    held.push(buffer.slice(offset, offset + length));
    raiseSignal(this.#transportWords, peerBase(this.#keypairSlots, peer), SIGNAL_HANDSHAKE_NEEDED);
  }

  /** Copies the peer's endpoint into send slot `slot`; false when it has none yet. */
  #loadEndpoint(peer: number, slot: number): boolean {
    const words = this.#transportWords;
    const base = peerBase(this.#keypairSlots, peer);
    const sequence = Atomics.load(words, base + P_ENDPOINT_SEQUENCE);
    if (sequence !== this.#endpointSequence[peer]) {
      const endpoint = readEndpointWords(words, base, this.#scratchAddress);
      if (endpoint === undefined) return false;
      this.#endpointFamily[peer] = endpoint.addressLength === 4 ? 4 : 6;
      this.#endpointPort[peer] = endpoint.port;
      this.#endpointAddress.set(this.#scratchAddress, peer * 16);
      this.#endpointSequence[peer] = sequence;
    }
    const out = this.#toUdp;
    out.families[slot] = this.#endpointFamily[peer]!;
    out.ports[slot] = this.#endpointPort[peer]!;
    for (let index = 0; index < 16; index++)
      out.addresses[slot * 16 + index] = this.#endpointAddress[peer * 16 + index]!;
    return true;
  }

  #receiveDatagram(slot: number, offset: number, length: number, now: number): void {
    const batch = this.#fromUdp;
    const data = batch.data;
    if (length < 4) return;
    const type = data[offset]!;
    if (type !== MESSAGE_TRANSPORT_DATA) {
      if (type >= 1 && type <= 3)
        this.#onHandshakeMessage(data.slice(offset, offset + length), batch.endpoint(slot));
      return;
    }
    if (length < TRANSPORT_HEADER + 16) return;
    const transport = this.#transport;
    const inner = offset + TRANSPORT_HEADER;
    const opened = transport.open(data, offset, length, data, inner, now);
    const peer = transport.lastPeer;
    if (opened < 0) {
      this.#drops.add(peer < 0 ? UNATTRIBUTED : peer, dropReasonOf(opened));
      return;
    }
    this.#noteEndpoint(peer, slot);
    if (opened === 0) return; // keepalive
    if (this.#allowedIps.lookupSource(data, inner) !== peer) {
      this.#drops.add(peer, DROP_SOURCE_NOT_ALLOWED);
      return;
    }
    if (!applyDecapsulationEcn(data, inner, (batch.tos[slot]! & 3) as 0 | 1 | 2 | 3)) {
      this.#drops.add(peer, DROP_ECN_NOT_ECT);
      return;
    }
    if (!this.#tun.send(data, inner, opened)) this.#drops.add(peer, DROP_TUN_FULL);
  }

  /** Roaming: an authenticated packet from a new source address becomes the peer's endpoint. */
  #noteEndpoint(peer: number, slot: number): void {
    const batch = this.#fromUdp;
    const family = batch.families[slot]!;
    const sequence = Atomics.load(
      this.#transportWords,
      peerBase(this.#keypairSlots, peer) + P_ENDPOINT_SEQUENCE,
    );
    if (sequence === this.#endpointSequence[peer] || this.#loadCachedEndpoint(peer)) {
      if (
        this.#endpointFamily[peer] === family &&
        this.#endpointPort[peer] === batch.ports[slot] &&
        this.#sameCachedAddress(peer, slot)
      ) {
        return;
      }
    }
    const length = family === 4 ? 4 : 16;
    writeEndpointWords(
      this.#transportWords,
      peerBase(this.#keypairSlots, peer),
      batch.addresses.subarray(slot * 16, slot * 16 + length),
      batch.ports[slot]!,
    );
  }

  #loadCachedEndpoint(peer: number): boolean {
    const base = peerBase(this.#keypairSlots, peer);
    const sequence = Atomics.load(this.#transportWords, base + P_ENDPOINT_SEQUENCE);
    const endpoint = readEndpointWords(this.#transportWords, base, this.#scratchAddress);
    if (endpoint === undefined) return false;
    this.#endpointFamily[peer] = endpoint.addressLength === 4 ? 4 : 6;
    this.#endpointPort[peer] = endpoint.port;
    this.#endpointAddress.set(this.#scratchAddress, peer * 16);
    this.#endpointSequence[peer] = sequence;
    return true;
  }

  #sameCachedAddress(peer: number, slot: number): boolean {
    const addresses = this.#fromUdp.addresses;
    const length = this.#endpointFamily[peer] === 4 ? 4 : 16;
    for (let index = 0; index < length; index++) {
      if (addresses[slot * 16 + index] !== this.#endpointAddress[peer * 16 + index]) return false;
    }
    return true;
  }
}

function dropReasonOf(code: number): number {
  switch (code) {
    case TRANSPORT_REPLAY:
      return DROP_REPLAY;
    case TRANSPORT_DECRYPT_FAILED:
      return DROP_DECRYPT_FAILED;
    case TRANSPORT_UNKNOWN_RECEIVER:
      return DROP_UNKNOWN_RECEIVER;
    case TRANSPORT_EXPIRED:
      return DROP_EXPIRED;
    case TRANSPORT_INVALID_INNER_PACKET:
    default:
      return DROP_INVALID_INNER_PACKET;
  }
}
