/**
 * Test-only: runs one case of tun-queue-contract.ts (or one of LINUX_ONLY)
 * against a real TUN device; netns-harness.ts starts it inside a network namespace of its
 * own (never run it elsewhere). Arguments: the case's name, `plain` or
 * `offload`. Prints `{}` when the case passed; a failure exits non-zero
 * with its assertion on stderr.
 */
import { LINUX_ONLY, linuxHarness } from './linux-tun-queue-harness.ts';
import { CONTRACT } from './tun-queue-contract.ts';

const [name = '', variant = ''] = process.argv.slice(2);
const offload = variant === 'offload';
const contract = CONTRACT[name];
const linuxOnly = LINUX_ONLY[name];
if ((contract === undefined && linuxOnly === undefined) || (!offload && variant !== 'plain')) {
  console.error(`unknown case ${JSON.stringify(name)} or variant ${JSON.stringify(variant)}`);
  process.exit(2);
}
await (contract === undefined ? linuxOnly!(offload) : contract(linuxHarness(offload)));
process.stdout.write('{}\n');
