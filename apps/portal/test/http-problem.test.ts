import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { sendProblem, writeProblemToSocket } from '../src/http/problem.ts';

async function listen(server: http.Server | net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

void test('sendProblem: RFC 9457 JSON with the code, as application/problem+json', async (t) => {
  const server = http.createServer((_req, res) =>
    sendProblem(res, 429, 'rate_limited', 'Wait a little.', { 'Retry-After': '30' }),
  );
  const port = await listen(server);
  t.after(() => server.close());
  const response = await fetch(`http://127.0.0.1:${port}/`);
  assert.equal(response.status, 429);
  assert.equal(response.headers.get('content-type'), 'application/problem+json');
  assert.equal(response.headers.get('retry-after'), '30');
  assert.equal(response.headers.get('cache-control'), 'no-store');
  assert.deepEqual(await response.json(), {
    type: 'about:blank',
    title: 'Too Many Requests',
    status: 429,
    code: 'rate_limited',
    detail: 'Wait a little.',
  });
});

void test('writeProblemToSocket: a whole HTTP response on a raw socket (a refused upgrade)', async (t) => {
  const server = http.createServer();
  server.on('upgrade', (_req, socket) =>
    writeProblemToSocket(socket, 401, 'invalid_token', 'No token.'),
  );
  const port = await listen(server);
  t.after(() => server.close());
  const raw = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () =>
      socket.write(
        'GET /client/websocket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
          'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      ),
    );
    const chunks: Buffer[] = [];
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(chunks).toString()));
    socket.on('error', reject);
  });
  const [head, body] = raw.split('\r\n\r\n') as [string, string];
  assert.match(head, /^HTTP\/1\.1 401 Unauthorized\r\n/);
  assert.match(head, /\r\nContent-Type: application\/problem\+json\r\n/);
  assert.match(head, new RegExp(`\\r\\nContent-Length: ${Buffer.byteLength(body)}(\\r\\n|$)`));
  assert.equal(JSON.parse(body).code, 'invalid_token');
  assert.equal(JSON.parse(body).status, 401);
});
