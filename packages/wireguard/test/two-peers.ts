/**
 * Test fixture: two devices wired back to back through an in-memory
 * network, a fake clock and a deterministic random source.
 */

import { libsodiumWasmProvider } from '../src/crypto/libsodium-wasm.ts';
import { WireGuardDevice } from '../src/device.ts';
import type {
  DeviceEvent,
  DeviceOptions,
  Endpoint,
  Instant,
  PeerConfig,
  Transmit,
} from '../src/device.ts';
import { generateKeyPair } from '../src/keys.ts';
import type { KeyPair } from '../src/keys.ts';

/** The tunnel MTU of both sides: wg-quick's default. */
export const TWO_PEERS_MTU = 1420;

export class FakeClock {
  monotonicMs = 5_000_000;
  wallClockMs = 1_700_000_000_000;

  now(): Instant {
    return { monotonicMs: this.monotonicMs, wallClockMs: this.wallClockMs };
  }

  advance(ms: number): Instant {
    this.monotonicMs += ms;
    this.wallClockMs += ms;
    return this.now();
  }
}

/** xorshift32: reproducible bytes for indices, ephemeral keys and jitter. */
export function seededRandomBytes(seed: number): (n: number) => Uint8Array {
  let state = seed >>> 0 || 1;
  return (n) => {
    const bytes = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      state >>>= 0;
      bytes[i] = state & 0xff;
    }
    return bytes;
  };
}

export interface Side {
  device: WireGuardDevice;
  keys: KeyPair;
  endpoint: Endpoint;
  /** Datagrams this side sent, as they left it. */
  sent: Transmit[];
  events: DeviceEvent[];
}

export interface PairOptions {
  alice?: Partial<PeerConfig>;
  bob?: Partial<PeerConfig>;
  aliceDevice?: Partial<DeviceOptions>;
  bobDevice?: Partial<DeviceOptions>;
}

export class TwoPeers {
  readonly clock = new FakeClock();
  readonly alice: Side;
  readonly bob: Side;
  /** Decides, per datagram, whether the network delivers it. */
  deliverIf: (from: Side, transmit: Transmit) => boolean = () => true;

  constructor(options: PairOptions = {}) {
    const presharedKey = new Uint8Array(32).fill(7);
    this.alice = side(
      { family: 4, address: new Uint8Array([192, 0, 2, 1]), port: 51820 },
      { randomBytes: seededRandomBytes(1), ...options.aliceDevice },
    );
    this.bob = side(
      { family: 4, address: new Uint8Array([198, 51, 100, 2]), port: 51821 },
      { randomBytes: seededRandomBytes(2), ...options.bobDevice },
    );
    this.alice.device.addPeer({
      publicKey: this.bob.keys.publicKey,
      presharedKey,
      endpoint: this.bob.endpoint,
      ...options.alice,
    });
    this.bob.device.addPeer({
      publicKey: this.alice.keys.publicKey,
      presharedKey,
      endpoint: this.alice.endpoint,
      ...options.bob,
    });
  }

  other(from: Side): Side {
    return from === this.alice ? this.bob : this.alice;
  }

  /** Moves datagrams both ways until neither side has anything left to send. */
  exchange(): void {
    for (let moved = true; moved;) {
      moved = false;
      for (const from of [this.alice, this.bob]) {
        for (
          let transmit = from.device.pollTransmit();
          transmit;
          transmit = from.device.pollTransmit()
        ) {
          moved = true;
          from.sent.push(transmit);
          if (!this.deliverIf(from, transmit)) continue;
          const to = this.other(from);
          to.device.handleDatagram(transmit.datagram, from.endpoint, this.clock.now());
        }
      }
      this.collectEvents();
    }
  }

  /** Advances the clock to each pending deadline (both sides) up to `ms` from now, exchanging as it goes. */
  runFor(ms: number): void {
    const end = this.clock.monotonicMs + ms;
    for (;;) {
      this.exchange();
      const deadlines = [this.alice.device.pollTimeout(), this.bob.device.pollTimeout()].filter(
        (deadline): deadline is number => deadline !== undefined,
      );
      const next = Math.max(Math.min(...deadlines), this.clock.monotonicMs);
      if (deadlines.length === 0 || next > end) break;
      this.clock.advance(next - this.clock.monotonicMs);
      this.alice.device.handleTimeout(this.clock.now());
      this.bob.device.handleTimeout(this.clock.now());
    }
    this.clock.advance(end - this.clock.monotonicMs);
    this.alice.device.handleTimeout(this.clock.now());
    this.bob.device.handleTimeout(this.clock.now());
    this.exchange();
  }

  send(from: Side, packet: Uint8Array): void {
    from.device.sendPacket(this.other(from).keys.publicKey, packet, this.clock.now());
  }

  handshake(): void {
    this.alice.device.initiateHandshake(this.bob.keys.publicKey, this.clock.now());
    this.exchange();
  }

  collectEvents(): void {
    for (const s of [this.alice, this.bob]) {
      for (let event = s.device.pollEvent(); event; event = s.device.pollEvent())
        s.events.push(event);
    }
  }

  /** Takes the events of one type that `side` emitted so far. */
  take<T extends DeviceEvent['type']>(s: Side, type: T): Extract<DeviceEvent, { type: T }>[] {
    this.collectEvents();
    const taken = s.events.filter((event) => event.type === type);
    s.events = s.events.filter((event) => event.type !== type);
    return taken as Extract<DeviceEvent, { type: T }>[];
  }
}

function side(endpoint: Endpoint, options: Partial<DeviceOptions>): Side {
  const keys = generateKeyPair();
  const device = new WireGuardDevice({
    privateKey: keys.privateKey,
    crypto: libsodiumWasmProvider,
    mtu: TWO_PEERS_MTU,
    ...options,
  });
  return { device, keys, endpoint, sent: [], events: [] };
}

/** A minimal IPv4 packet of `length` bytes whose payload bytes are `fill`. */
export function ipv4Packet(length: number, fill = 0xab): Uint8Array {
  const packet = new Uint8Array(length).fill(fill);
  packet[0] = 0x45;
  packet[1] = 0;
  packet[2] = length >>> 8;
  packet[3] = length & 0xff;
  return packet;
}
