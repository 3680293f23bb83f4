/**
 * Gatehouse's WireGuard as an interop peer: a WireGuardDevice over a plain
 * UDP socket, run inside a namespace by the interop orchestrator
 * (`ip netns exec NS node test/interop/gatehouse-peer.ts`).
 *
 * It speaks JSON lines: commands on stdin, events on stdout (protocol in
 * peer-protocol.ts). The first command must be `configure`. It answers ICMP
 * echo requests that reach its tunnel address, so a kernel ping from the
 * other side works without a TUN device. It exits when stdin closes.
 */
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';
import { formatAddress, parseAddress } from '@gatehouse/addresses';
import { selectCryptoProvider, WireGuardDevice } from '@gatehouse/wireguard';
import type { DeviceEvent, Instant } from '@gatehouse/wireguard';
import {
  buildIcmpEcho,
  echoReplyFor,
  echoReplyMismatch,
  NotAnIcmpEcho,
  parseIcmpEcho,
} from '../lib/icmp-echo.ts';
import type { IcmpEcho } from '../lib/icmp-echo.ts';
import type { PeerCommand, PeerConfiguration, PeerEvent } from './peer-protocol.ts';

const ECHO_PAYLOAD_LENGTH = 56;
/** wg-quick's default MTU, as the other side's interface has it. */
const TUNNEL_MTU = 1420;

function now(): Instant {
  return { monotonicMs: performance.now(), wallClockMs: Date.now() };
}

function emit(event: PeerEvent): void {
  process.stdout.write(
    `${JSON.stringify(event, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value))}\n`,
  );
}

function decodeKey(base64: string): Uint8Array {
  return new Uint8Array(Buffer.from(base64, 'base64'));
}

interface OutstandingEcho {
  request: IcmpEcho;
  batch: EchoBatch;
}

interface EchoBatch {
  requestId: number;
  sent: number;
  received: number;
  failures: string[];
  expected: number;
  finish: () => void;
}

class Peer {
  readonly #device: WireGuardDevice;
  readonly #peerKey: Uint8Array;
  readonly #tunnelAddress: string;
  readonly #socket = createSocket('udp4');
  readonly #echoIdentifier = process.pid & 0xffff;
  readonly #outstanding = new Map<number, OutstandingEcho>();
  #nextSequence = 1;
  #timer: NodeJS.Timeout | undefined;
  #handshakes = 0;
  #echoRequestsAnswered = 0;
  #drops = new Map<string, number>();

  constructor(device: WireGuardDevice, configuration: PeerConfiguration) {
    this.#device = device;
    this.#peerKey = decodeKey(configuration.peer.publicKey);
    this.#tunnelAddress = configuration.tunnelAddress;
    device.addPeer({
      publicKey: this.#peerKey,
      ...(configuration.peer.presharedKey === undefined
        ? {}
        : { presharedKey: decodeKey(configuration.peer.presharedKey) }),
      ...(configuration.peer.endpoint === undefined
        ? {}
        : {
            endpoint: {
              ...parseAddress(configuration.peer.endpoint.address),
              port: configuration.peer.endpoint.port,
            },
          }),
    });
  }

  async listen(port: number): Promise<number> {
    this.#socket.on('message', (message, remote) => {
      this.#device.handleDatagram(
        new Uint8Array(message.buffer, message.byteOffset, message.byteLength),
        { ...parseAddress(remote.address), port: remote.port },
        now(),
      );
      this.#drive();
    });
    this.#socket.on('error', (error) => {
      emit({ event: 'error', message: `udp socket: ${error.message}` });
    });
    await new Promise<void>((resolve) => this.#socket.bind(port, resolve));
    return this.#socket.address().port;
  }

  close(): void {
    clearTimeout(this.#timer);
    this.#socket.close();
  }

  /** Flushes everything the device has to send or say, then re-arms its timer. */
  #drive(): void {
    for (;;) {
      let progressed = false;
      for (
        let transmit = this.#device.pollTransmit();
        transmit;
        transmit = this.#device.pollTransmit()
      ) {
        progressed = true;
        // Copied: the device may reuse its buffer before the asynchronous send reads it.
        this.#socket.send(
          Buffer.from(transmit.datagram),
          transmit.to.port,
          formatAddress(transmit.to.family, transmit.to.address),
        );
      }
      for (let event = this.#device.pollEvent(); event; event = this.#device.pollEvent()) {
        progressed = true;
        this.#handleDeviceEvent(event);
      }
      if (!progressed) break;
    }
    clearTimeout(this.#timer);
    const deadline = this.#device.pollTimeout();
    if (deadline !== undefined) {
      // At least 1 ms, so a deadline the device keeps in the past cannot spin the loop.
      const delay = Math.max(1, Math.ceil(deadline - performance.now()));
      this.#timer = setTimeout(() => {
        this.#device.handleTimeout(now());
        this.#drive();
      }, delay);
    }
  }

  #handleDeviceEvent(event: DeviceEvent): void {
    switch (event.type) {
      case 'handshake-complete':
        this.#handshakes += 1;
        emit({
          event: 'handshake-complete',
          initiator: event.initiator,
          handshakes: this.#handshakes,
        });
        return;
      case 'handshake-gave-up':
        emit({ event: 'handshake-gave-up', droppedPackets: event.droppedPackets });
        return;
      case 'drop':
        this.#drops.set(event.reason, (this.#drops.get(event.reason) ?? 0) + 1);
        emit({ event: 'drop', reason: event.reason });
        return;
      case 'packet':
        this.#handleTunnelPacket(event.packet);
        return;
    }
  }

  #handleTunnelPacket(packet: Uint8Array): void {
    let echo: IcmpEcho;
    try {
      echo = parseIcmpEcho(packet);
    } catch (error) {
      if (!(error instanceof NotAnIcmpEcho)) throw error;
      emit({
        event: 'unexpected-packet',
        reason: error.message,
        hex: Buffer.from(packet.subarray(0, 64)).toString('hex'),
      });
      return;
    }
    if (echo.kind === 'request' && echo.destination === this.#tunnelAddress) {
      this.#device.sendPacket(this.#peerKey, buildIcmpEcho(echoReplyFor(echo)), now());
      this.#echoRequestsAnswered += 1;
      emit({ event: 'echo-request-answered', source: echo.source, sequence: echo.sequence });
      return;
    }
    const outstanding =
      echo.identifier === this.#echoIdentifier ? this.#outstanding.get(echo.sequence) : undefined;
    if (echo.kind !== 'reply' || outstanding === undefined) {
      emit({
        event: 'unexpected-packet',
        reason: `${echo.kind} ${echo.source} -> ${echo.destination} id ${echo.identifier} seq ${echo.sequence}`,
        hex: Buffer.from(packet.subarray(0, 64)).toString('hex'),
      });
      return;
    }
    this.#outstanding.delete(echo.sequence);
    const mismatch = echoReplyMismatch(outstanding.request, echo);
    if (mismatch === undefined) outstanding.batch.received += 1;
    else outstanding.batch.failures.push(`seq ${echo.sequence}: ${mismatch}`);
    if (
      outstanding.batch.received + outstanding.batch.failures.length ===
      outstanding.batch.expected
    ) {
      outstanding.batch.finish();
    }
  }

  /** Sends `count` echo requests `intervalMs` apart; reports when all are answered or `timeoutMs` passes. */
  sendEchoes(
    requestId: number,
    destination: string,
    count: number,
    intervalMs: number,
    timeoutMs: number,
  ): void {
    let finished = false;
    const sequences: number[] = [];
    const batch: EchoBatch = {
      requestId,
      sent: 0,
      received: 0,
      failures: [],
      expected: count,
      finish: () => {
        if (finished) return;
        finished = true;
        clearInterval(sender);
        clearTimeout(giveUp);
        for (const sequence of sequences) {
          if (this.#outstanding.delete(sequence)) batch.failures.push(`seq ${sequence}: no reply`);
        }
        emit({
          event: 'echo-done',
          requestId,
          sent: batch.sent,
          received: batch.received,
          failures: batch.failures,
        });
      },
    };
    const sendOne = (): void => {
      if (batch.sent === count) {
        clearInterval(sender);
        return;
      }
      const sequence = this.#nextSequence++ & 0xffff;
      const payload = new Uint8Array(ECHO_PAYLOAD_LENGTH);
      crypto.getRandomValues(payload);
      const request: IcmpEcho = {
        kind: 'request',
        source: this.#tunnelAddress,
        destination,
        identifier: this.#echoIdentifier,
        sequence,
        payload,
      };
      sequences.push(sequence);
      this.#outstanding.set(sequence, { request, batch });
      batch.sent += 1;
      this.#device.sendPacket(this.#peerKey, buildIcmpEcho(request), now());
      this.#drive();
    };
    const giveUp = setTimeout(batch.finish, timeoutMs);
    const sender = setInterval(sendOne, intervalMs);
    sendOne();
  }

  initiateHandshake(): void {
    this.#device.initiateHandshake(this.#peerKey, now());
    this.#drive();
  }

  stats(): Record<string, unknown> {
    return {
      handshakes: this.#handshakes,
      echoRequestsAnswered: this.#echoRequestsAnswered,
      drops: Object.fromEntries(this.#drops),
      device: this.#device.peerStats(this.#peerKey),
    };
  }
}

async function main(): Promise<void> {
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  let peer: Peer | undefined;
  for await (const line of lines) {
    if (line.trim() === '') continue;
    const command = JSON.parse(line) as PeerCommand;
    switch (command.cmd) {
      case 'configure': {
        const { provider, reason } = await selectCryptoProvider();
        const device = new WireGuardDevice({
          privateKey: decodeKey(command.configuration.privateKey),
          crypto: provider,
          mtu: TUNNEL_MTU,
        });
        peer = new Peer(device, command.configuration);
        const port = await peer.listen(command.configuration.listenPort);
        emit({ event: 'ready', provider: provider.name, reason, port });
        break;
      }
      case 'echo':
        requirePeer(peer).sendEchoes(
          command.requestId,
          command.destination,
          command.count,
          command.intervalMs,
          command.timeoutMs,
        );
        break;
      case 'rekey':
        requirePeer(peer).initiateHandshake();
        emit({ event: 'rekey-initiated', requestId: command.requestId });
        break;
      case 'stats':
        emit({ event: 'stats', requestId: command.requestId, stats: requirePeer(peer).stats() });
        break;
      case 'exit':
        peer?.close();
        process.exit(0);
    }
  }
  peer?.close();
  process.exit(0);
}

function requirePeer(peer: Peer | undefined): Peer {
  if (peer === undefined) throw new Error('configure must come first');
  return peer;
}

main().catch((error: unknown) => {
  console.error(error);
  emit({ event: 'error', message: error instanceof Error ? error.message : String(error) });
  process.exit(1);
});
