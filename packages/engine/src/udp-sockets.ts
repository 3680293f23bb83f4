/**
 * The engine's UDP sockets: per data worker an IPv4 socket in one
 * SO_REUSEPORT group and, when the host has IPv6, a v6-only socket in a
 * second group on the same port (v6-only sockets share a port with IPv4
 * ones). Without IPv6 (ipv6.disable=1, no IPv6 in the namespace, ...) the
 * engine runs IPv4-only and says so at info level; that never fails start-up.
 */
import { DualStackSocket, LinuxUdpSocket } from '@gatehouse/udp';
import type { LinuxUdpSocketOptions } from '@gatehouse/udp';

export type OpenUdpSocket = (options: LinuxUdpSocketOptions) => LinuxUdpSocket;

const EADDRINUSE = 98;
/** With a random port, the IPv6 group may find the port the IPv4 group drew taken: draw again. */
const RANDOM_PORT_ATTEMPTS = 8;

export function openEngineSockets(
  options: { queues: number; listenPort?: number; fwmark?: number },
  log: (level: 'info', message: string) => void,
  open: OpenUdpSocket = (socketOptions) => LinuxUdpSocket.open(socketOptions),
): DualStackSocket[] {
  const wanted = options.listenPort ?? 0;
  for (let attempt = 1; ; attempt++) {
    const v4 = openGroup(4, options.queues, wanted, options.fwmark, open);
    let v6: LinuxUdpSocket[] | undefined;
    try {
      v6 = openGroup(6, options.queues, v4[0]!.localPort, options.fwmark, open);
    } catch (error) {
      if (errorCode(error) === EADDRINUSE && wanted === 0 && attempt < RANDOM_PORT_ATTEMPTS) {
        for (const socket of v4) socket.close();
        continue;
      }
      log(
        'info',
        `IPv6 unavailable (${(error as Error).message}): IPv4 only on port ${v4[0]!.localPort}`,
      );
    }
    return v4.map((socket, queue) => new DualStackSocket(socket, v6?.[queue]));
  }
}

function openGroup(
  family: 4 | 6,
  queues: number,
  port: number,
  fwmark: number | undefined,
  open: OpenUdpSocket,
): LinuxUdpSocket[] {
  const sockets: LinuxUdpSocket[] = [];
  try {
    for (let queue = 0; queue < queues; queue++) {
      sockets.push(
        open({
          family,
          port: queue === 0 ? port : sockets[0]!.localPort,
          reusePort: true,
          ...(fwmark === undefined ? {} : { fwmark }),
        }),
      );
    }
    return sockets;
  } catch (error) {
    for (const socket of sockets) socket.close();
    throw error;
  }
}

function errorCode(error: unknown): unknown {
  return typeof error === 'object' && error !== null && 'code' in error ? error.code : undefined;
}
