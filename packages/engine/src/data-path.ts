/**
 * One worker's share of the data plane, independent of threads: a batch of
 * TUN packets → peer by destination (AllowedIPs) → sealed in place in
 * shared-memory keypairs → one batched UDP send; a batch of UDP datagrams →
 * opened (replay-checked) straight into TUN write slots → source address
 * checked against the peer's AllowedIPs → destination checked against the
 * peer's policy (when any peer has one) → RFC 6040 ECN → one batched TUN
 * write. Handshake messages of the right size (and MAC1, which only needs
 * our public key) go to the control thread through a ring, STUN and TURN
 * ChannelData datagrams through another.
 *
 * Nothing is allocated per packet: packets are read into the slots they
 * are sealed and sent from, decrypted into the slots they are written
 * from; keys and counters come from the WireGuard worker contract,
 * statistics go to shared counters. Only packets waiting for a session
 * are copied (held), which signals the control thread for a handshake.
 */
import {
  applyDecapsulationEcn,
  ecnForEncapsulation,
  getEcn,
  MAX_TUN_WRITE_BATCH,
  TUN_BATCH_SIZE,
} from '@gatehouse/tun';
import type { Ecn, TunQueueIo } from '@gatehouse/tun';
import { DatagramBatch, MAX_DATAGRAM_BYTES } from '@gatehouse/udp';
import type { DatagramSocket } from '@gatehouse/udp';
import {
  AEAD_TAG_LENGTH,
  endpointAddressLength,
  endpointPort,
  hasValidMac1,
  MESSAGE_HANDSHAKE_COOKIE,
  MESSAGE_HANDSHAKE_COOKIE_SIZE,
  MESSAGE_HANDSHAKE_INITIATION,
  MESSAGE_HANDSHAKE_INITIATION_SIZE,
  MESSAGE_HANDSHAKE_RESPONSE,
  MESSAGE_HANDSHAKE_RESPONSE_SIZE,
  MESSAGE_TRANSPORT_DATA,
  MESSAGE_TRANSPORT_HEADER_SIZE,
  MESSAGE_TRANSPORT_MIN_SIZE,
  messageType,
  PeerSlots,
  sealedLength,
  TRANSPORT_DECRYPT_FAILED,
  TRANSPORT_EXPIRED,
  TRANSPORT_NO_SESSION,
  TRANSPORT_REPLAY,
  TRANSPORT_UNKNOWN_RECEIVER,
  TransportPath,
} from '@gatehouse/wireguard';
import type { CryptoProvider, OpenedFrom, SharedTransportMemory } from '@gatehouse/wireguard';

import { AddressActivity } from './address-activity.ts';
import type { SharedAddressActivity } from './address-activity.ts';
import { AllowedIpsTable, NO_PEER } from './allowed-ips.ts';
import type { SharedAllowedIpsTable } from './allowed-ips.ts';
import type { PeerTables } from './worker-protocol.ts';
import {
  DROP_BAD_MAC1,
  DROP_DECRYPT_FAILED,
  DROP_ECN_NOT_ECT,
  DROP_EXPIRED,
  DROP_HOLD_OVERFLOW,
  DROP_INVALID_INNER_PACKET,
  DROP_MALFORMED,
  DROP_POLICY_DENIED,
  DROP_REPLAY,
  DROP_ROUTE_MISS_EXPIRED,
  DROP_ROUTE_MISS_OVERFLOW,
  DROP_SOURCE_NOT_ALLOWED,
  DROP_TUN_FULL,
  DROP_TUN_READ_DROPPED,
  DROP_TUN_WRITE_REJECTED,
  DROP_UDP_SEND_FAILED,
  DROP_UNKNOWN_RECEIVER,
  DROP_UNKNOWN_TYPE,
  DropCounters,
  UNATTRIBUTED,
} from './drop-counters.ts';
import type { DatagramRing } from './datagram-ring.ts';
import { PolicyTable } from './policy.ts';
import { CHANNEL_DATA_HEADER_BYTES, isRelayDatagram } from './relay-demux.ts';
import { RouteMissHold } from './route-miss.ts';
import type { RouteMissRing } from './route-miss.ts';

export interface DataPathOptions {
  transport: SharedTransportMemory;
  crypto: CryptoProvider;
  allowedIps: SharedAllowedIpsTable;
  /** Per-peer destination rules (policy.ts). */
  policy: SharedArrayBuffer;
  dropCounters: SharedArrayBuffer;
  /** Where packets to and from the watched ranges (the DNS stub's proxy ranges) are stamped. */
  activity: SharedAddressActivity;
  tun: TunQueueIo;
  udp: DatagramSocket;
  /** Where handshake messages (types 1–3) go: the control thread. */
  handshakes: DatagramRing;
  /** Where STUN and TURN ChannelData datagrams go: the control thread. */
  relay: DatagramRing;
  /** Where new destinations no peer covers are reported: the control thread. */
  routeMisses: RouteMissRing;
  /** The MAC1 key for our public key: initiations and responses without a valid MAC1 stay out of the ring. */
  mac1Key: Uint8Array;
  /** Packets held per peer while a handshake is under way (default 128). */
  holdPerPeer?: number;
}

const HEADROOM = MESSAGE_TRANSPORT_HEADER_SIZE;
/** Room in front of an outbound WireGuard message for a TURN ChannelData header. */
export const RELAY_HEADROOM = CHANNEL_DATA_HEADER_BYTES;
/**
 * Receive slots when the socket coalesces (UDP_GRO): each must take a whole
 * 64 KiB datagram train, so 16 already carry hundreds of datagrams per call
 * in 1 MiB rather than 4 MiB per worker.
 */
const GRO_RECEIVE_SLOTS = 16;

const HANDSHAKE_SIZES: Record<number, number | undefined> = {
  [MESSAGE_HANDSHAKE_INITIATION]: MESSAGE_HANDSHAKE_INITIATION_SIZE,
  [MESSAGE_HANDSHAKE_RESPONSE]: MESSAGE_HANDSHAKE_RESPONSE_SIZE,
  [MESSAGE_HANDSHAKE_COOKIE]: MESSAGE_HANDSHAKE_COOKIE_SIZE,
};

export class DataPath {
  readonly #transport: TransportPath;
  readonly #opened: OpenedFrom = { peer: -1 };
  readonly #peers: PeerSlots;
  #allowedIps: AllowedIpsTable;
  #policy: PolicyTable;
  readonly #drops: DropCounters;
  readonly #activity: AddressActivity;
  readonly #tun: TunQueueIo;
  readonly #udp: DatagramSocket;
  readonly #handshakes: DatagramRing;
  readonly #relay: DatagramRing;
  readonly #routeMisses: RouteMissHold;
  #routeMissOverflow = 0;
  #routeMissExpired = 0;
  readonly #mac1Key: Uint8Array;
  readonly #holdPerPeer: number;

  /** Outbound: TUN packets are read HEADROOM bytes into these slots and sealed where they lie. */
  readonly #out: DatagramBatch;
  readonly #readViews: Uint8Array[];
  readonly #readOffsets: Int32Array;
  readonly #readLengths: Int32Array;
  /** Inbound: datagrams, then their plaintext in TUN write slots. */
  readonly #in: DatagramBatch;
  readonly #writeViews: Uint8Array[];
  readonly #writeOffsets: Int32Array;
  readonly #writeLengths: Int32Array;
  /** Bytes a write slot holds after the headroom: the most one datagram may decrypt to. */
  readonly #writeRoom: number;
  #pendingWrites = 0;
  /** The TUN queue's own drop totals as last counted. */
  #tunRxDropped = 0;
  #tunTxRejected = 0;

  /** Per peer: the endpoint as last read from shared memory, keyed by its version. */
  readonly #endpointVersion: Int32Array;
  readonly #endpointFamily: Uint8Array;
  readonly #endpointPort: Uint16Array;
  readonly #endpointAddress: Uint8Array;
  readonly #scratchAddress = new Uint8Array(16);
  /** Packets waiting for a session, per peer (allocated only while a handshake is pending). */
  readonly #held = new Map<number, Uint8Array[]>();

  constructor(options: DataPathOptions) {
    const { tun, udp } = options;
    this.#transport = new TransportPath(options.transport, options.crypto);
    this.#peers = new PeerSlots(options.transport);
    this.#allowedIps = new AllowedIpsTable(options.allowedIps);
    this.#policy = new PolicyTable(options.policy);
    this.#drops = new DropCounters(options.dropCounters);
    this.#activity = new AddressActivity(options.activity);
    this.#tun = tun;
    this.#udp = udp;
    this.#handshakes = options.handshakes;
    this.#relay = options.relay;
    this.#routeMisses = new RouteMissHold(tun.mtu, options.routeMisses);
    this.#mac1Key = options.mac1Key;
    this.#holdPerPeer = options.holdPerPeer ?? 128;
    const peers = options.transport.peerSlots;
    this.#endpointVersion = new Int32Array(peers).fill(-1);
    this.#endpointFamily = new Uint8Array(peers);
    this.#endpointPort = new Uint16Array(peers);
    this.#endpointAddress = new Uint8Array(peers * 16);

    const outSlots = Math.max(TUN_BATCH_SIZE, 2 * tun.readBudget);
    const layout = outboundSlotLayout(tun.mtu);
    // The worker's own batches never leave its thread: plain ArrayBuffer memory, which V8 copies
    // into several times faster than SharedArrayBuffer memory (DatagramBatch's default).
    this.#out = threadLocalBatch(outSlots, layout.slotBytes);
    this.#out.resetOffsets(layout.messageAt);
    this.#readViews = Array.from({ length: outSlots }, (_, slot) =>
      this.#out.data.subarray(
        slot * layout.slotBytes,
        slot * layout.slotBytes + layout.packetAt + tun.mtu,
      ),
    );
    this.#readOffsets = new Int32Array(outSlots).fill(layout.packetAt);
    this.#readLengths = new Int32Array(outSlots);

    this.#in = udp.gro
      ? threadLocalBatch(GRO_RECEIVE_SLOTS, MAX_DATAGRAM_BYTES)
      : threadLocalBatch(TUN_BATCH_SIZE, 2048);
    // With TUN offloads a slot may become a coalesced super-packet of up to 64 KiB, and every
    // slot ends up resident: more slots cost memory and coalesce no better (64 full-MTU packets
    // exceed one super-packet).
    const writeSlots = Math.min(MAX_TUN_WRITE_BATCH, TUN_BATCH_SIZE);
    // Padding makes a decrypted payload up to 15 bytes longer than its packet.
    const writeSlot = roundUp(HEADROOM + tun.writeRoom + AEAD_TAG_LENGTH, 64);
    this.#writeRoom = writeSlot - HEADROOM;
    const writeMemory = new Uint8Array(writeSlots * writeSlot);
    this.#writeViews = Array.from({ length: writeSlots }, (_, slot) =>
      writeMemory.subarray(slot * writeSlot, (slot + 1) * writeSlot),
    );
    this.#writeOffsets = new Int32Array(writeSlots).fill(HEADROOM);
    this.#writeLengths = new Int32Array(writeSlots);
  }

  /** New tables from the control thread (peer configuration changed): held route misses they cover go on. */
  setTables(tables: PeerTables): void {
    this.#allowedIps = new AllowedIpsTable(tables.allowedIps);
    this.#policy = new PolicyTable(tables.policy);
    // A removed peer's slot may be reused: its held packets must not go to the newcomer.
    this.#held.clear();
    this.#routeMisses.release(this.#allowedIps, (peer, packet, offset, length) => {
      this.#holdForPeer(peer, packet, offset, length);
      if (!this.#peers.hasSession(peer)) this.#peers.requestHandshake(peer);
    });
  }

  /** Moves one batch from the TUN queue to the network; returns packets read. */
  outbound(): number {
    const out = this.#out;
    const count = this.#tun.read(
      this.#readViews,
      this.#readOffsets,
      this.#readLengths,
      out.capacity,
    );
    this.#countTunReadDrops();
    if (count === 0) return 0;
    const now = monotonicMs();
    const data = out.data;
    const slotSize = out.slotSize;
    let queued = 0;
    for (let slot = 0; slot < count; slot++) {
      const start = slot * slotSize + RELAY_HEADROOM;
      const packet = start + HEADROOM;
      const length = this.#readLengths[slot]!;
      const peer = this.#allowedIps.lookupDestination(data, packet);
      if (peer === NO_PEER) {
        this.#drops.addNoRoute();
        this.#routeMisses.hold(data, packet, length, now);
        this.#countRouteMissDrops();
        continue;
      }
      this.#activity.noteDestination(data, packet, now);
      if (!this.#loadEndpoint(peer, queued)) {
        this.#hold(peer, data, packet, length);
        continue;
      }
      const ecn = ecnForEncapsulation(getEcn(data, packet));
      const sealed = this.#transport.seal(peer, data, packet, length, data, start, now);
      if (sealed < 0) {
        if (sealed === TRANSPORT_NO_SESSION || sealed === TRANSPORT_EXPIRED) {
          this.#hold(peer, data, packet, length);
        } else {
          this.#drops.add(peer, DROP_INVALID_INNER_PACKET);
        }
        continue;
      }
      // Only after a drop: close the gap so the batch stays contiguous.
      if (queued !== slot) {
        data.copyWithin(queued * slotSize + RELAY_HEADROOM, start, start + sealed);
      }
      out.lengths[queued] = sealed;
      out.tos[queued] = ecn;
      queued++;
    }
    this.#send(queued);
    return count;
  }

  /** Moves one batch from the network to the TUN queue; returns datagrams received. */
  inbound(): number {
    const batch = this.#in;
    const count = this.#udp.receiveBatch(batch);
    if (count === 0) return 0;
    const now = monotonicMs();
    for (let slot = 0; slot < count; slot++) {
      const start = batch.offsets[slot]!;
      const end = start + batch.lengths[slot]!;
      const segment = batch.segmentSizes[slot] || batch.lengths[slot]!;
      for (let offset = start; offset < end; offset += segment) {
        this.#receiveDatagram(slot, offset, Math.min(segment, end - offset), now);
      }
    }
    this.#flushWrites();
    return count;
  }

  /** Sends what was held for peers whose session now exists; returns packets sent. */
  flushHeld(): number {
    if (this.#held.size === 0) return 0;
    const now = monotonicMs();
    const out = this.#out;
    let queued = 0;
    let sent = 0;
    for (const [peer, packets] of this.#held) {
      if (!this.#peers.hasSession(peer) || !this.#loadEndpoint(peer, 0)) continue;
      this.#held.delete(peer);
      for (const packet of packets) {
        if (queued === out.capacity) {
          this.#send(queued);
          queued = 0;
        }
        this.#loadEndpoint(peer, queued);
        const start = queued * out.slotSize + RELAY_HEADROOM;
        const sealed = this.#transport.seal(peer, packet, 0, packet.length, out.data, start, now);
        if (sealed < 0) continue;
        out.lengths[queued] = sealed;
        out.tos[queued] = ecnForEncapsulation(getEcn(packet, 0));
        queued++;
        sent++;
      }
    }
    this.#send(queued);
    return sent;
  }

  get holding(): number {
    let held = 0;
    for (const packets of this.#held.values()) held += packets.length;
    return held;
  }

  /** Releases crypto contexts of keypairs the control thread replaced and expires held route misses; call about once a second. */
  sweep(): void {
    this.#transport.sweep();
    this.#routeMisses.expire(monotonicMs());
    this.#countRouteMissDrops();
  }

  destroy(): void {
    this.#transport.destroy();
  }

  #send(count: number): void {
    if (count === 0) return;
    const sent = this.#udp.sendBatch(this.#out, count);
    if (sent < count) this.#drops.add(UNATTRIBUTED, DROP_UDP_SEND_FAILED, count - sent);
  }

  #hold(peer: number, data: Uint8Array, offset: number, length: number): void {
    this.#holdForPeer(peer, data, offset, length);
    this.#peers.requestHandshake(peer);
  }

  #holdForPeer(peer: number, data: Uint8Array, offset: number, length: number): void {
    let held = this.#held.get(peer);
    if (held === undefined) {
      held = [];
      this.#held.set(peer, held);
    }
    if (held.length >= this.#holdPerPeer) {
      this.#drops.add(peer, DROP_HOLD_OVERFLOW);
    } else {
      held.push(data.slice(offset, offset + length));
    }
  }

  #countRouteMissDrops(): void {
    const { overflow, expired } = this.#routeMisses.drops;
    if (overflow !== this.#routeMissOverflow) {
      this.#drops.add(UNATTRIBUTED, DROP_ROUTE_MISS_OVERFLOW, overflow - this.#routeMissOverflow);
      this.#routeMissOverflow = overflow;
    }
    if (expired !== this.#routeMissExpired) {
      this.#drops.add(UNATTRIBUTED, DROP_ROUTE_MISS_EXPIRED, expired - this.#routeMissExpired);
      this.#routeMissExpired = expired;
    }
  }

  /** Copies the peer's endpoint into send slot `slot`; false when it has none yet. */
  #loadEndpoint(peer: number, slot: number): boolean {
    if (
      this.#peers.endpointVersion(peer) !== this.#endpointVersion[peer] &&
      !this.#cacheEndpoint(peer)
    ) {
      return false;
    }
    const out = this.#out;
    out.families[slot] = this.#endpointFamily[peer]!;
    out.ports[slot] = this.#endpointPort[peer]!;
    for (let index = 0; index < 16; index++)
      out.addresses[slot * 16 + index] = this.#endpointAddress[peer * 16 + index]!;
    return true;
  }

  #receiveDatagram(slot: number, offset: number, length: number, now: number): void {
    const batch = this.#in;
    const data = batch.data;
    if (length < 4) {
      this.#drops.add(UNATTRIBUTED, DROP_MALFORMED);
      return;
    }
    const type = messageType(data, offset);
    if (type !== MESSAGE_TRANSPORT_DATA) {
      if (isRelayDatagram(data, offset, length))
        this.#relay.push(data, offset, length, batch, slot);
      else this.#receiveHandshake(type, slot, offset, length);
      return;
    }
    if (length < MESSAGE_TRANSPORT_MIN_SIZE) {
      this.#drops.add(UNATTRIBUTED, DROP_MALFORMED);
      return;
    }
    if (length - HEADROOM - AEAD_TAG_LENGTH > this.#writeRoom) {
      this.#drops.add(UNATTRIBUTED, DROP_INVALID_INNER_PACKET);
      return;
    }
    const write = this.#pendingWrites;
    const view = this.#writeViews[write]!;
    const from = this.#opened;
    const opened = this.#transport.open(data, offset, length, view, HEADROOM, now, from);
    const peer = from.peer;
    if (opened < 0) {
      this.#drops.add(peer < 0 ? UNATTRIBUTED : peer, dropReasonOf(opened));
      return;
    }
    this.#noteEndpoint(peer, slot);
    if (opened === 0) return; // keepalive
    if (this.#allowedIps.lookupSource(view, HEADROOM) !== peer) {
      this.#drops.add(peer, DROP_SOURCE_NOT_ALLOWED);
      return;
    }
    if (!this.#policy.empty && !this.#policy.allows(peer, view, HEADROOM, opened)) {
      this.#drops.add(peer, DROP_POLICY_DENIED);
      return;
    }
    this.#activity.noteSource(view, HEADROOM, now);
    if (!applyDecapsulationEcn(view, HEADROOM, (batch.tos[slot]! & 3) as Ecn)) {
      this.#drops.add(peer, DROP_ECN_NOT_ECT);
      return;
    }
    this.#writeLengths[write] = opened;
    this.#pendingWrites = write + 1;
    if (this.#pendingWrites === this.#writeViews.length) this.#flushWrites();
  }

  /** Screens a handshake message as the control thread would, before it takes a ring entry. */
  #receiveHandshake(type: number, slot: number, offset: number, length: number): void {
    const batch = this.#in;
    const size = HANDSHAKE_SIZES[type];
    if (size === undefined) {
      this.#drops.add(UNATTRIBUTED, DROP_UNKNOWN_TYPE);
    } else if (length !== size) {
      this.#drops.add(UNATTRIBUTED, DROP_MALFORMED);
    } else if (
      type !== MESSAGE_HANDSHAKE_COOKIE &&
      !hasValidMac1(this.#mac1Key, batch.data, offset, length)
    ) {
      this.#drops.add(UNATTRIBUTED, DROP_BAD_MAC1);
    } else {
      this.#handshakes.push(batch.data, offset, length, batch, slot);
    }
  }

  #flushWrites(): void {
    const count = this.#pendingWrites;
    if (count === 0) return;
    this.#pendingWrites = 0;
    const written = this.#tun.write(
      this.#writeViews,
      this.#writeOffsets,
      this.#writeLengths,
      count,
    );
    if (written === count) return;
    const rejected = this.#tun.txRejected - this.#tunTxRejected;
    this.#tunTxRejected += rejected;
    if (rejected > 0) this.#drops.add(UNATTRIBUTED, DROP_TUN_WRITE_REJECTED, rejected);
    if (count - written > rejected) {
      this.#drops.add(UNATTRIBUTED, DROP_TUN_FULL, count - written - rejected);
    }
  }

  #countTunReadDrops(): void {
    const dropped = this.#tun.rxDropped - this.#tunRxDropped;
    if (dropped === 0) return;
    this.#tunRxDropped += dropped;
    this.#drops.add(UNATTRIBUTED, DROP_TUN_READ_DROPPED, dropped);
  }

  /** Roaming: an authenticated packet from a new source becomes the peer's endpoint. */
  #noteEndpoint(peer: number, slot: number): void {
    const batch = this.#in;
    if (
      (this.#peers.endpointVersion(peer) === this.#endpointVersion[peer] ||
        this.#cacheEndpoint(peer)) &&
      this.#endpointFamily[peer] === batch.families[slot] &&
      this.#endpointPort[peer] === batch.ports[slot] &&
      this.#sameCachedAddress(peer, slot)
    ) {
      return;
    }
    const length = batch.families[slot] === 4 ? 4 : 16;
    this.#peers.noteEndpoint(
      peer,
      batch.addresses.subarray(slot * 16, slot * 16 + length),
      batch.ports[slot]!,
    );
  }

  /** Reads the peer's endpoint from shared memory into the cache; false when it has none. */
  #cacheEndpoint(peer: number): boolean {
    const version = this.#peers.endpointVersion(peer);
    const endpoint = this.#peers.readEndpoint(peer, this.#scratchAddress);
    if (endpoint === 0) return false;
    this.#endpointFamily[peer] = endpointAddressLength(endpoint) === 4 ? 4 : 6;
    this.#endpointPort[peer] = endpointPort(endpoint);
    this.#endpointAddress.set(this.#scratchAddress, peer * 16);
    this.#endpointVersion[peer] = version;
    return true;
  }

  #sameCachedAddress(peer: number, slot: number): boolean {
    const addresses = this.#in.addresses;
    const length = this.#endpointFamily[peer] === 4 ? 4 : 16;
    for (let index = 0; index < length; index++) {
      if (addresses[slot * 16 + index] !== this.#endpointAddress[peer * 16 + index]) return false;
    }
    return true;
  }
}

/**
 * The monotonic clock of every engine thread. performance.now() alone
 * counts from each thread's own start, but the worker contract compares
 * stamps written by different threads.
 */
export function monotonicMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Where things lie in an outbound slot: RELAY_HEADROOM bytes for a
 * ChannelData header, then the WireGuard message (`messageAt`, what is
 * sent) whose plaintext the TUN read puts at `packetAt`, sealed in place.
 */
export function outboundSlotLayout(mtu: number): {
  slotBytes: number;
  messageAt: number;
  packetAt: number;
} {
  return {
    slotBytes: roundUp(RELAY_HEADROOM + sealedLength(mtu, mtu), 64),
    messageAt: RELAY_HEADROOM,
    packetAt: RELAY_HEADROOM + HEADROOM,
  };
}

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
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
    default:
      return DROP_INVALID_INNER_PACKET;
  }
}

/** A DatagramBatch over plain ArrayBuffer memory, for a batch used by one thread only. */
function threadLocalBatch(capacity: number, slotSize: number): DatagramBatch {
  return new DatagramBatch(capacity, slotSize, new Uint8Array(capacity * slotSize));
}
