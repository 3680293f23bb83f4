/**
 * The check every DNS resource pattern passes before it reaches the stub:
 * the service refuses a request that fails it, and the CLI refuses to send
 * one, so a typo fails fast and the same way on both sides.
 */

import { parseDomainPattern } from '@gatehouse/dns-stub';

/** Why the first refused pattern is refused; undefined when every pattern is fine. */
export function dnsResourcePatternProblem(patterns: readonly string[]): string | undefined {
  for (const pattern of patterns) {
    try {
      parseDomainPattern(pattern);
    } catch (error) {
      return (error as Error).message;
    }
  }
  return undefined;
}
