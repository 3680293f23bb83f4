import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { LinuxUdpSocket } from '@gatehouse/udp';
import type { LinuxUdpSocketOptions } from '@gatehouse/udp';

import { openEngineSockets } from '../src/udp-sockets.ts';

function systemError(message: string, code: number): Error {
  return Object.assign(new Error(message), { code });
}

void describe('engine UDP sockets', () => {
  void it('opens an IPv4 and an IPv6 SO_REUSEPORT group on one port', () => {
    const logs: string[] = [];
    const sockets = openEngineSockets({ queues: 2 }, (_, message) => logs.push(message));
    try {
      assert.equal(sockets.length, 2);
      const port = sockets[0]!.localPort;
      for (const socket of sockets) {
        assert.equal(socket.v4.localPort, port);
        assert.equal(socket.v6?.localPort, port);
      }
      assert.deepEqual(logs, []);
    } finally {
      for (const socket of sockets) socket.close();
    }
  });

  void it('falls back to IPv4 only, with an info log, when IPv6 sockets cannot be opened', () => {
    const logs: string[] = [];
    const opened: LinuxUdpSocket[] = [];
    const open = (options: LinuxUdpSocketOptions): LinuxUdpSocket => {
      if (options.family === 6) {
        throw systemError('socket: Address family not supported by protocol (errno 97)', 97);
      }
      const socket = LinuxUdpSocket.open(options);
      opened.push(socket);
      return socket;
    };
    const sockets = openEngineSockets(
      { queues: 2 },
      (level, message) => logs.push(`${level}: ${message}`),
      open,
    );
    try {
      assert.equal(sockets.length, 2);
      for (const socket of sockets) {
        assert.equal(socket.v6, undefined);
        assert.equal(socket.has(6), false);
      }
      assert.equal(logs.length, 1);
      assert.match(logs[0]!, /^info: IPv6 unavailable \(.*errno 97\).*IPv4 only/);
    } finally {
      for (const socket of sockets) socket.close();
    }
    assert.equal(opened.length, 2);
  });

  void it('draws a new random port when the IPv6 group finds the drawn one taken', () => {
    let v6Attempts = 0;
    const open = (options: LinuxUdpSocketOptions): LinuxUdpSocket => {
      if (options.family === 6 && v6Attempts++ === 0) {
        throw systemError('bind :: port: Address already in use (errno 98)', 98);
      }
      return LinuxUdpSocket.open(options);
    };
    const logs: string[] = [];
    const sockets = openEngineSockets({ queues: 1 }, (_, message) => logs.push(message), open);
    try {
      assert.equal(v6Attempts, 2);
      assert.equal(sockets[0]!.v6?.localPort, sockets[0]!.v4.localPort);
      assert.deepEqual(logs, []);
    } finally {
      for (const socket of sockets) socket.close();
    }
  });

  void it('with a fixed port, a taken IPv6 port falls back to IPv4 only', () => {
    // The blocker holds a random IPv6 port; another process may hold the same port's
    // IPv4 side, so such a port is drawn again (bounded), never counted as a pass.
    const attempts = 16;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const blocker = LinuxUdpSocket.open({ family: 6 });
      const logs: string[] = [];
      let sockets: ReturnType<typeof openEngineSockets> = [];
      try {
        try {
          sockets = openEngineSockets({ queues: 1, listenPort: blocker.localPort }, (_, message) =>
            logs.push(message),
          );
        } catch (error) {
          if ((error as { code?: number }).code === 98) continue;
          throw error;
        }
        assert.equal(sockets[0]!.v4.localPort, blocker.localPort);
        assert.equal(sockets[0]!.v6, undefined);
        assert.equal(logs.length, 1);
        assert.match(logs[0]!, /IPv6 unavailable \(.*errno 98\).*IPv4 only/);
        return;
      } finally {
        for (const socket of sockets) socket.close();
        blocker.close();
      }
    }
    assert.fail(`no port with a free IPv4 side in ${attempts} draws`);
  });
});
