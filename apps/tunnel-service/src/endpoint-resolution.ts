/**
 * Peer endpoints as the engine takes them: addresses, with hostnames
 * resolved once at start-up (as wg-quick does), before Gatehouse's DNS
 * settings exist.
 */

import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { parseAddress } from '@gatehouse/addresses';
import type { Endpoint } from '@gatehouse/addresses';
import { encodeKey } from '@gatehouse/wireguard';
import type { PeerSpec } from './tunnel-spec.ts';

/** One address for a hostname. */
export type HostLookup = (host: string) => Promise<string>;

/** IPv4 first: the engine's sockets are IPv4. */
export const systemHostLookup: HostLookup = async (host) =>
  (await lookup(host, { order: 'ipv4first' })).address;

export async function resolvePeerEndpoints(
  peers: readonly PeerSpec[],
  lookupHost: HostLookup,
): Promise<Array<Endpoint | undefined>> {
  return Promise.all(
    peers.map(async (peer) => {
      if (peer.endpoint === undefined) return undefined;
      const { host, port } = peer.endpoint;
      if (isIP(host) !== 0) return { ...parseAddress(host), port };
      try {
        return { ...parseAddress(await lookupHost(host)), port };
      } catch (error) {
        throw new Error(
          `peer ${encodeKey(peer.publicKey)}: cannot resolve its endpoint host "${host}": ${(error as Error).message}`,
          { cause: error },
        );
      }
    }),
  );
}
