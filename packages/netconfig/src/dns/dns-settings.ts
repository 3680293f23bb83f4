/** What Gatehouse asks of system DNS: the resolvers to use and the search domains. */
import { isIP } from 'node:net';

export interface DnsSettings {
  servers: string[];
  searchDomains: string[];
}

/**
 * wg-quick's `DNS =` values: IP addresses are resolvers, anything else is a
 * search domain (as wg-quick hands them to resolvconf).
 */
export function dnsSettingsFromWgQuick(values: readonly string[]): DnsSettings {
  const entries = values
    .flatMap((value) => value.split(','))
    .map((entry) => entry.trim())
    .filter(Boolean);
  return {
    servers: entries.filter((entry) => isIP(entry) !== 0),
    searchDomains: entries.filter((entry) => isIP(entry) === 0),
  };
}
