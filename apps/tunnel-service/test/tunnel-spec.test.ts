import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeKey } from '@gatehouse/wireguard';
import { diffTunnelSpecs, type PeerSpec, type TunnelSpec } from '../src/tunnel-spec.ts';
import { parseWgQuickConfig, tunnelSpecFromWgQuick } from '../src/wg-quick-config.ts';

const bytes = (fill: number) => new Uint8Array(32).fill(fill);
const name = (fill: number) => encodeKey(bytes(fill));

function peer(fill: number, changes: Partial<PeerSpec> = {}): PeerSpec {
  return {
    publicKey: bytes(fill),
    presharedKey: undefined,
    endpoint: { host: `192.0.2.${fill}`, port: 51820 },
    allowedIps: [{ family: 4, address: `10.${fill}.0.0`, prefixLength: 16 }],
    persistentKeepalive: undefined,
    ...changes,
  };
}

const BASE: TunnelSpec = {
  interfaceName: 'gh-spec0',
  privateKey: bytes(1),
  listenPort: undefined,
  fwMark: undefined,
  addresses: [{ family: 4, address: '10.0.0.2', prefixLength: 24 }],
  mtu: 1420,
  peers: [peer(2), peer(3)],
  routes: ['10.2.0.0/16', '10.3.0.0/16'],
  dns: { servers: ['10.0.0.1'], searchDomains: [] },
  dnsResources: [],
  proxyRanges: { ipv4: '100.96.0.0/11', ipv6: 'fd00:2021:1111:8000::/107' },
  lanBypass: true,
};

void test('diffTunnelSpecs: each change, and nothing else', async (t) => {
  const cases: Array<{ name: string; to: Partial<TunnelSpec>; changes: unknown[] }> = [
    { name: 'the same spec', to: {}, changes: [] },
    { name: 'the same values in new objects', to: structuredClone(BASE), changes: [] },
    {
      name: 'the fixed fields',
      to: { interfaceName: 'gh-spec1', privateKey: bytes(9), listenPort: 1, fwMark: 2 },
      changes: [{ kind: 'fixed', fields: ['interfaceName', 'privateKey', 'listenPort', 'fwMark'] }],
    },
    { name: 'the MTU', to: { mtu: 1280 }, changes: [{ kind: 'interface' }] },
    {
      name: 'an address',
      to: { addresses: [{ family: 4, address: '10.0.0.3', prefixLength: 24 }] },
      changes: [{ kind: 'interface' }],
    },
    {
      name: "one peer's endpoint",
      to: { peers: [peer(2), peer(3, { endpoint: { host: '198.51.100.1', port: 1 } })] },
      changes: [{ kind: 'peers', added: [], removed: [], changed: [name(3)] }],
    },
    {
      name: "one peer's preshared key and keepalive",
      to: { peers: [peer(2, { presharedKey: bytes(7), persistentKeepalive: 25 }), peer(3)] },
      changes: [{ kind: 'peers', added: [], removed: [], changed: [name(2)] }],
    },
    {
      name: 'peers in another order',
      to: { peers: [peer(3), peer(2)] },
      changes: [],
    },
    {
      name: 'a peer added, one removed, and their routes',
      to: { peers: [peer(2), peer(4)], routes: ['10.2.0.0/16', '10.4.0.0/16'] },
      changes: [
        { kind: 'peers', added: [name(4)], removed: [name(3)], changed: [] },
        { kind: 'routes', added: ['10.4.0.0/16'], removed: ['10.3.0.0/16'] },
      ],
    },
    {
      name: 'DNS search domains',
      to: { dns: { servers: ['10.0.0.1'], searchDomains: ['corp.example'] } },
      changes: [{ kind: 'dns' }],
    },
    {
      name: 'DNS resources',
      to: { dnsResources: ['*.corp'] },
      changes: [{ kind: 'dns-resources' }],
    },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      assert.deepEqual(diffTunnelSpecs(BASE, { ...BASE, ...c.to }), c.changes);
    });
  }
});

void test('wg-quick translates into a spec: every AllowedIPs routed once, no DNS resources', () => {
  const parsed = parseWgQuickConfig(`[Interface]
PrivateKey = ${Buffer.from(bytes(1)).toString('base64')}
Address = 10.0.0.2/24
DNS = 10.0.0.1, corp.example
MTU = 1380

[Peer]
PublicKey = ${name(2)}
AllowedIPs = 10.2.0.0/16, 10.9.0.0/16

[Peer]
PublicKey = ${name(3)}
AllowedIPs = 10.9.0.0/16, fd00::/64
`);
  assert.ok(parsed.ok);
  const spec = tunnelSpecFromWgQuick(parsed.config, 'wg0');
  assert.equal(spec.interfaceName, 'wg0');
  assert.equal(spec.mtu, 1380);
  assert.deepEqual(spec.routes, ['10.2.0.0/16', '10.9.0.0/16', 'fd00::/64']);
  assert.deepEqual(spec.dns, { servers: ['10.0.0.1'], searchDomains: ['corp.example'] });
  assert.deepEqual(spec.dnsResources, []);
  assert.equal(spec.peers.length, 2);
});
