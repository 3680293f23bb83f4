/**
 * A sans-IO WireGuard device: our static key, the peers, the handshakes
 * and the timers. Datagrams and packets go in with the current time;
 * datagrams to send, events and the next deadline come out through the
 * poll* calls. Nothing here reads a clock, opens a socket or sets a timer.
 *
 * The transport data path runs through TransportPath over shared memory,
 * exactly as data workers would run it (see worker-contract.ts); this class
 * is then the control thread, here also doing the data path itself.
 */

import {
  KEEPALIVE_TIMEOUT,
  MAX_CONTENT_SIZE,
  MAX_STAGED_PACKETS,
  MIN_INITIATION_INTERVAL,
  REJECT_AFTER_TIME,
  REKEY_ATTEMPT_TIME,
  REKEY_TIMEOUT,
  REKEY_TIMEOUT_JITTER_MAX,
  UNDER_LOAD_QUEUE_DEPTH,
} from './constants.ts';
import { CookieChecker } from './cookie.ts';
import { HandshakeAdmission } from './handshake-admission.ts';
import { dh, randomBytes as systemRandomBytes } from './crypto/primitives.ts';
import type { CryptoProvider } from './crypto/provider.ts';
import { isValidEndpoint, sameEndpoint } from './endpoint.ts';
import type { Endpoint } from './endpoint.ts';
import { NoiseHandshake, wipeConsumedInitiation, wipeInitiatorState } from './handshake.ts';
import { KeypairTable } from './keypair-table.ts';
import { KeyFormatError, checkKeyLength, encodeKey, publicKeyFromPrivateKey } from './keys.ts';
import type { KeyPair } from './keys.ts';
import { classifyMessage, readCookieReply, readUint32 } from './messages.ts';
import type { MessageClass } from './messages.ts';
import { PeerState, emptyDropCounts } from './peer.ts';
import type { DropReason } from './peer.ts';
import { isLaterTimestamp } from './tai64n.ts';
import {
  TRANSPORT_DECRYPT_FAILED,
  TRANSPORT_EXPIRED,
  TRANSPORT_INVALID_INNER_PACKET,
  TRANSPORT_NO_SESSION,
  TRANSPORT_REPLAY,
  TRANSPORT_TOO_LARGE,
  TRANSPORT_UNKNOWN_RECEIVER,
  TransportPath,
  sealedLength,
} from './transport.ts';
import type { OpenedFrom } from './transport.ts';
import {
  NO_SLOT,
  SIGNAL_HANDSHAKE_NEEDED,
  SIGNAL_NEXT_KEYPAIR_CONFIRMED,
  createSharedTransportMemory,
} from './worker-contract.ts';
import type { SharedTransportCapacity, SharedTransportMemory } from './worker-contract.ts';

export type { DropReason } from './peer.ts';
export { DROP_REASONS } from './peer.ts';
export type { Endpoint } from './endpoint.ts';

/** The two clocks: monotonic for timers, wall clock for TAI64N timestamps. */
export interface Instant {
  monotonicMs: number;
  wallClockMs: number;
}

export interface PeerConfig {
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  endpoint?: Endpoint;
  persistentKeepaliveSeconds?: number;
}

/** What updatePeer may change without touching the session. */
export type PeerUpdate = Omit<PeerConfig, 'presharedKey'>;

export interface Transmit {
  to: Endpoint;
  datagram: Uint8Array;
}

export type DeviceEvent =
  | { type: 'packet'; peer: string; packet: Uint8Array }
  | { type: 'handshake-complete'; peer: string; initiator: boolean; now: number }
  | { type: 'handshake-gave-up'; peer: string; droppedPackets: number }
  | { type: 'drop'; peer?: string; reason: DropReason };

export interface PeerStats {
  /** Bytes and counts of WireGuard messages (handshakes included) as sent and received on the wire. */
  txBytes: number;
  rxBytes: number;
  /** Transport messages (keepalives included). */
  txPackets: number;
  rxPackets: number;
  handshakes: number;
  lastHandshakeMonotonicMs?: number;
  /** The same moment by the wall clock the device was given then (for display). */
  lastHandshakeWallClockMs?: number;
  drops: Record<DropReason, number>;
  endpoint?: Endpoint;
}

export interface DeviceOptions {
  /** Kept as is, not copied, and wiped by close(); an all-zero (wiped) key is refused. */
  privateKey: Uint8Array;
  crypto: CryptoProvider;
  /** The tunnel's MTU, which transport padding never exceeds. */
  mtu: number;
  /** Source of randomness for indices, ephemeral keys, jitter and cookie secrets. */
  randomBytes?: (n: number) => Uint8Array;
  /** Send-side rekey threshold; REKEY_AFTER_MESSAGES unless a test needs it reachable. */
  rekeyAfterMessages?: number;
  capacity?: SharedTransportCapacity;
  /**
   * Handshake messages waiting (see noteHandshakeQueueDepth) that put the
   * device under load; default UNDER_LOAD_QUEUE_DEPTH.
   */
  underLoadQueueDepth?: number;
}

export class WireGuardDevice {
  readonly publicKey: Uint8Array;
  /** The memory data workers attach to (worker-contract.ts). */
  readonly sharedMemory: SharedTransportMemory;

  readonly #identity: KeyPair;
  readonly #noise: NoiseHandshake;
  readonly #cookieChecker: CookieChecker;
  readonly #randomBytes: (n: number) => Uint8Array;
  readonly #table: KeypairTable;
  readonly #transport: TransportPath;
  readonly #opened: OpenedFrom = { peer: -1 };
  readonly #mtu: number;
  readonly #peersByName = new Map<string, PeerState>();
  readonly #peersBySlot = new Map<number, PeerState>();
  readonly #transmits: Transmit[] = [];
  readonly #events: DeviceEvent[] = [];
  readonly #deviceDrops = emptyDropCounts();
  readonly #admission: HandshakeAdmission;
  #closed = false;
  #lastNowMs = 0;

  constructor(options: DeviceOptions) {
    checkKeyLength(options.privateKey, 'private key');
    if (options.privateKey.every((byte) => byte === 0)) {
      throw new KeyFormatError('the private key is all zeros: a wiped key cannot be used again');
    }
    this.#identity = {
      privateKey: options.privateKey,
      publicKey: publicKeyFromPrivateKey(options.privateKey),
    };
    this.publicKey = this.#identity.publicKey;
    this.#randomBytes = options.randomBytes ?? systemRandomBytes;
    this.#noise = new NoiseHandshake(this.#identity, options.crypto);
    this.#cookieChecker = new CookieChecker(this.#identity.publicKey, this.#randomBytes);
    this.#admission = new HandshakeAdmission({
      underLoadQueueDepth: options.underLoadQueueDepth ?? UNDER_LOAD_QUEUE_DEPTH,
    });
    this.sharedMemory = createSharedTransportMemory({
      mtu: options.mtu,
      capacity: options.capacity,
      rekeyAfterMessages: options.rekeyAfterMessages,
    });
    this.#table = new KeypairTable(this.sharedMemory);
    this.#transport = new TransportPath(this.sharedMemory, options.crypto);
    this.#mtu = options.mtu;
  }

  addPeer(config: PeerConfig): void {
    if (this.#closed) throw new Error('the device is closed');
    checkKeyLength(config.publicKey, 'peer public key');
    const name = encodeKey(config.publicKey);
    if (this.#peersByName.has(name)) throw new Error(`peer ${name} already exists`);
    if (name === encodeKey(this.publicKey)) {
      throw new Error(`peer ${name} is this device's own public key`);
    }
    const staticStatic = dh(this.#identity.privateKey, config.publicKey);
    if (staticStatic === null) throw new KeyFormatError(`peer ${name} is a low-order point`);
    staticStatic.fill(0);
    if (config.presharedKey !== undefined) checkKeyLength(config.presharedKey, 'preshared key');
    checkPeerUpdate(name, config);
    const keepalive = config.persistentKeepaliveSeconds ?? 0;
    const slot = this.#table.allocatePeer();
    if (slot === undefined) {
      throw new RangeError(`peer capacity of ${this.sharedMemory.peerSlots} reached`);
    }
    const peer = new PeerState({
      publicKey: new Uint8Array(config.publicKey),
      name,
      slot,
      presharedKey: new Uint8Array(config.presharedKey ?? new Uint8Array(32)),
      persistentKeepaliveMs: keepalive * 1000,
      newHandshakeJitterMs: this.#jitter(),
    });
    this.#peersByName.set(name, peer);
    this.#peersBySlot.set(slot, peer);
    if (config.endpoint !== undefined) this.#roam(peer, config.endpoint);
  }

  /**
   * Changes a peer's endpoint and persistent keepalive in place: its
   * session, handshake state and counters stay (roaming, ICE). An absent
   * endpoint leaves the current one (configured or roamed to) as it is.
   */
  updatePeer(update: PeerUpdate): void {
    const peer = this.#peer(update.publicKey);
    checkPeerUpdate(peer.name, update);
    peer.persistentKeepaliveMs = (update.persistentKeepaliveSeconds ?? 0) * 1000;
    if (update.endpoint !== undefined) this.#roam(peer, update.endpoint);
  }

  /** Forgets the peer and wipes its keys; unknown keys are ignored. */
  removePeer(publicKey: Uint8Array): void {
    const peer = this.#peersByName.get(encodeKey(publicKey));
    if (peer === undefined) return;
    this.#abandonInitiation(peer);
    this.#table.releasePeer(peer.slot);
    peer.presharedKey.fill(0);
    peer.staged = [];
    this.#peersByName.delete(peer.name);
    this.#peersBySlot.delete(peer.slot);
  }

  /** Forgets every peer (wiping their keys) and wipes the static private key; the device takes no new peers. */
  close(): void {
    for (const peer of [...this.#peersByName.values()]) this.removePeer(peer.publicKey);
    this.#transport.destroy();
    this.#identity.privateKey.fill(0);
    this.#closed = true;
  }

  /**
   * How many handshake messages wait to be handled, as the caller's queue
   * holds them now. A deep queue puts the device under load for
   * UNDER_LOAD_AFTER_TIME: then only handshake messages with a valid MAC2
   * are handled (the rest get cookie replies), within a rate per source.
   */
  noteHandshakeQueueDepth(depth: number, now: Instant): void {
    this.#admission.noteQueueDepth(depth, now.monotonicMs);
  }

  handleDatagram(datagram: Uint8Array, from: Endpoint, now: Instant): void {
    this.#handle(datagram, classifyMessage(datagram), from, now, false);
  }

  /**
   * As handleDatagram, for a handshake message whose MAC1 the caller has
   * already checked with `mac1Key(publicKey)` — as a data worker does
   * before the message reaches the control thread — so that each message
   * of a flood costs one MAC1, not two. A transport message is refused.
   */
  handleScreenedHandshake(message: Uint8Array, from: Endpoint, now: Instant): void {
    const kind = classifyMessage(message);
    if (kind === 'transport') throw new TypeError('a transport message is not a handshake message');
    this.#handle(message, kind, from, now, true);
  }

  #handle(
    datagram: Uint8Array,
    kind: MessageClass,
    from: Endpoint,
    now: Instant,
    mac1Checked: boolean,
  ): void {
    this.#lastNowMs = now.monotonicMs;
    switch (kind) {
      case 'initiation':
        return this.#handleInitiation(datagram, from, now, mac1Checked);
      case 'response':
        return this.#handleResponse(datagram, from, now, mac1Checked);
      case 'cookie-reply':
        return this.#handleCookieReply(datagram, now);
      case 'transport':
        return this.#handleTransport(datagram, from, now);
      default:
        return this.#drop(undefined, kind);
    }
  }

  /** Encrypts and sends `packet`, or stages it (bounded) and starts a handshake. */
  sendPacket(publicKey: Uint8Array, packet: Uint8Array, now: Instant): void {
    this.#lastNowMs = now.monotonicMs;
    const peer = this.#peer(publicKey);
    if (packet.length > MAX_CONTENT_SIZE) return this.#drop(peer, 'too-large');
    if (this.#endpoint(peer) === undefined) return this.#drop(peer, 'no-endpoint');
    if (peer.staged.length > 0 || !this.#seal(peer, packet, now)) {
      this.#stage(peer, packet);
      this.#startHandshake(peer, now);
    }
    this.#serviceSignals(peer, now);
  }

  /** Starts a handshake now unless one is already under way. */
  initiateHandshake(publicKey: Uint8Array, now: Instant): void {
    this.#lastNowMs = now.monotonicMs;
    this.#startHandshake(this.#peer(publicKey), now);
  }

  handleTimeout(now: Instant): void {
    this.#lastNowMs = now.monotonicMs;
    this.#transport.sweep();
    for (const peer of this.#peersByName.values()) this.#handlePeerTimers(peer, now);
  }

  /** The earliest monotonic ms at which handleTimeout has work, if any. */
  pollTimeout(): number | undefined {
    let earliest: number | undefined;
    for (const peer of this.#peersByName.values()) {
      for (const deadline of this.#peerDeadlines(peer, this.#lastNowMs)) {
        if (deadline !== undefined && (earliest === undefined || deadline < earliest)) {
          earliest = deadline;
        }
      }
    }
    return earliest;
  }

  pollTransmit(): Transmit | undefined {
    return this.#transmits.shift();
  }

  pollEvent(): DeviceEvent | undefined {
    return this.#events.shift();
  }

  peerStats(publicKey: Uint8Array): PeerStats {
    const peer = this.#peer(publicKey);
    const transport = this.#table.counters(peer.slot);
    const stats: PeerStats = {
      txBytes: transport.txBytes + peer.handshakeTxBytes,
      rxBytes: transport.rxBytes + peer.handshakeRxBytes,
      txPackets: transport.txPackets,
      rxPackets: transport.rxPackets,
      handshakes: peer.handshakes,
      drops: { ...peer.drops },
    };
    if (peer.lastHandshakeMs !== undefined) stats.lastHandshakeMonotonicMs = peer.lastHandshakeMs;
    if (peer.lastHandshakeWallClockMs !== undefined) {
      stats.lastHandshakeWallClockMs = peer.lastHandshakeWallClockMs;
    }
    const endpoint = this.#endpoint(peer);
    if (endpoint !== undefined) stats.endpoint = { ...endpoint };
    return stats;
  }

  /** Monotonic ms of the peer's latest authenticated message sent or received (keepalives too), as the data workers stamp them. */
  lastActivityMs(publicKey: Uint8Array, nowMs: number): number | undefined {
    const peer = this.#peer(publicKey);
    const sent = this.#table.lastSentMs(peer.slot, nowMs);
    const received = this.#table.lastReceivedMs(peer.slot, nowMs);
    if (sent === undefined || received === undefined) return sent ?? received;
    return Math.max(sent, received);
  }

  /** The peer's slot in `sharedMemory`, which data workers pass to TransportPath.seal. */
  peerSlot(publicKey: Uint8Array): number {
    return this.#peer(publicKey).slot;
  }

  /** Drops that could not be attributed to a peer. */
  deviceDrops(): Record<DropReason, number> {
    return { ...this.#deviceDrops };
  }

  // Receiving.

  #handleInitiation(message: Uint8Array, from: Endpoint, now: Instant, mac1Checked: boolean): void {
    if (!this.#checkMacs(message, readUint32(message, 4), from, now, mac1Checked)) return;
    const initiation = this.#noise.consumeInitiation(message);
    if (initiation === undefined) return this.#drop(undefined, 'handshake-failed');
    const peer = this.#peersByName.get(encodeKey(initiation.remoteStatic));
    if (peer === undefined) return this.#drop(undefined, 'unknown-peer');
    peer.handshakeRxBytes += message.length;
    if (
      peer.lastTimestamp !== undefined &&
      !isLaterTimestamp(initiation.timestamp, peer.lastTimestamp)
    ) {
      return this.#drop(peer, 'stale-timestamp');
    }
    if (
      peer.lastInitiationConsumedMs !== undefined &&
      now.monotonicMs - peer.lastInitiationConsumedMs < MIN_INITIATION_INTERVAL
    ) {
      return this.#drop(peer, 'handshake-rate-limited');
    }
    peer.lastTimestamp = initiation.timestamp;
    peer.lastInitiationConsumedMs = now.monotonicMs;
    this.#roam(peer, from);
    this.#table.noteAuthenticatedReceived(peer.slot, now.monotonicMs);

    const reserved = this.#table.reserveKeypair(peer.slot, () => this.#random32());
    if (reserved === undefined) return this.#drop(peer, 'no-free-index');
    const response = this.#noise.createResponse(
      initiation,
      peer.presharedKey,
      reserved.localIndex,
      this.#randomBytes(32),
    );
    wipeConsumedInitiation(initiation);
    if (response === undefined) {
      this.#table.releaseKeypair(reserved.slot);
      return this.#drop(peer, 'handshake-failed');
    }
    this.#table.installKeys(
      reserved.slot,
      response.keys,
      initiation.remoteIndex,
      false,
      now.monotonicMs,
    );
    response.keys.sendKey.fill(0);
    response.keys.receiveKey.fill(0);
    const old = this.#table.pointers(peer.slot);
    this.#table.publish(peer.slot, {
      current: old.current,
      previous: NO_SLOT,
      next: reserved.slot,
    });
    this.#releaseKeypairs(old.next, old.previous);
    peer.lastSessionDerivedMs = now.monotonicMs;
    peer.cookies.stampMacs(response.message, now.monotonicMs);
    this.#transmitHandshake(peer, response.message, now);
  }

  #handleResponse(message: Uint8Array, from: Endpoint, now: Instant, mac1Checked: boolean): void {
    if (!this.#checkMacs(message, readUint32(message, 4), from, now, mac1Checked)) return;
    const owner = this.#table.lookup(readUint32(message, 8));
    const peer = owner === undefined ? undefined : this.#peersBySlot.get(owner.peer);
    const initiation = peer?.initiation;
    if (peer === undefined || initiation === undefined || initiation.keypairSlot !== owner?.slot) {
      return this.#drop(peer, 'unknown-receiver');
    }
    peer.handshakeRxBytes += message.length;
    const keys = this.#noise.consumeResponse(
      initiation.state,
      { publicKey: peer.publicKey, presharedKey: peer.presharedKey },
      message,
    );
    if (keys === undefined) return this.#drop(peer, 'handshake-failed');
    wipeInitiatorState(initiation.state);
    peer.initiation = undefined;
    const slot = initiation.keypairSlot;
    this.#table.installKeys(slot, keys, readUint32(message, 4), true, now.monotonicMs);
    keys.sendKey.fill(0);
    keys.receiveKey.fill(0);

    const old = this.#table.pointers(peer.slot);
    const previous = old.next !== NO_SLOT ? old.next : old.current;
    this.#table.publish(peer.slot, { current: slot, previous, next: NO_SLOT });
    this.#releaseKeypairs(old.previous, old.next !== NO_SLOT ? old.current : NO_SLOT);
    peer.lastSessionDerivedMs = now.monotonicMs;
    this.#roam(peer, from);
    this.#table.noteAuthenticatedReceived(peer.slot, now.monotonicMs);
    this.#completeHandshake(peer, true, now);
    if (peer.staged.length === 0) this.#seal(peer, EMPTY, now);
    else this.#flushStaged(peer, now);
  }

  #handleCookieReply(message: Uint8Array, now: Instant): void {
    const reply = readCookieReply(message);
    const owner = this.#table.lookup(reply.receiverIndex);
    const peer = owner === undefined ? undefined : this.#peersBySlot.get(owner.peer);
    if (peer === undefined) return this.#drop(undefined, 'unknown-receiver');
    peer.handshakeRxBytes += message.length;
    if (!peer.cookies.consumeReply(reply, now.monotonicMs)) this.#drop(peer, 'bad-cookie');
  }

  #handleTransport(message: Uint8Array, from: Endpoint, now: Instant): void {
    const plaintext = new Uint8Array(message.length);
    const opened = this.#opened;
    const result = this.#transport.open(
      message,
      0,
      message.length,
      plaintext,
      0,
      now.monotonicMs,
      opened,
    );
    const peer = this.#peersBySlot.get(opened.peer);
    if (result < 0 && result !== TRANSPORT_INVALID_INNER_PACKET) {
      return this.#drop(peer, TRANSPORT_DROP_REASONS[result] ?? 'decrypt-failed');
    }
    if (peer === undefined) return;
    this.#roam(peer, from);
    this.#serviceSignals(peer, now);
    if (result === TRANSPORT_INVALID_INNER_PACKET) return this.#drop(peer, 'invalid-inner-packet');
    if (result > 0) {
      this.#events.push({ type: 'packet', peer: peer.name, packet: plaintext.subarray(0, result) });
    }
  }

  /**
   * MAC1 unless the caller checked it; under load MAC2 too, answering a
   * missing or stale one with a cookie, and the source's rate.
   */
  #checkMacs(
    message: Uint8Array,
    senderIndex: number,
    from: Endpoint,
    now: Instant,
    mac1Checked: boolean,
  ): boolean {
    if (!mac1Checked && !this.#cookieChecker.isMac1Valid(message)) {
      this.#drop(undefined, 'bad-mac1');
      return false;
    }
    if (!this.#admission.isUnderLoad(now.monotonicMs)) return true;
    if (this.#cookieChecker.isMac2Valid(message, from, now.monotonicMs)) {
      const admission = this.#admission.admit(from.address, now.monotonicMs);
      if (admission === 'admit') return true;
      this.#drop(
        undefined,
        admission === 'rate-limited' ? 'source-rate-limited' : 'source-table-full',
      );
      return false;
    }
    const reply = this.#cookieChecker.createReply(message, senderIndex, from, now.monotonicMs);
    if (reply === undefined) {
      this.#drop(undefined, 'bad-mac2-under-load');
    } else {
      this.#transmits.push({ to: from, datagram: reply });
      this.#drop(undefined, 'cookie-sent');
    }
    return false;
  }

  // Sending.

  /** Seals and queues one transport message; false when there is no usable session. */
  #seal(peer: PeerState, packet: Uint8Array, now: Instant): boolean {
    const endpoint = this.#endpoint(peer);
    if (endpoint === undefined) return false;
    const datagram = new Uint8Array(sealedLength(packet.length, this.#mtu));
    const result = this.#transport.seal(
      peer.slot,
      packet,
      0,
      packet.length,
      datagram,
      0,
      now.monotonicMs,
    );
    if (result === TRANSPORT_NO_SESSION || result === TRANSPORT_EXPIRED) return false;
    if (result === TRANSPORT_TOO_LARGE) {
      this.#drop(peer, 'too-large');
      return true;
    }
    this.#transmits.push({ to: endpoint, datagram: datagram.subarray(0, result) });
    return true;
  }

  #stage(peer: PeerState, packet: Uint8Array): void {
    if (peer.staged.length >= MAX_STAGED_PACKETS) {
      peer.staged.shift();
      this.#drop(peer, 'queue-full');
    }
    peer.staged.push(new Uint8Array(packet));
  }

  #flushStaged(peer: PeerState, now: Instant): void {
    while (peer.staged.length > 0) {
      if (!this.#seal(peer, peer.staged[0]!, now)) return;
      peer.staged.shift();
    }
  }

  #startHandshake(peer: PeerState, now: Instant): void {
    if (peer.initiation !== undefined || this.#endpoint(peer) === undefined) return;
    this.#sendInitiation(peer, now, now.monotonicMs);
  }

  /** A fresh initiation (new ephemeral key and index) for a new attempt or a retransmission. */
  #sendInitiation(peer: PeerState, now: Instant, attemptStartMs: number): void {
    this.#abandonInitiation(peer);
    const reserved = this.#table.reserveKeypair(peer.slot, () => this.#random32());
    if (reserved === undefined) return this.#drop(peer, 'no-free-index');
    const created = this.#noise.createInitiation(
      { publicKey: peer.publicKey, presharedKey: peer.presharedKey },
      reserved.localIndex,
      now.wallClockMs,
      this.#randomBytes(32),
    );
    if (created === undefined) {
      this.#table.releaseKeypair(reserved.slot);
      return this.#drop(peer, 'handshake-failed');
    }
    peer.initiation = {
      state: created.state,
      keypairSlot: reserved.slot,
      attemptStartMs,
      retransmitAtMs: now.monotonicMs + REKEY_TIMEOUT + this.#jitter(),
    };
    peer.cookies.stampMacs(created.message, now.monotonicMs);
    this.#transmitHandshake(peer, created.message, now);
  }

  #transmitHandshake(peer: PeerState, message: Uint8Array, now: Instant): void {
    const endpoint = this.#endpoint(peer);
    if (endpoint === undefined) return;
    peer.handshakeTxBytes += message.length;
    this.#table.noteAuthenticatedSent(peer.slot, now.monotonicMs);
    this.#transmits.push({ to: endpoint, datagram: message });
  }

  // Timers.

  #peerDeadlines(peer: PeerState, nowMs: number): (number | undefined)[] {
    const table = this.#table;
    const hasSession = table.pointers(peer.slot).current !== NO_SLOT;
    const initiation = peer.initiation;
    const dataReceived = table.dataReceivedUnansweredMs(peer.slot, nowMs);
    const dataSent = table.dataSentUnansweredMs(peer.slot, nowMs);
    return [
      initiation?.retransmitAtMs,
      hasSession && dataReceived !== undefined ? dataReceived + KEEPALIVE_TIMEOUT : undefined,
      initiation === undefined && dataSent !== undefined
        ? dataSent + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + peer.newHandshakeJitterMs
        : undefined,
      this.#persistentKeepaliveDeadline(peer, nowMs),
      peer.lastSessionDerivedMs === undefined
        ? undefined
        : peer.lastSessionDerivedMs + 3 * REJECT_AFTER_TIME,
    ];
  }

  #persistentKeepaliveDeadline(peer: PeerState, nowMs: number): number | undefined {
    if (peer.persistentKeepaliveMs === 0 || this.#endpoint(peer) === undefined) return undefined;
    if (peer.initiation !== undefined) return undefined;
    const sent = this.#table.lastSentMs(peer.slot, nowMs);
    const received = this.#table.lastReceivedMs(peer.slot, nowMs);
    const last = Math.max(sent ?? -Infinity, received ?? -Infinity);
    return last === -Infinity ? undefined : last + peer.persistentKeepaliveMs;
  }

  #handlePeerTimers(peer: PeerState, now: Instant): void {
    const nowMs = now.monotonicMs;
    this.#serviceSignals(peer, now);
    const [retransmit, keepalive, newHandshake, persistentKeepalive, zeroKeys] =
      this.#peerDeadlines(peer, nowMs);
    if (retransmit !== undefined && nowMs >= retransmit) {
      const attemptStartMs = peer.initiation!.attemptStartMs;
      if (nowMs - attemptStartMs >= REKEY_ATTEMPT_TIME) this.#giveUp(peer);
      else this.#sendInitiation(peer, now, attemptStartMs);
    }
    if (keepalive !== undefined && nowMs >= keepalive) {
      if (!this.#seal(peer, EMPTY, now)) this.#table.clearDataReceivedUnanswered(peer.slot);
    }
    if (newHandshake !== undefined && nowMs >= newHandshake) {
      this.#table.clearDataSentUnanswered(peer.slot);
      peer.newHandshakeJitterMs = this.#jitter();
      this.#startHandshake(peer, now);
    }
    if (persistentKeepalive !== undefined && nowMs >= persistentKeepalive) {
      if (!this.#seal(peer, EMPTY, now)) this.#startHandshake(peer, now);
    }
    if (zeroKeys !== undefined && nowMs >= zeroKeys) this.#zeroKeys(peer);
  }

  #giveUp(peer: PeerState): void {
    this.#abandonInitiation(peer);
    const droppedPackets = peer.staged.length;
    peer.staged = [];
    peer.drops['handshake-timeout'] += droppedPackets;
    this.#events.push({ type: 'handshake-gave-up', peer: peer.name, droppedPackets });
  }

  #zeroKeys(peer: PeerState): void {
    const old = this.#table.pointers(peer.slot);
    this.#table.publish(peer.slot, { current: NO_SLOT, previous: NO_SLOT, next: NO_SLOT });
    this.#releaseKeypairs(old.current, old.previous, old.next);
    this.#abandonInitiation(peer);
    peer.lastSessionDerivedMs = undefined;
  }

  /** Acts on what the data path raised: rekey requests and a responder's confirmed keypair. */
  #serviceSignals(peer: PeerState, now: Instant): void {
    const signals = this.#table.takeSignals(peer.slot);
    if ((signals & SIGNAL_NEXT_KEYPAIR_CONFIRMED) !== 0) {
      const old = this.#table.pointers(peer.slot);
      if (old.next !== NO_SLOT) {
        this.#table.publish(peer.slot, { current: old.next, previous: old.current, next: NO_SLOT });
        this.#releaseKeypairs(old.previous);
        this.#abandonInitiation(peer);
        this.#completeHandshake(peer, false, now);
        this.#flushStaged(peer, now);
      }
    }
    if ((signals & SIGNAL_HANDSHAKE_NEEDED) !== 0) this.#startHandshake(peer, now);
  }

  #completeHandshake(peer: PeerState, initiator: boolean, now: Instant): void {
    peer.handshakes++;
    peer.lastHandshakeMs = now.monotonicMs;
    peer.lastHandshakeWallClockMs = now.wallClockMs;
    this.#events.push({
      type: 'handshake-complete',
      peer: peer.name,
      initiator,
      now: now.monotonicMs,
    });
  }

  // Bookkeeping.

  #abandonInitiation(peer: PeerState): void {
    const initiation = peer.initiation;
    if (initiation === undefined) return;
    wipeInitiatorState(initiation.state);
    this.#table.releaseKeypair(initiation.keypairSlot);
    peer.initiation = undefined;
  }

  #releaseKeypairs(...slots: number[]): void {
    for (const slot of slots) if (slot !== NO_SLOT) this.#table.releaseKeypair(slot);
  }

  /** The endpoint follows the source of the latest authenticated packet. */
  #roam(peer: PeerState, from: Endpoint): void {
    if (sameEndpoint(this.#endpoint(peer), from)) return;
    this.#table.writeEndpoint(peer.slot, from.address, from.port);
  }

  /**
   * Where to send: the endpoint in shared memory, where data workers record
   * roams too. Re-read only when its sequence has moved.
   */
  #endpoint(peer: PeerState): Endpoint | undefined {
    const sequence = this.#table.endpointSequence(peer.slot);
    if (sequence !== peer.endpointSequence) {
      peer.endpoint = this.#table.readEndpoint(peer.slot);
      peer.endpointSequence = sequence;
    }
    return peer.endpoint;
  }

  #drop(peer: PeerState | undefined, reason: DropReason): void {
    (peer?.drops ?? this.#deviceDrops)[reason]++;
    if (this.#events.length >= MAX_PENDING_EVENTS) return;
    this.#events.push(
      peer === undefined ? { type: 'drop', reason } : { type: 'drop', peer: peer.name, reason },
    );
  }

  #peer(publicKey: Uint8Array): PeerState {
    checkKeyLength(publicKey, 'peer public key');
    const name = encodeKey(publicKey);
    const peer = this.#peersByName.get(name);
    if (peer === undefined) throw new Error(`unknown peer ${name}`);
    return peer;
  }

  #random32(): number {
    const bytes = this.#randomBytes(4);
    return (bytes[0]! | (bytes[1]! << 8) | (bytes[2]! << 16) | (bytes[3]! << 24)) >>> 0;
  }

  #jitter(): number {
    const bytes = this.#randomBytes(2);
    return ((bytes[0]! << 8) | bytes[1]!) % (REKEY_TIMEOUT_JITTER_MAX + 1);
  }
}

const EMPTY = new Uint8Array(0);

/**
 * Throws what addPeer and updatePeer would refuse in `update`'s endpoint
 * and keepalive, so a caller changing many peers can check them all first.
 */
export function checkPeerUpdate(peer: string, update: Omit<PeerUpdate, 'publicKey'>): void {
  if (update.endpoint !== undefined && !isValidEndpoint(update.endpoint)) {
    throw new Error(`peer ${peer}: endpoint must be an IP address and a port 0-65535`);
  }
  const keepalive = update.persistentKeepaliveSeconds ?? 0;
  if (!Number.isInteger(keepalive) || keepalive < 0 || keepalive > 65535) {
    throw new RangeError(`peer ${peer}: persistentKeepaliveSeconds must be an integer 0-65535`);
  }
}

/** Drop events beyond this many unpolled events are only counted. */
const MAX_PENDING_EVENTS = 4096;

const TRANSPORT_DROP_REASONS: Record<number, DropReason> = {
  [TRANSPORT_NO_SESSION]: 'unknown-receiver',
  [TRANSPORT_EXPIRED]: 'expired-keypair',
  [TRANSPORT_UNKNOWN_RECEIVER]: 'unknown-receiver',
  [TRANSPORT_DECRYPT_FAILED]: 'decrypt-failed',
  [TRANSPORT_REPLAY]: 'replay',
};
