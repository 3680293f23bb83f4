/**
 * The control thread's WireGuard work for the engine: peers, handshakes and
 * keypair rotation over the shared transport memory that data paths use.
 *
 * A deliberately small stand-in until packages/wireguard's WireGuardDevice
 * lands: Noise IKpsk2 initiation/response with MAC1, key installation and
 * rotation, handshakes started on the workers' SIGNAL_HANDSHAKE_NEEDED
 * (at most one per REKEY_TIMEOUT). No cookies under load, no keepalive or
 * rekey timers, no handshake retransmission beyond the next signal.
 */
import { randomBytes, randomInt } from 'node:crypto';

import { DatagramBatch, formatEndpoint } from '@gatehouse/udp';
import type { DatagramSocket, Endpoint } from '@gatehouse/udp';

// TODO(wireguard): import from '@gatehouse/wireguard' once its index.ts exports these.
import { REKEY_TIMEOUT } from '../../wireguard/src/constants.ts';
import { CookieChecker, CookieGenerator } from '../../wireguard/src/cookie.ts';
import { generatePrivateKey } from '../../wireguard/src/crypto/primitives.ts';
import type { CryptoProvider } from '../../wireguard/src/crypto/provider.ts';
import { NoiseHandshake, wipeInitiatorState } from '../../wireguard/src/handshake.ts';
import type { InitiatorState } from '../../wireguard/src/handshake.ts';
import { KeypairTable } from '../../wireguard/src/keypair-table.ts';
import type { KeyPair } from '../../wireguard/src/keys.ts';
import { readInitiation, readResponse } from '../../wireguard/src/messages.ts';
import { TransportPath } from '../../wireguard/src/transport.ts';
import {
  NO_SLOT,
  peerBase,
  readEndpointWords,
  SIGNAL_HANDSHAKE_NEEDED,
  SIGNAL_NEXT_KEYPAIR_CONFIRMED,
} from '../../wireguard/src/worker-contract.ts';
import type { SharedTransportMemory } from '../../wireguard/src/worker-contract.ts';

export interface ControlPeerConfig {
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  endpoint?: Endpoint;
}

interface PeerState {
  slot: number;
  publicKey: Uint8Array;
  presharedKey: Uint8Array;
  cookies: CookieGenerator;
  pending: { state: InitiatorState; keypairSlot: number } | undefined;
  lastInitiationMs: number;
  lastHandshakeMs: number | undefined;
}

export class HandshakeControl {
  readonly keypairs: KeypairTable;
  readonly #noise: NoiseHandshake;
  readonly #checker: CookieChecker;
  readonly #udp: DatagramSocket;
  readonly #transport: TransportPath;
  readonly #peers = new Map<number, PeerState>();
  readonly #out = new DatagramBatch(1, 256);
  readonly #keepalive = new Uint8Array(0);

  constructor(
    local: KeyPair,
    crypto: CryptoProvider,
    transport: SharedTransportMemory,
    udp: DatagramSocket,
  ) {
    this.keypairs = new KeypairTable(transport);
    this.#noise = new NoiseHandshake(local, crypto);
    this.#checker = new CookieChecker(
      local.publicKey,
      (length) => new Uint8Array(randomBytes(length)),
    );
    this.#udp = udp;
    this.#transport = new TransportPath(transport, crypto);
  }

  addPeer(config: ControlPeerConfig): number {
    const slot = this.keypairs.allocatePeer();
    if (slot === undefined) throw new Error('no free peer slot');
    this.#peers.set(slot, {
      slot,
      publicKey: config.publicKey,
      presharedKey: config.presharedKey ?? new Uint8Array(32),
      cookies: new CookieGenerator(config.publicKey),
      pending: undefined,
      lastInitiationMs: -Infinity,
      lastHandshakeMs: undefined,
    });
    if (config.endpoint !== undefined)
      this.keypairs.writeEndpoint(slot, config.endpoint.address, config.endpoint.port);
    return slot;
  }

  lastHandshakeMs(peer: number): number | undefined {
    return this.#peers.get(peer)?.lastHandshakeMs;
  }

  /** Acts on what workers signalled: starts handshakes, rotates confirmed keypairs. */
  service(nowMs: number, wallClockMs: number): void {
    for (const peer of this.#peers.values()) {
      const signals = this.keypairs.takeSignals(peer.slot);
      if ((signals & SIGNAL_NEXT_KEYPAIR_CONFIRMED) !== 0) this.#rotateNext(peer);
      if ((signals & SIGNAL_HANDSHAKE_NEEDED) !== 0) this.initiate(peer.slot, nowMs, wallClockMs);
    }
  }

  initiate(slot: number, nowMs: number, wallClockMs: number): void {
    const peer = this.#peers.get(slot);
    if (peer === undefined || nowMs - peer.lastInitiationMs < REKEY_TIMEOUT) return;
    peer.lastInitiationMs = nowMs;
    if (peer.pending !== undefined) this.#abandon(peer);
    const reserved = this.keypairs.reserveKeypair(slot, () => randomInt(2 ** 32));
    if (reserved === undefined) return;
    const created = this.#noise.createInitiation(
      { publicKey: peer.publicKey, presharedKey: peer.presharedKey },
      reserved.localIndex,
      wallClockMs,
      generatePrivateKey(),
    );
    if (created === undefined) {
      this.keypairs.releaseKeypair(reserved.slot);
      return;
    }
    peer.pending = { state: created.state, keypairSlot: reserved.slot };
    peer.cookies.stampMacs(created.message, nowMs);
    this.#sendTo(slot, created.message);
  }

  /** A handshake message a data path received. */
  handleHandshakeMessage(datagram: Uint8Array, source: Endpoint, nowMs: number): void {
    if (!this.#checker.isMac1Valid(datagram)) return;
    if (datagram[0] === 1 && datagram.length === 148)
      this.#handleInitiation(datagram, source, nowMs);
    else if (datagram[0] === 2 && datagram.length === 92)
      this.#handleResponse(datagram, source, nowMs);
  }

  #handleInitiation(message: Uint8Array, source: Endpoint, nowMs: number): void {
    const consumed = this.#noise.consumeInitiation(message);
    if (consumed === undefined) return;
    const peer = [...this.#peers.values()].find((candidate) =>
      equalBytes(candidate.publicKey, consumed.remoteStatic),
    );
    if (peer === undefined) return;
    const reserved = this.keypairs.reserveKeypair(peer.slot, () => randomInt(2 ** 32));
    if (reserved === undefined) return;
    const response = this.#noise.createResponse(
      consumed,
      peer.presharedKey,
      reserved.localIndex,
      generatePrivateKey(),
    );
    if (response === undefined) {
      this.keypairs.releaseKeypair(reserved.slot);
      return;
    }
    this.keypairs.installKeys(
      reserved.slot,
      response.keys,
      readInitiation(message).senderIndex,
      false,
      nowMs,
    );
    const pointers = this.keypairs.pointers(peer.slot);
    if (pointers.next !== NO_SLOT) this.keypairs.releaseKeypair(pointers.next);
    this.keypairs.publish(peer.slot, { ...pointers, next: reserved.slot });
    this.keypairs.writeEndpoint(peer.slot, source.address, source.port);
    this.keypairs.noteAuthenticatedReceived(peer.slot, nowMs);
    peer.lastHandshakeMs = nowMs;
    peer.cookies.stampMacs(response.message, nowMs);
    this.#sendTo(peer.slot, response.message);
  }

  #handleResponse(message: Uint8Array, source: Endpoint, nowMs: number): void {
    const fields = readResponse(message);
    const peer = [...this.#peers.values()].find(
      (candidate) =>
        candidate.pending !== undefined &&
        candidate.pending.state.localIndex >>> 0 === fields.receiverIndex >>> 0,
    );
    if (peer?.pending === undefined) return;
    const keys = this.#noise.consumeResponse(
      peer.pending.state,
      { publicKey: peer.publicKey, presharedKey: peer.presharedKey },
      message,
    );
    if (keys === undefined) return;
    const slot = peer.pending.keypairSlot;
    wipeInitiatorState(peer.pending.state);
    peer.pending = undefined;
    this.keypairs.installKeys(slot, keys, fields.senderIndex, true, nowMs);
    const { current, previous, next } = this.keypairs.pointers(peer.slot);
    if (previous !== NO_SLOT) this.keypairs.releaseKeypair(previous);
    if (next !== NO_SLOT) this.keypairs.releaseKeypair(next);
    this.keypairs.publish(peer.slot, { current: slot, previous: current, next: NO_SLOT });
    this.keypairs.writeEndpoint(peer.slot, source.address, source.port);
    this.keypairs.noteAuthenticatedReceived(peer.slot, nowMs);
    peer.lastHandshakeMs = nowMs;
    // Confirms the keypair to the responder when no held packet does.
    this.#sendSealed(peer.slot, this.#keepalive, nowMs);
  }

  #rotateNext(peer: PeerState): void {
    const { current, previous, next } = this.keypairs.pointers(peer.slot);
    if (next === NO_SLOT) return;
    if (previous !== NO_SLOT) this.keypairs.releaseKeypair(previous);
    this.keypairs.publish(peer.slot, { current: next, previous: current, next: NO_SLOT });
  }

  #abandon(peer: PeerState): void {
    if (peer.pending === undefined) return;
    wipeInitiatorState(peer.pending.state);
    this.keypairs.releaseKeypair(peer.pending.keypairSlot);
    peer.pending = undefined;
  }

  #sendSealed(peer: number, packet: Uint8Array, nowMs: number): void {
    const out = this.#out;
    const sealed = this.#transport.seal(peer, packet, 0, packet.length, out.data, 0, nowMs);
    if (sealed < 0) return;
    this.#sendSlot(peer, sealed);
  }

  #sendTo(peer: number, message: Uint8Array): void {
    this.#out.data.set(message, 0);
    this.#sendSlot(peer, message.length);
    this.keypairs.noteAuthenticatedSent(peer, performance.now());
  }

  #sendSlot(peer: number, length: number): void {
    const address = new Uint8Array(16);
    const endpoint = this.#endpointOf(peer, address);
    if (endpoint === undefined) return;
    this.#out.setEndpoint(0, endpoint);
    this.#out.lengths[0] = length;
    this.#out.tos[0] = 0;
    this.#udp.sendBatch(this.#out, 1);
  }

  #endpointOf(peer: number, address: Uint8Array): Endpoint | undefined {
    const { buffer, keypairSlots } = this.keypairs.memory;
    const read = readEndpointWords(new Int32Array(buffer), peerBase(keypairSlots, peer), address);
    if (read === undefined) return undefined;
    return {
      family: read.addressLength === 4 ? 4 : 6,
      address: address.slice(0, read.addressLength),
      port: read.port,
    };
  }

  describe(peer: number): string {
    const address = new Uint8Array(16);
    const endpoint = this.#endpointOf(peer, address);
    return endpoint === undefined ? 'no endpoint' : formatEndpoint(endpoint);
  }

  destroy(): void {
    for (const peer of this.#peers.values()) this.#abandon(peer);
    this.#transport.destroy();
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let index = 0; index < a.length; index++) difference |= a[index]! ^ b[index]!;
  return difference === 0;
}
