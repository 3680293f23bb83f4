/** EngineTunnel on the real system: the engine, iproute2, system DNS, the DNS stub on port 53. */

import { isIP } from 'node:net';
import { DnsStub, startDnsStubServer } from '@gatehouse/dns-stub';
import { Engine } from '@gatehouse/engine';
import {
  createSystemDnsControl,
  DEFAULT_FWMARK,
  GatehouseRouting,
  probeSystemDns,
  type DnsControlSetting,
} from '@gatehouse/netconfig';
import type { Logger } from '@gatehouse/logging';
import { systemHostLookup } from './endpoint-resolution.ts';
import { EngineTunnel, type ResourceStub, type ResourceStubOptions } from './engine-tunnel.ts';
import { SystemDnsSession } from './system-dns-session.ts';
import { upstreamSockets } from './upstream-sockets.ts';

const DNS_PORT = 53;

export function createSystemTunnel(options: {
  dnsControl: DnsControlSetting;
  logger: Logger;
}): EngineTunnel {
  const { logger } = options;
  return new EngineTunnel({
    startEngine: (engineOptions, peers) => Engine.start(engineOptions, peers),
    createRouting: (identity) => new GatehouseRouting(identity),
    startSystemDns: (interfaceName) =>
      SystemDnsSession.start({
        setting: options.dnsControl,
        probe: () => probeSystemDns(),
        createControl: (mode) => createSystemDnsControl(mode, { interfaceName }),
        logger,
      }),
    startResourceStub: (stubOptions) => startResourceStub(stubOptions, logger),
    lookupHost: systemHostLookup,
    logger,
  });
}

/**
 * What a crashed run left, undone before the daemon serves: Gatehouse's
 * rules and routes (found by their protocol and priority, whatever the
 * interface) and a resolv.conf it had rewritten.
 */
export async function repairSystem(): Promise<void> {
  await new GatehouseRouting({ interfaceName: 'gatehouse', mark: DEFAULT_FWMARK }).flush();
  await createSystemDnsControl('disabled', { interfaceName: 'gatehouse' }).restore();
}

async function startResourceStub(
  options: ResourceStubOptions,
  logger: Logger,
): Promise<ResourceStub> {
  const stub = new DnsStub({
    proxyFamilies: options.proxyFamilies,
    ipv4ProxyRange: options.proxyRanges.ipv4,
    ipv6ProxyRange: options.proxyRanges.ipv6,
    addressIdleMs: options.addressIdleMs,
    isTunnelled: options.isTunnelled,
  });
  const toResources = (patterns: readonly string[]) =>
    patterns.map((pattern) => ({ id: pattern, pattern }));
  stub.setResources(toResources(options.resources));
  stub.setUpstreams(options.upstreams.map((address) => ({ address, port: DNS_PORT })));
  const server = await startDnsStubServer({
    stub,
    listen: options.listen.map((address) => ({ address, port: DNS_PORT })),
    upstreamSockets: upstreamSockets(options.mark, options.isTunnelled),
    logger,
  });
  return {
    setResources: (patterns) => stub.setResources(toResources(patterns)),
    lookupProxyAddress: (address) => {
      if (!isIP(address)) return undefined;
      const assignment = stub.lookupProxyAddress(address);
      return assignment === undefined
        ? undefined
        : { name: assignment.name, proxyAddresses: [...assignment.ipv4, ...assignment.ipv6] };
    },
    stats: () => stub.stats,
    close: () => server.close(),
  };
}
