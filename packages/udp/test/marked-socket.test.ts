import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import { describe, it } from 'node:test';

import { skipLoudly } from '@gatehouse/test-support';

import { openMarkedSocket } from '../src/index.ts';
import { getIntOption } from '../src/linux/linux-udp-socket.ts';
import { SOL_SOCKET, SO_MARK } from '@gatehouse/libc';

const MARK = 0x4748;

void describe('openMarkedSocket', () => {
  void it('hands Node a marked UDP socket that sends and receives', async (t) => {
    if (process.getuid?.() !== 0) return skipLoudly(t, 'needs root: SO_MARK needs CAP_NET_ADMIN');
    const echo = dgram.createSocket('udp4');
    const fd = openMarkedSocket(4, 'udp', MARK);
    const socket = dgram.createSocket('udp4');
    try {
      echo.on('message', (message, remote) => echo.send(message, remote.port, remote.address));
      echo.bind(0, '127.0.0.1');
      await once(echo, 'listening');
      // With a descriptor, bind emits 'listening' before it returns.
      const listening = once(socket, 'listening');
      socket.bind({ fd });
      await listening;
      assert.equal(getIntOption(fd, SOL_SOCKET, SO_MARK), MARK);
      socket.send('ping', echo.address().port, '127.0.0.1');
      const [reply] = (await once(socket, 'message')) as [Buffer];
      assert.equal(reply.toString(), 'ping');
    } finally {
      socket.close();
      echo.close();
    }
  });

  void it('hands Node a marked TCP socket that connects', async (t) => {
    if (process.getuid?.() !== 0) return skipLoudly(t, 'needs root: SO_MARK needs CAP_NET_ADMIN');
    const server = net.createServer((peer) => peer.end('hello'));
    server.listen(0, '::1');
    await once(server, 'listening');
    const fd = openMarkedSocket(6, 'tcp', MARK);
    const socket = new net.Socket({ fd });
    try {
      socket.connect((server.address() as net.AddressInfo).port, '::1');
      const [data] = (await once(socket, 'data')) as [Buffer];
      assert.equal(data.toString(), 'hello');
      assert.equal(getIntOption(fd, SOL_SOCKET, SO_MARK), MARK);
    } finally {
      socket.destroy();
      server.close();
    }
  });
});
