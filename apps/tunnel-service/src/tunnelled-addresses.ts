/** Which addresses the tunnel carries: those inside some peer's AllowedIPs. */

import { AllowedIps, NO_PEER } from '@gatehouse/engine';
import { parseAddress } from '@gatehouse/addresses';
import type { PeerSpec } from './tunnel-spec.ts';

export type TunnelledAddressTest = (address: string) => boolean;

export function tunnelledAddressTest(peers: readonly PeerSpec[]): TunnelledAddressTest {
  const allowedIps = new AllowedIps();
  peers.forEach((peer, slot) => {
    for (const network of peer.allowedIps)
      allowedIps.set(`${network.address}/${network.prefixLength}`, slot);
  });
  const table = allowedIps.compile();
  return (address) => {
    const parsed = parseAddress(address);
    return table.lookup(parsed.family, parsed.address, 0) !== NO_PEER;
  };
}
