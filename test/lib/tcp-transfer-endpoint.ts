/**
 * One end of a checked TCP transfer, run inside a test namespace:
 *
 *   tcp-transfer-endpoint.ts receive HOST PORT   accepts one connection, reads to its end
 *   tcp-transfer-endpoint.ts send HOST PORT BYTES  connects and sends BYTES random bytes
 *
 * The receiver prints `listening` once it accepts connections; each side
 * prints one JSON line `{"bytes":N,"sha256":"…"}` of what it moved, then exits.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createConnection, createServer } from 'node:net';
import type { Socket } from 'node:net';

const CHUNK_BYTES = 64 * 1024;

function report(bytes: number, sha256: string): void {
  process.stdout.write(`${JSON.stringify({ bytes, sha256 })}\n`);
}

async function receive(host: string, port: number): Promise<void> {
  const server = createServer();
  server.listen(port, host);
  await once(server, 'listening');
  process.stdout.write('listening\n');
  const [socket] = (await once(server, 'connection')) as [Socket];
  server.close();
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of socket as AsyncIterable<Buffer>) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  report(bytes, hash.digest('hex'));
}

async function send(host: string, port: number, total: number): Promise<void> {
  const socket = createConnection({ host, port });
  await once(socket, 'connect');
  const hash = createHash('sha256');
  for (let sent = 0; sent < total; sent += CHUNK_BYTES) {
    const chunk = randomBytes(Math.min(CHUNK_BYTES, total - sent));
    hash.update(chunk);
    if (!socket.write(chunk)) await once(socket, 'drain');
  }
  socket.end();
  await once(socket, 'close');
  report(total, hash.digest('hex'));
}

const [role, host, port, bytes] = process.argv.slice(2);
if (host === undefined || port === undefined) {
  throw new Error('usage: tcp-transfer-endpoint.ts receive HOST PORT | send HOST PORT BYTES');
}
if (role === 'receive') await receive(host, Number(port));
else if (role === 'send' && bytes !== undefined) await send(host, Number(port), Number(bytes));
else throw new Error(`unknown role ${role}`);
