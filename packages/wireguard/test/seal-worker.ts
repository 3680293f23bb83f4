/**
 * Worker thread for worker-contract.test.ts: seals `count` packets for one
 * peer through the shared keypair and writes the messages into `output`.
 */

import { parentPort, workerData } from 'node:worker_threads';

import { libsodiumWasmProvider } from '../src/crypto/libsodium-wasm.ts';
import { TransportPath, sealedLength } from '../src/transport.ts';
import type { SharedTransportMemory } from '../src/worker-contract.ts';

export interface SealWorkerData {
  memory: SharedTransportMemory;
  peer: number;
  count: number;
  packetLength: number;
  mtu: number;
  nowMs: number;
  output: SharedArrayBuffer;
}

if (parentPort !== null) {
  const data = workerData as SealWorkerData;
  const transport = new TransportPath(data.memory, libsodiumWasmProvider);
  const output = new Uint8Array(data.output);
  const packet = new Uint8Array(data.packetLength);
  packet[0] = 0x45;
  packet[3] = data.packetLength;
  const stride = sealedLength(data.packetLength, data.mtu);
  let sealed = 0;
  for (let i = 0; i < data.count; i++) {
    const written = transport.seal(
      data.peer,
      packet,
      0,
      packet.length,
      output,
      i * stride,
      data.nowMs,
    );
    if (written === stride) sealed++;
  }
  transport.destroy();
  parentPort.postMessage(sealed);
}
