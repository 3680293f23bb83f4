/**
 * What the DNS stub's limits cost: junk names under one wildcard resource
 * up to the per-resource assignment cap (query rate, the process's RSS and
 * heap at the cap, bytes per name), one reclaiming pass, and the worst-case
 * pattern match (100 labels against six `**`).
 *
 *   npm run bench:dns-stub
 */

import { matchWithSteps, parseDomainPattern } from '../src/domain-pattern.ts';
import {
  DEFAULT_MAX_ASSIGNMENTS_PER_RESOURCE,
  DEFAULT_PROXY_ADDRESS_IDLE_MS,
  DnsStub,
  RECLAIM_BUDGET,
} from '../src/stub.ts';
import { encodeQuery } from '../test/dns-client.ts';

const CAP = DEFAULT_MAX_ASSIGNMENTS_PER_RESOURCE;
const MiB = 1024 * 1024;

function memory(): { rss: number; heap: number } {
  globalThis.gc?.();
  const usage = process.memoryUsage();
  return { rss: usage.rss, heap: usage.heapUsed };
}

const stub = new DnsStub({ clientQueryBurst: CAP * 2, clientQueriesPerSecond: 1 });
stub.setResources([{ id: 'wild', pattern: '*.corp.example' }]);
const queries = Array.from({ length: CAP + 1 }, (_, n) =>
  encodeQuery(`junk-${n.toString(36)}-${'x'.repeat(20)}.corp.example`, 'A'),
);
const before = memory();
const started = performance.now();
for (let n = 0; n < CAP; n++) stub.handleQuery(queries[n]!, 0, '127.0.0.1');
const elapsed = performance.now() - started;
const atCap = memory();
const refusedAtCap = stub.handleQuery(queries[CAP]!, 0, '127.0.0.1');

console.log(`assignment cap per DNS resource: ${CAP} names (4 IPv4 + 4 IPv6 addresses each)`);
console.log(
  `  new names: ${((CAP / elapsed) * 1000).toFixed(0)} queries/s (${((elapsed * 1000) / CAP).toFixed(1)} µs each)`,
);
console.log(
  `  at the cap: RSS ${(atCap.rss / MiB).toFixed(1)} MiB (+${((atCap.rss - before.rss) / MiB).toFixed(1)}), ` +
    `heap ${(atCap.heap / MiB).toFixed(1)} MiB (+${((atCap.heap - before.heap) / MiB).toFixed(1)}), ` +
    `${((atCap.heap - before.heap) / CAP).toFixed(0)} heap bytes per name`,
);
console.log(
  `  the next new name: ${refusedAtCap.kind === 'reply' ? `rcode ${Buffer.from(refusedAtCap.message)[3]! & 0xf}` : refusedAtCap.kind}` +
    ` (assignment-cap refusals ${stub.stats.refused['assignment-cap']})`,
);

const sweepStarted = performance.now();
stub.handleTimeouts(DEFAULT_PROXY_ADDRESS_IDLE_MS);
const sweepMs = performance.now() - sweepStarted;
console.log(
  `  one reclaiming pass: ${stub.stats.reclaimed} names in ${sweepMs.toFixed(1)} ms (budget per pass ${RECLAIM_BUDGET})`,
);

const worstPattern = '**.a.**.a.**.a.**.a.**.a.**.b.example';
const pattern = parseDomainPattern(worstPattern);
const name = `${Array<string>(100).fill('a').join('.')}.example`;
const rounds = 200;
const matchStarted = performance.now();
for (let round = 0; round < rounds; round++) pattern.matches(name);
const matchMicros = ((performance.now() - matchStarted) * 1000) / rounds;
const steps = matchWithSteps(worstPattern, name).labelSteps;
console.log(
  `worst-case match, 101 labels against 13 parts (six **): ${matchMicros.toFixed(1)} µs, ${steps} label steps`,
);
