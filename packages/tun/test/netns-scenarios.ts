/**
 * Test-only: system scenarios run by netns-harness.ts inside a network
 * namespace of their own (never run it elsewhere). Each opens a real TUN
 * device, puts 10.77.0.1/24 on it (so 10.77.0.2 is routed into it), drives
 * traffic with kernel UDP sockets and prints one JSON line of results.
 *
 * Reads: kernel sockets at 10.77.0.1 send to 10.77.0.2 → the device reads.
 * Writes: the consumer reflects each packet read (swapping addresses and
 * ports, which keeps every checksum valid) and sends it; the kernel then
 * delivers it to the socket that sent it only if its checksums are valid.
 * Payload: flow (u16), sequence (u32).
 */
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { setImmediate as yieldToEventLoop, setTimeout as sleep } from 'node:timers/promises';
import { PacketBatch, openTun } from '../src/index.ts';
import type { TunDevice, TunOptions } from '../src/index.ts';
import { fixIpv4HeaderChecksum, fixTransportChecksum } from '../src/packet/index.ts';

const LOCAL = '10.77.0.1';
const PEER = '10.77.0.2';
const PEER_PORT = 9000;
const [scenario = '', ...args] = process.argv.slice(2);
const interfaceName = `ght${process.pid % 100000}`;
/**
 * Unanswered datagrams per flow. An echo of 1228 bytes takes 2304 bytes of
 * a UDP receive buffer (212992 by default, 92 echoes): the kernel drops
 * echoes beyond that while the event loop is busy reading the device.
 */
const FLOW_WINDOW = 16;
/** No progress for this long on a loaded machine means a hang: stop and report the state. */
const STALL_MS = 5000;

interface Flow {
  readonly socket: dgram.Socket;
  sent: number;
  sendErrors: number;
  echoed: number;
  lastEchoed: number;
  echoInversions: number;
}

async function open(options: Omit<TunOptions, 'name'>): Promise<TunDevice> {
  const device = await openTun({ name: interfaceName, ...options });
  execFileSync('ip', ['addr', 'add', `${LOCAL}/24`, 'dev', device.name]);
  execFileSync('ip', ['link', 'set', device.name, 'up']);
  return device;
}

async function openFlows(count: number, onEcho: () => void = () => undefined): Promise<Flow[]> {
  const flows: Flow[] = [];
  for (let i = 0; i < count; i++) {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, LOCAL, resolve));
    const flow: Flow = {
      socket,
      sent: 0,
      sendErrors: 0,
      echoed: 0,
      lastEchoed: -1,
      echoInversions: 0,
    };
    socket.on('message', (message) => {
      const sequence = message.readUInt32BE(2);
      if (sequence <= flow.lastEchoed) flow.echoInversions++;
      flow.lastEchoed = sequence;
      flow.echoed++;
      onEcho();
    });
    flows.push(flow);
  }
  return flows;
}

function sendDatagram(flow: Flow, index: number, payloadLength: number): Promise<void> {
  const payload = Buffer.alloc(payloadLength);
  payload.writeUInt16BE(index, 0);
  payload.writeUInt32BE(flow.sent++, 2);
  return new Promise((resolve) =>
    flow.socket.send(payload, PEER_PORT, PEER, (error) => {
      if (error) flow.sendErrors++;
      resolve();
    }),
  );
}

/** Swaps source and destination addresses and ports of an IPv4 UDP packet, in place. */
function reflect(packet: Uint8Array, at: number): void {
  const headerLength = (packet[at]! & 0x0f) * 4;
  for (let i = 0; i < 4; i++) swap(packet, at + 12 + i, at + 16 + i);
  for (let i = 0; i < 2; i++) swap(packet, at + headerLength + i, at + headerLength + 2 + i);
}

function swap(bytes: Uint8Array, a: number, b: number): void {
  const t = bytes[a]!;
  bytes[a] = bytes[b]!;
  bytes[b] = t;
}

function isUdpFromLocal(packet: Uint8Array, at: number, length: number): boolean {
  return (
    length >= 34 &&
    packet[at]! >> 4 === 4 &&
    packet[at + 9] === 17 &&
    packet[at + 16] === 10 &&
    packet[at + 17] === 77 &&
    packet[at + 19] === 2
  );
}

/**
 * Reads until stop() or close; for each UDP packet from our flows, records
 * per-flow order and queue, and echoes it back when `echo`. It waits on
 * readable() alone, so a lost wake-up shows as a stall.
 */
class Reader {
  read = 0;
  readInversions = 0;
  readonly lastRead = new Map<number, number>();
  readonly queuesOfFlow = new Map<number, Set<number>>();
  readonly batch: PacketBatch;
  private readonly device: TunDevice;
  private readonly echo: boolean;
  private stopping = false;
  private readonly stopped: Promise<void>;
  private resolveStopped: () => void = () => undefined;
  constructor(device: TunDevice, echo: boolean, batchSize?: number) {
    this.device = device;
    this.echo = echo;
    this.batch = new PacketBatch(batchSize);
    this.stopped = new Promise((resolve) => (this.resolveStopped = resolve));
  }

  stop(): void {
    this.stopping = true;
    this.resolveStopped();
  }

  async run(pauseMs = 0): Promise<void> {
    const { device, batch } = this;
    while (!this.stopping && !device.closed) {
      const n = device.receive(batch);
      if (n === 0) {
        await Promise.race([device.readable(), this.stopped]);
        continue;
      }
      for (let i = 0; i < n; i++) {
        const buffer = batch.buffers[i]!;
        const at = batch.offsets[i]!;
        const length = batch.lengths[i]!;
        if (!isUdpFromLocal(buffer, at, length)) continue;
        const payload = at + (buffer[at]! & 0x0f) * 4 + 8;
        const flow = (buffer[payload]! << 8) | buffer[payload + 1]!;
        const sequence =
          ((buffer[payload + 2]! << 24) |
            (buffer[payload + 3]! << 16) |
            (buffer[payload + 4]! << 8) |
            buffer[payload + 5]!) >>>
          0;
        if (sequence <= (this.lastRead.get(flow) ?? -1)) this.readInversions++;
        this.lastRead.set(flow, sequence);
        let queues = this.queuesOfFlow.get(flow);
        if (!queues) this.queuesOfFlow.set(flow, (queues = new Set()));
        queues.add(batch.queues[i]!);
        this.read++;
        if (this.echo && !device.closed) {
          reflect(buffer, at);
          while (!this.stopping && !device.closed && !device.send(buffer, at, length)) {
            await Promise.race([device.writable(), this.stopped]);
          }
        }
      }
      if (pauseMs > 0) await sleep(pauseMs);
    }
    device.release(batch);
  }

  flowsOnSeveralQueues(): number {
    return [...this.queuesOfFlow.values()].filter((queues) => queues.size > 1).length;
  }
}

function interfaceCounter(name: string, counter: string): number {
  return Number(readFileSync(`/sys/class/net/${name}/statistics/${counter}`, 'utf8'));
}

function udpCounter(field: string): number {
  return snmpCounters('Udp')[field] ?? NaN;
}

/** The namespace's counters of one /proc/net/snmp protocol line pair, e.g. 'Udp'. */
function snmpCounters(protocol: string): Record<string, number> {
  const lines = readFileSync('/proc/net/snmp', 'utf8')
    .split('\n')
    .filter((line) => line.startsWith(`${protocol}:`));
  const names = lines[0]!.split(/\s+/).slice(1);
  const values = lines[1]!.split(/\s+/).slice(1);
  return Object.fromEntries(names.map((name, i) => [name, Number(values[i])]));
}

/** Where packets can go missing outside the device's own counters. */
function kernelCounters(name: string) {
  const udp = snmpCounters('Udp');
  return {
    interface: Object.fromEntries(
      ['tx_packets', 'tx_dropped', 'rx_packets', 'rx_dropped', 'rx_errors'].map((counter) => [
        counter,
        interfaceCounter(name, counter),
      ]),
    ),
    udp: Object.fromEntries(
      ['InDatagrams', 'OutDatagrams', 'InErrors', 'RcvbufErrors', 'SndbufErrors', 'NoPorts'].map(
        (field) => [field, udp[field]],
      ),
    ),
  };
}

/**
 * Calls `onStall` once when `progress()` has not changed for STALL_MS, so a
 * hung scenario ends within seconds with its state instead of at a deadline.
 * Returns a function that stops watching.
 */
function watchForStall(progress: () => number, onStall: () => void): () => void {
  let last = progress();
  let since = Date.now();
  const timer = setInterval(() => {
    const now = progress();
    if (now !== last) {
      last = now;
      since = Date.now();
    } else if (Date.now() - since >= STALL_MS) {
      clearInterval(timer);
      onStall();
    }
  }, 100);
  return () => clearInterval(timer);
}

/**
 * Flows send sequence-numbered datagrams, each flow with at most
 * FLOW_WINDOW unanswered; the device reads and echoes each one. A stall
 * ends the run with `stalled` describing where every packet is.
 */
async function echoScenario(
  options: Omit<TunOptions, 'name'>,
  flowCount: number,
  perFlow: number,
  payloadLength: number,
) {
  const device = await open(options);
  const reader = new Reader(device, true);
  const total = flowCount * perFlow;
  let echoedTotal = 0;
  const flows = await openFlows(flowCount, () => {
    if (++echoedTotal === total) reader.stop();
  });
  const echoed = () => echoedTotal;
  let stalled: unknown;
  const stopWatching = watchForStall(
    () => reader.read + echoed(),
    () => {
      stalled = {
        forMs: STALL_MS,
        read: reader.read,
        echoed: echoed(),
        flows: flows.map((flow) => ({ sent: flow.sent, echoed: flow.echoed })),
        device: device.stats(),
        kernel: kernelCounters(device.name),
      };
      reader.stop();
    },
  );
  const started = performance.now();
  const reading = reader.run();
  const slowestEchoed = () => Math.min(...flows.map((flow) => flow.echoed));
  for (let round = 0; round < perFlow && stalled === undefined; round++) {
    while (round - slowestEchoed() > FLOW_WINDOW && stalled === undefined) await sleep(1);
    await Promise.all(flows.map((flow, index) => sendDatagram(flow, index, payloadLength)));
  }
  await reading;
  stopWatching();
  const seconds = (performance.now() - started) / 1000;
  const result = {
    stalled,
    offloads: device.offloads,
    sent: total,
    sendErrors: flows.reduce((sum, flow) => sum + flow.sendErrors, 0),
    read: reader.read,
    readInversions: reader.readInversions,
    flowsOnSeveralQueues: reader.flowsOnSeveralQueues(),
    queuesUsed: new Set([...reader.queuesOfFlow.values()].flatMap((queues) => [...queues])).size,
    echoed: echoed(),
    echoInversions: flows.reduce((sum, flow) => sum + flow.echoInversions, 0),
    checksumErrors: udpCounter('InCsumErrors'),
    receiveBufferErrors: udpCounter('RcvbufErrors'),
    packetsPerSecond: Math.round((2 * total) / seconds),
    stats: device.stats(),
    kernel: kernelCounters(device.name),
  };
  for (const flow of flows) flow.socket.close();
  await device.close();
  return result;
}

/**
 * The consumer dawdles; every datagram is read or counted as dropped by the
 * kernel. With offloads the ring has the fewest slots that hold a split
 * super-packet.
 */
async function slowReaderScenario(offload: boolean) {
  const device = await open({
    queues: 1,
    ringSlots: offload ? 64 : 16,
    txQueueLength: 64,
    offload,
  });
  const [flow] = await openFlows(1);
  const reader = new Reader(device, false, 8);
  const total = 3000;
  let sending = true;
  let lastRead = -1;
  let quietSince = Date.now();
  const quiet = setInterval(() => {
    if (reader.read !== lastRead) {
      lastRead = reader.read;
      quietSince = Date.now();
    } else if (!sending && Date.now() - quietSince > 300) {
      reader.stop();
    }
  }, 20);
  const reading = reader.run(2);
  for (let i = 0; i < total; i += 100) {
    await Promise.all(Array.from({ length: 100 }, () => sendDatagram(flow!, 0, 200)));
    await yieldToEventLoop();
  }
  sending = false;
  await reading;
  clearInterval(quiet);
  const result = {
    sent: total,
    sendErrors: flow!.sendErrors,
    read: reader.read,
    readInversions: reader.readInversions,
    kernelDropped: interfaceCounter(device.name, 'tx_dropped'),
    stats: device.stats(),
  };
  flow!.socket.close();
  await device.close();
  return result;
}

/** A producer far faster than the device: send() refuses, the producer waits, nothing is lost. */
async function fastWriterScenario() {
  const device = await open({ queues: 2, ringSlots: 16 });
  const receiver = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => receiver.bind(PEER_PORT, LOCAL, resolve));
  let received = 0;
  let inversions = 0;
  let last = -1;
  receiver.on('message', (message) => {
    const sequence = message.readUInt32BE(2);
    if (sequence <= last) inversions++;
    last = sequence;
    received++;
  });
  const rcvbufErrorsBefore = udpCounter('RcvbufErrors');
  const packet = udpPacket(PEER, LOCAL, 40000, PEER_PORT, 200);
  const total = 20000;
  const written = () => device.stats().queues.reduce((sum, queue) => sum + queue.txPackets, 0);
  let stalled: unknown;
  const stopWatching = watchForStall(written, () => {
    stalled = { forMs: STALL_MS, written: written(), device: device.stats() };
    void device.close();
  });
  for (let sequence = 0; sequence < total && !device.closed; sequence++) {
    packet.writeUInt32BE(sequence, 28 + 2);
    packet.writeUInt16BE(0, 26);
    fixTransportChecksum(packet, 0, 20, packet.length - 20, 17);
    while (!device.closed && !device.send(packet, 0, packet.length)) await device.writable();
  }
  while (written() < total && !device.closed) await sleep(5);
  stopWatching();
  const settle = Date.now() + 2000;
  while (
    received + udpCounter('RcvbufErrors') - rcvbufErrorsBefore < total &&
    Date.now() < settle
  ) {
    await sleep(5);
  }
  const result = {
    stalled,
    sent: total,
    written: written(),
    received,
    inversions,
    receiverDropped: udpCounter('RcvbufErrors') - rcvbufErrorsBefore,
    stats: device.stats(),
  };
  receiver.close();
  await device.close();
  return result;
}

function udpPacket(
  source: string,
  destination: string,
  sourcePort: number,
  destinationPort: number,
  payloadLength: number,
): Buffer {
  const packet = Buffer.alloc(28 + payloadLength);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet[8] = 64;
  packet[9] = 17;
  source.split('.').forEach((octet, i) => (packet[12 + i] = Number(octet)));
  destination.split('.').forEach((octet, i) => (packet[16 + i] = Number(octet)));
  fixIpv4HeaderChecksum(packet, 0, 20);
  packet.writeUInt16BE(sourcePort, 20);
  packet.writeUInt16BE(destinationPort, 22);
  packet.writeUInt16BE(8 + payloadLength, 24);
  return packet;
}

/** Traffic in both directions, then close(): how long it takes. */
async function shutdownScenario(queues: number) {
  const device = await open({ queues });
  const flows = await openFlows(8);
  const reader = new Reader(device, true);
  let stop = false;
  const reading = reader.run();
  const sending = (async () => {
    while (!stop) {
      await Promise.all(flows.map((flow, index) => sendDatagram(flow, index, 500)));
      // Sends that complete at once call back on nextTick: let I/O and timers run.
      await yieldToEventLoop();
    }
  })();
  await sleep(500);
  const before = device.stats();
  const started = performance.now();
  await device.close();
  const closeMs = performance.now() - started;
  stop = true;
  await Promise.all([reading, sending]);
  for (const flow of flows) flow.socket.close();
  return {
    closeMs,
    readBeforeClose: before.queues.reduce((sum, queue) => sum + queue.rxPackets, 0),
    writtenBeforeClose: before.queues.reduce((sum, queue) => sum + queue.txPackets, 0),
  };
}

/** A second open of the same name must refuse to join the existing device. */
async function exclusiveScenario() {
  const device = await open({ queues: 2 });
  let error = '';
  try {
    const second = await openTun({ name: device.name, queues: 2 });
    await second.close();
  } catch (e) {
    error = String(e);
  }
  await device.close();
  return { error };
}

const scenarios: Record<string, () => Promise<unknown>> = {
  echo: () =>
    echoScenario(
      { queues: Number(args[0]), offload: args[1] === 'offload' },
      Number(args[2] ?? 16),
      Number(args[3] ?? 100),
      Number(args[4] ?? 100),
    ),
  'slow-reader': () => slowReaderScenario(args[0] === 'offload'),
  'fast-writer': fastWriterScenario,
  shutdown: () => shutdownScenario(Number(args[0] ?? 4)),
  exclusive: exclusiveScenario,
};

const run = scenarios[scenario];
if (run) {
  const result = await run();
  process.stdout.write(`${JSON.stringify(result)}\n`);
  // Pending readiness waits of a closed device must not keep the process alive.
  process.exit(0);
} else {
  console.error(`unknown scenario ${JSON.stringify(scenario)}`);
  process.exit(2);
}
