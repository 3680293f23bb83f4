import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  formatConfigProblems,
  parseWgQuickConfig,
  type WgQuickConfig,
} from '../src/wg-quick-config.ts';

const key = (fill: number) => Buffer.alloc(32, fill).toString('base64');
const PRIVATE = key(1);
const PEER_A = key(2);
const PEER_B = key(3);
const PSK = key(4);

function parsed(text: string): WgQuickConfig {
  const result = parseWgQuickConfig(text);
  assert.ok(result.ok, result.ok ? '' : JSON.stringify(result.problems));
  return result.config;
}

void test('a full configuration parses into checked values', () => {
  const config = parsed(`
# a comment
[Interface]
PrivateKey = ${PRIVATE}
Address = 10.0.0.2/24, FD00:0::0002/64   # prefix kept as written, address in RFC 5952 text
Address = 192.0.2.7
ListenPort = 51820
MTU = 1380
DNS = 10.0.0.53, 2001:db8::53, corp.example, example.com
FwMark = 0xca6c

[Peer]
PublicKey = ${PEER_A}
PresharedKey = ${PSK}
Endpoint = vpn.example.com:51820
AllowedIPs = 10.1.2.3/16, 2001:DB8:0:0::1/32, 10.1.0.0/16
PersistentKeepalive = 25

[peer]
publickey = ${PEER_B}
endpoint = [2001:db8::1]:443
allowedips = 0.0.0.0/0
`);
  assert.deepEqual(config.interface.privateKey, new Uint8Array(32).fill(1));
  assert.deepEqual(config.interface.addresses, [
    { family: 4, address: '10.0.0.2', prefixLength: 24 },
    { family: 6, address: 'fd00::2', prefixLength: 64 },
    { family: 4, address: '192.0.2.7', prefixLength: 32 },
  ]);
  assert.equal(config.interface.listenPort, 51820);
  assert.equal(config.interface.mtu, 1380);
  assert.deepEqual(config.interface.dns, {
    servers: ['10.0.0.53', '2001:db8::53'],
    searchDomains: ['corp.example', 'example.com'],
  });
  assert.equal(config.interface.fwMark, 0xca6c);
  const [a, b] = config.peers;
  assert.deepEqual(a?.publicKey, new Uint8Array(32).fill(2));
  assert.deepEqual(a?.presharedKey, new Uint8Array(32).fill(4));
  assert.deepEqual(a?.endpoint, { host: 'vpn.example.com', port: 51820 });
  assert.deepEqual(a?.allowedIps, [
    { family: 4, address: '10.1.0.0', prefixLength: 16 },
    { family: 6, address: '2001:db8::', prefixLength: 32 },
  ]);
  assert.equal(a?.persistentKeepalive, 25);
  assert.deepEqual(b?.endpoint, { host: '2001:db8::1', port: 443 });
  assert.equal(b?.presharedKey, undefined);
  assert.equal(b?.persistentKeepalive, undefined);
});

void test('defaults and "off" values', async (t) => {
  const cases: { name: string; lines: string; check: (c: WgQuickConfig) => void }[] = [
    {
      name: 'MTU defaults to 1420, no port, no mark, no DNS, no peers',
      lines: '',
      check: (c) => {
        assert.equal(c.interface.mtu, 1420);
        assert.equal(c.interface.listenPort, undefined);
        assert.equal(c.interface.fwMark, undefined);
        assert.deepEqual(c.interface.dns, { servers: [], searchDomains: [] });
        assert.deepEqual(c.peers, []);
      },
    },
    {
      name: 'FwMark = off',
      lines: 'FwMark = off',
      check: (c) => assert.equal(c.interface.fwMark, undefined),
    },
    {
      name: 'FwMark decimal',
      lines: 'FwMark = 51820',
      check: (c) => assert.equal(c.interface.fwMark, 51820),
    },
    {
      name: 'FwMark 0',
      lines: 'FwMark = 0',
      check: (c) => assert.equal(c.interface.fwMark, undefined),
    },
    {
      name: 'ListenPort 0 means any',
      lines: 'ListenPort = 0',
      check: (c) => assert.equal(c.interface.listenPort, undefined),
    },
    {
      name: 'CRLF line endings and a byte-order mark',
      lines: 'MTU = 1400\r',
      check: (c) => assert.equal(c.interface.mtu, 1400),
    },
  ];
  for (const c of cases) {
    await t.test(c.name, () =>
      c.check(parsed(`\uFEFF[Interface]\r\nPrivateKey = ${PRIVATE}\r\n${c.lines}\n`)),
    );
  }
});

void test('problems are reported with their line numbers, all of them, and nothing is returned', async (t) => {
  const cases: { name: string; text: string; expected: [number, RegExp][] }[] = [
    {
      name: 'PostUp and friends are refused by name',
      text: `[Interface]\nPrivateKey = ${PRIVATE}\nPostUp = iptables -A FORWARD\nPreDown = rm -rf /\nTable = off\nSaveConfig = true`,
      expected: [
        [3, /PostUp is not supported: .*shell commands/],
        [4, /PreDown is not supported/],
        [5, /Table is not supported/],
        [6, /SaveConfig is not supported/],
      ],
    },
    {
      name: 'unknown keys in either section',
      text: `[Interface]\nPrivateKey = ${PRIVATE}\nFoo = 1\n[Peer]\nPublicKey = ${PEER_A}\nEndpiont = 1.2.3.4:5`,
      expected: [
        [3, /unknown key in \[Interface\] \(allowed: PrivateKey, Address/],
        [6, /unknown key in \[Peer\] \(allowed: PublicKey, PresharedKey/],
      ],
    },
    {
      name: 'bad values',
      text: [
        '[Interface]',
        'PrivateKey = not-a-key',
        'Address = 10.0.0.300/24, fd00::1/129, 10.0.0.1/8/8',
        'ListenPort = 70000',
        'MTU = 12abc',
        'FwMark = 0x1ffffffff',
        'DNS = 1.2.3, bad_domain!',
        '[Peer]',
        `PublicKey = ${PEER_A}`,
        'Endpoint = 2001:db8::1:51820',
        'AllowedIPs = 10.0.0.0/33, ',
        'PersistentKeepalive = -1',
        '[Peer]',
        `PublicKey = ${PEER_B}`,
        'Endpoint = host.example',
        '[Peer]',
        `PublicKey = ${PEER_B}`,
        'Endpoint = [fe80::1]:0',
      ].join('\n'),
      expected: [
        [2, /PrivateKey: key must be 44 base64 characters/],
        [3, /"10\.0\.0\.300" is not an IP address/],
        [3, /"\/129" is not a prefix length for IPv6/],
        [3, /more than one "\/"/],
        [4, /ListenPort must be between 0 and 65535/],
        [5, /"12abc" is not a whole number/],
        [6, /FwMark/],
        [7, /"1\.2\.3" is neither an IP address nor a search domain/],
        [7, /"bad_domain!" is neither/],
        [10, /an IPv6 endpoint needs brackets/],
        [11, /"\/33" is not a prefix length for IPv4/],
        [11, /AllowedIPs has an empty item/],
        [12, /"-1" is not a whole number/],
        [15, /has no port/],
        [16, /same PublicKey as the \[Peer\] on line 13/],
        [18, /the endpoint port must be between 1 and 65535/],
      ],
    },
    {
      name: 'structure: keys outside sections, unknown sections, missing and repeated keys',
      text: `Address = 10.0.0.1\n[Interfaces]\nPrivateKey = ${PRIVATE}\n[Interface]\nMTU = 1400\nMTU = 1500\njust words\n[Peer]\nEndpoint = 1.2.3.4:5\n[Interface]\nPrivateKey = ${PRIVATE}`,
      expected: [
        [1, /"Address" appears before any \[Interface\] or \[Peer\] section/],
        [2, /unknown section \(expected \[Interface\] or \[Peer\]\)/],
        [4, /\[Interface\] has no PrivateKey/],
        [6, /MTU is set twice \(first on line 5\)/],
        [7, /expected "Key = Value" or a section header/],
        [8, /\[Peer\] has no PublicKey/],
        [10, /a second \[Interface\] section \(the first is on line 4\)/],
      ],
    },
    { name: 'an empty file', text: '', expected: [[1, /no \[Interface\] section/]] },
    {
      name: 'an IPv6 address with an MTU below 1280',
      text: `[Interface]\nPrivateKey = ${PRIVATE}\nAddress = fd00::1/64\nMTU = 1000`,
      expected: [[4, /MTU 1000 is below 1280/]],
    },
    {
      name: 'hostile bytes: control characters and an endless line',
      text: `[Interface]\nPrivateKey = ${PRIVATE}\nMTU = 14\u000000\nDNS = ${'a'.repeat(5000)}`,
      expected: [
        [3, /control characters/],
        [4, /longer than 4096 characters/],
      ],
    },
    {
      name: 'a zone index in an address',
      text: `[Interface]\nPrivateKey = ${PRIVATE}\nAddress = fe80::1%eth0/64`,
      expected: [[3, /zone indexes are not allowed/]],
    },
    {
      name: 'a zone index in an endpoint',
      text: `[Interface]\nPrivateKey = ${PRIVATE}\n[Peer]\nPublicKey = ${PEER_A}\nEndpoint = [fe80::1%eth0]:51820`,
      expected: [[5, /is not an IPv6 address/]],
    },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      const result = parseWgQuickConfig(c.text);
      assert.equal(result.ok, false);
      assert.ok(!result.ok);
      assert.equal(
        result.problems.length,
        c.expected.length,
        result.problems.map((p) => `${p.line}: ${p.message}`).join('\n'),
      );
      for (const [line, message] of c.expected) {
        assert.ok(
          result.problems.some((p) => p.line === line && message.test(p.message)),
          `no problem on line ${line} matching ${message}; got:\n${result.problems.map((p) => `${p.line}: ${p.message}`).join('\n')}`,
        );
      }
    });
  }
});

void test('keys never appear in problem messages', () => {
  const result = parseWgQuickConfig(`[Interface]\nPrivateKey = ${PRIVATE.slice(0, 43)}A\n`);
  assert.ok(!result.ok);
  assert.equal(result.problems.length, 1);
  assert.ok(!result.problems[0]?.message.includes(PRIVATE.slice(0, 20)));
});

void test('a private key in the wrong place is never quoted, whatever the shape of its line', async (t) => {
  const secret = randomBytes(32).toString('base64');
  const bare = secret.slice(0, 43);
  const shapes: { name: string; text: string; line: number; message: RegExp }[] = [
    {
      name: 'alone on its line, with its "="',
      text: `[Interface]\nPrivateKey = ${PRIVATE}\n${secret}`,
      line: 3,
      message: /unknown key in \[Interface\]/,
    },
    {
      name: 'alone on its line, without "="',
      text: `[Interface]\nPrivateKey = ${PRIVATE}\n${bare}`,
      line: 3,
      message: /expected "Key = Value"/,
    },
    {
      name: 'after its key name without "="',
      text: `[Interface]\nPrivateKey ${secret}`,
      line: 2,
      message: /unknown key in \[Interface\]/,
    },
    {
      name: 'after "PrivateKey:", without its own "="',
      text: `[Interface]\nPrivateKey: ${bare}`,
      line: 2,
      message: /expected "Key = Value"/,
    },
    {
      name: 'before any section, with "="',
      text: `${secret}\n[Interface]\nPrivateKey = ${PRIVATE}`,
      line: 1,
      message: /a key appears before any \[Interface\]/,
    },
    {
      name: 'before any section, as a PrivateKey line',
      text: `PrivateKey = ${secret}\n[Interface]\nPrivateKey = ${PRIVATE}`,
      line: 1,
      message: /"PrivateKey" appears before any \[Interface\]/,
    },
    {
      name: 'before any section, without "="',
      text: `${bare}\n[Interface]\nPrivateKey = ${PRIVATE}`,
      line: 1,
      message: /expected "Key = Value"/,
    },
    {
      name: 'as a section header',
      text: `[${bare}]\n[Interface]\nPrivateKey = ${PRIVATE}`,
      line: 1,
      message: /unknown section/,
    },
    {
      name: 'run into the value of another key',
      text: `[Interface]\nPrivateKey = ${PRIVATE}\nAddress = 10.0.0.2/24 PrivateKey = ${secret}`,
      line: 3,
      // Which check fails depends on the key's characters (a "/" in it adds a prefix).
      message: /Address: the value \(not shown: it may hold key material\)/,
    },
    {
      name: 'pasted into a field that holds no key',
      text: `[Interface]\nPrivateKey = ${PRIVATE}\nDNS = ${secret}\n[Peer]\nPublicKey = ${PEER_A}\nEndpoint = ${secret}`,
      line: 3,
      message: /DNS: the value \(not shown: it may hold key material\) is neither/,
    },
    {
      name: 'a PrivateKey value that is almost a key',
      text: `[Interface]\nPrivateKey = ${bare}`,
      line: 2,
      message: /PrivateKey: key must be 44 base64 characters, got 43/,
    },
  ];
  for (const shape of shapes) {
    await t.test(shape.name, () => {
      const result = parseWgQuickConfig(shape.text);
      assert.ok(!result.ok);
      const printed = formatConfigProblems('wg0.conf', result.problems);
      assert.ok(
        result.problems.some((p) => p.line === shape.line && shape.message.test(p.message)),
        printed,
      );
      for (let start = 0; start + 8 <= bare.length; start++) {
        const piece = bare.slice(start, start + 8);
        assert.ok(
          !printed.includes(piece),
          `the problems quote "${piece}" of the key:\n${printed}`,
        );
      }
    });
  }
});

void test('a key pasted in base64url or broken up by spaces is never quoted either', () => {
  const bare = randomBytes(32).toString('base64').slice(0, 43);
  const urlSafe = bare.replaceAll('+', '-').replaceAll('/', '_');
  const spaced = bare.match(/.{1,4}/g)!.join(' ');
  for (const value of [urlSafe, spaced]) {
    const text = `[Interface]\nPrivateKey = ${PRIVATE}\nDNS = ${value}\n[Peer]\nPublicKey = ${PEER_A}\nEndpoint = ${value}`;
    const result = parseWgQuickConfig(text);
    assert.ok(!result.ok);
    const printed = formatConfigProblems('wg0.conf', result.problems);
    const squeezed = printed.replace(/\s+/g, '');
    for (const key of [bare, urlSafe]) {
      for (let start = 0; start + 8 <= key.length; start++) {
        const piece = key.slice(start, start + 8);
        assert.ok(!squeezed.includes(piece), `the problems quote "${piece}":\n${printed}`);
      }
    }
  }
});

void test('problems are formatted as file:line and capped', () => {
  const text = `[Interface]\nPrivateKey = ${PRIVATE}\n` + 'Bogus = 1\n'.repeat(60);
  const result = parseWgQuickConfig(text);
  assert.ok(!result.ok);
  const lines = formatConfigProblems('wg0.conf', result.problems).split('\n');
  assert.equal(lines.length, 51);
  assert.match(lines[0] ?? '', /^wg0\.conf:3: unknown key in \[Interface\]/);
  assert.equal(lines[50], 'wg0.conf: … and 10 more problems');
});
