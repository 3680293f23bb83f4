/**
 * The DNS stub's sockets to its upstream resolvers. An upstream inside some
 * peer's AllowedIPs (wg-quick's usual `DNS = 10.0.0.1`, or any upstream in
 * full-tunnel mode) is asked through the tunnel, as the system would ask it;
 * any other upstream (e.g. the LAN's resolver the system used before) is
 * asked from a socket carrying Gatehouse's fwmark, which skips Gatehouse's
 * routing table and so never loops into the tunnel. The stub asks for a
 * fresh UDP socket per forwarded query: each leaves from its own random
 * source port (RFC 5452).
 */

import dgram from 'node:dgram';
import net from 'node:net';
import type { UpstreamSocketFactory } from '@gatehouse/dns-stub';
import { openMarkedSocket } from '@gatehouse/udp';
import type { TunnelledAddressTest } from './tunnelled-addresses.ts';

export function upstreamSockets(
  mark: number,
  isTunnelled: TunnelledAddressTest,
): UpstreamSocketFactory {
  return {
    udp(upstream) {
      const family = net.isIPv6(upstream.address) ? 6 : 4;
      const socket = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
      if (!isTunnelled(upstream.address))
        socket.bind({ fd: openMarkedSocket(family, 'udp', mark) });
      return socket;
    },
    tcp(upstream) {
      if (isTunnelled(upstream.address))
        return net.connect({ host: upstream.address, port: upstream.port });
      const family = net.isIPv6(upstream.address) ? 6 : 4;
      const socket = new net.Socket({ fd: openMarkedSocket(family, 'tcp', mark) });
      return socket.connect({ host: upstream.address, port: upstream.port });
    },
  };
}
