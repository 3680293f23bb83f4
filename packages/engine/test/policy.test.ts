import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { parseAddress } from '@gatehouse/addresses';

import { checkPolicyRule, compilePolicy, PolicyTable } from '../src/policy.ts';
import type { PolicyRule } from '../src/policy.ts';

const PEER_SLOTS = 8;

/** An IPv4 or IPv6 packet to `destination` with `protocol` and, for TCP/UDP, destination port `port`. */
function packet(destination: string, protocol: number, port = 0, fragmentOffset = 0): Uint8Array {
  const { family, address } = parseAddress(destination);
  if (family === 4) {
    const bytes = new Uint8Array(28);
    bytes[0] = 0x45;
    bytes[6] = fragmentOffset >> 8;
    bytes[7] = fragmentOffset & 0xff;
    bytes[9] = protocol;
    bytes.set(address, 16);
    bytes[22] = port >> 8;
    bytes[23] = port & 0xff;
    return bytes;
  }
  const bytes = new Uint8Array(48);
  bytes[0] = 0x60;
  bytes[6] = protocol;
  bytes.set(address, 24);
  bytes[42] = port >> 8;
  bytes[43] = port & 0xff;
  return bytes;
}

const TCP = 6;
const UDP = 17;
const ICMP = 1;
const ICMPV6 = 58;

const RULES: PolicyRule[] = [
  {
    destination: '10.0.1.0/24',
    protocol: 'tcp',
    ports: [
      { from: 80, to: 80 },
      { from: 8000, to: 8999 },
    ],
  },
  { destination: '10.0.2.5', protocol: 'udp', ports: [{ from: 53, to: 53 }] },
  { destination: '10.0.3.0/24', protocol: 'icmp' },
  { destination: '10.0.4.0/23', protocol: 'any' },
  { destination: 'fd00:1::/64', protocol: 'tcp', ports: [{ from: 443, to: 443 }] },
  { destination: 'fd00:2::/120', protocol: 'icmp' },
  { destination: '10.0.9.0/24', protocol: 'udp' },
];

const CASES: { name: string; packet: Uint8Array; allowed: boolean }[] = [
  {
    name: 'tcp to a listed port in the prefix',
    packet: packet('10.0.1.7', TCP, 80),
    allowed: true,
  },
  { name: 'tcp at the top of a range', packet: packet('10.0.1.7', TCP, 8999), allowed: true },
  { name: 'tcp just past a range', packet: packet('10.0.1.7', TCP, 9000), allowed: false },
  { name: 'udp where only tcp is allowed', packet: packet('10.0.1.7', UDP, 80), allowed: false },
  { name: 'tcp outside the prefix', packet: packet('10.0.0.7', TCP, 80), allowed: false },
  { name: 'udp to the one host and port', packet: packet('10.0.2.5', UDP, 53), allowed: true },
  { name: 'udp to the host next to it', packet: packet('10.0.2.6', UDP, 53), allowed: false },
  { name: 'icmp where icmp is allowed', packet: packet('10.0.3.1', ICMP), allowed: true },
  { name: 'tcp where only icmp is allowed', packet: packet('10.0.3.1', TCP, 80), allowed: false },
  { name: 'any protocol in a /23, upper half', packet: packet('10.0.5.255', 47), allowed: true },
  { name: 'just past the /23', packet: packet('10.0.6.0', TCP, 80), allowed: false },
  {
    name: 'a later fragment where ports are required',
    packet: packet('10.0.1.7', TCP, 80, 100),
    allowed: false,
  },
  {
    name: 'a later fragment where any port will do',
    packet: packet('10.0.9.1', UDP, 0, 100),
    allowed: true,
  },
  { name: 'IPv6 tcp to the listed port', packet: packet('fd00:1::9', TCP, 443), allowed: true },
  { name: 'IPv6 tcp to another port', packet: packet('fd00:1::9', TCP, 444), allowed: false },
  { name: 'ICMPv6 where icmp is allowed', packet: packet('fd00:2::ff', ICMPV6), allowed: true },
  { name: 'ICMPv6 past the /120', packet: packet('fd00:2::100', ICMPV6), allowed: false },
  {
    name: 'an IPv4 rule never matches IPv6',
    packet: packet('::ffff:10.0.4.1', TCP, 1),
    allowed: false,
  },
];

void describe('PolicyTable', () => {
  const table = new PolicyTable(compilePolicy([{ slot: 2, rules: RULES }], PEER_SLOTS));
  for (const { name, packet: bytes, allowed } of CASES) {
    void it(`${allowed ? 'allows' : 'denies'} ${name}`, () => {
      assert.equal(table.allows(2, bytes, 0, bytes.length), allowed);
    });
  }

  void it('allows everything for a peer without rules; a table without any rules is empty', () => {
    assert.equal(table.empty, false);
    assert.equal(table.allows(3, packet('192.0.2.1', TCP, 22), 0, 28), true);
    const none = new PolicyTable(compilePolicy([{ slot: 2, rules: [] }], PEER_SLOTS));
    assert.equal(none.empty, true);
    assert.equal(none.allows(2, packet('192.0.2.1', TCP, 22), 0, 28), true);
  });

  void it('keeps each peer to its own rules', () => {
    const two = new PolicyTable(
      compilePolicy(
        [
          { slot: 0, rules: [{ destination: '10.0.0.0/8', protocol: 'any' }] },
          { slot: 5, rules: [{ destination: '192.168.0.0/16', protocol: 'any' }] },
        ],
        PEER_SLOTS,
      ),
    );
    assert.equal(two.allows(0, packet('10.1.1.1', TCP, 1), 0, 28), true);
    assert.equal(two.allows(0, packet('192.168.1.1', TCP, 1), 0, 28), false);
    assert.equal(two.allows(5, packet('192.168.1.1', TCP, 1), 0, 28), true);
    assert.equal(two.allows(5, packet('10.1.1.1', TCP, 1), 0, 28), false);
  });
});

void describe('checkPolicyRule', () => {
  const bad: [string, PolicyRule, RegExp][] = [
    ['a bad prefix', { destination: '10.0.0.0/33', protocol: 'any' }, /prefix length/],
    [
      'an unknown protocol',
      { destination: '10.0.0.0/8', protocol: 'sctp' as 'any' },
      /protocol must be/,
    ],
    [
      'ports with icmp',
      { destination: '10.0.0.0/8', protocol: 'icmp', ports: [{ from: 1, to: 2 }] },
      /need tcp or udp/,
    ],
    [
      'port 0',
      { destination: '10.0.0.0/8', protocol: 'tcp', ports: [{ from: 0, to: 2 }] },
      /bad policy port range/,
    ],
    [
      'a reversed range',
      { destination: '10.0.0.0/8', protocol: 'udp', ports: [{ from: 9, to: 2 }] },
      /bad policy port range/,
    ],
    [
      'a port above 65535',
      { destination: '10.0.0.0/8', protocol: 'udp', ports: [{ from: 9, to: 65536 }] },
      /bad policy port range/,
    ],
  ];
  for (const [name, rule, message] of bad) {
    void it(`refuses ${name}`, () => assert.throws(() => checkPolicyRule(rule), message));
  }
});
