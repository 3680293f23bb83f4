/**
 * DNS resources end to end. Namespace A runs `gatehouse-tunnel up` (in a
 * private mount namespace with a copy of /etc) with DNS= pointing at B's
 * tunnel address and a peer, B, whose AllowedIPs cover B and the proxy
 * ranges; B runs wireguard-go and a small upstream resolver. After
 * `gatehouse-tunnel dns-resources`, glibc in A resolves resource names to
 * stable proxy addresses and back (PTR), other names through the upstream
 * across the tunnel, and pings to a proxy address reach B through the
 * tunnel. A client whose names the upstream never answers gets SERVFAIL
 * beyond its share of pending forwards while others are still served, and
 * a TCP client that never reads its replies is closed. A's configuration
 * has no IPv6 Address, so resource names get no IPv6 proxy addresses
 * (NODATA for AAAA) and the kernel never picks a sentinel as a source. Clearing the resources stops the stub and points
 * resolv.conf back at DNS=; down restores resolv.conf byte for byte.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';

import dnsPacket from 'dns-packet';

import { skipLoudly } from '@gatehouse/test-support';

import { systemTestSkipReason, TestNetwork } from './lib/netns.ts';
import { describePing, ping } from './lib/ping.ts';
import { gatehouseCli, startGatehouseUp, startPrivateEtc } from './lib/private-etc.ts';
import { generateKeyPair, WireGuardGo } from './lib/wireguard-go.ts';

const UPSTREAM_SERVER = fileURLToPath(
  new URL('./fixtures/upstream-dns-server.ts', import.meta.url),
);
const INTERFACE = 'ghdns0';
const A = { underlay: '10.200.0.1', tunnel: '10.201.0.1', listenPort: 51820 };
const B = { underlay: '10.200.0.2', tunnel: '10.201.0.2', listenPort: 51821 };
const IPV4_PROXY_RANGE = '100.96.0.0/11';
const IPV6_PROXY_RANGE = 'fd00:2021:1111:8000::/107';
/** A has no IPv6 tunnel address, so the stub listens on the IPv4 sentinel only. */
const SENTINELS = ['100.100.111.1'];
const IPV6_SENTINEL = 'fd00:2021:1111:8000:100:100:111:1';
const UPSTREAM_NAME = 'www.upstream.test';
const UPSTREAM_ANSWER = '10.201.0.99';
/** The upstream answers this name with a proxy address: the stub must not pass it on (rebinding). */
const REBINDING_NAME = 'rebind.upstream.test';
/** The upstream never answers names under this one. */
const SILENT_NAME = 'silent.upstream.test';
/** The stub's DEFAULT_MAX_PENDING_FORWARDS_PER_CLIENT. */
const CLIENT_FORWARDS = 128;
const SILENT_QUERIES = CLIENT_FORWARDS + 12;
const ORIGINAL_RESOLV_CONF = Buffer.from('# the host of this namespace\nnameserver 192.0.2.53\n');

/** The part of `gatehouse-tunnel status --json` this test reads. */
interface Status {
  dnsResources: { stubCounters?: { assignments: number; refused: Record<string, number> } };
  peers: { publicKey: string; txPackets: number }[];
}

/** Run in a namespace: one DNS query (hex) to ADDRESS:53; prints `answered` or `silent` after 1 s. */
const ONE_QUERY = `
const socket = require('node:dgram').createSocket('udp4');
const [address, hex] = process.argv.slice(1);
const timer = setTimeout(() => { console.log('silent'); socket.close(); }, 1000);
socket.on('message', () => { clearTimeout(timer); console.log('answered'); socket.close(); });
socket.send(Buffer.from(hex, 'hex'), 53, address);
`;

/**
 * Run in a namespace: from SOURCE, sends the queries (hex, comma-separated)
 * to ADDRESS:53 at once; prints how many were answered SERVFAIL within 500 ms
 * (a forward the upstream never answers times out into SERVFAIL after 1 s).
 */
const QUERIES_AT_ONCE = `
const socket = require('node:dgram').createSocket('udp4');
const [address, source, hexes] = process.argv.slice(1);
let servfail = 0;
socket.on('message', (reply) => { if ((reply[3] & 0xf) === 2) servfail++; });
socket.bind(0, source, () => {
  for (const hex of hexes.split(',')) socket.send(Buffer.from(hex, 'hex'), 53, address);
  setTimeout(() => { console.log('servfail ' + servfail); socket.close(); }, 500);
});
`;

/**
 * Run in a namespace: a TCP client of ADDRESS:53 that never reads and keeps
 * sending a framed query (hex) until it is closed (prints `closed`), at most
 * 64 MiB within 8 s (then prints `open after N bytes`).
 */
const UNREAD_TCP_CLIENT = `
const [address, hex] = process.argv.slice(1);
const batch = Buffer.concat(Array(1000).fill(Buffer.from(hex, 'hex')));
const socket = require('node:net').connect({ host: address, port: 53 });
socket.pause();
let sent = 0;
let closed = false;
const timer = setTimeout(() => { console.log('open after ' + sent + ' bytes'); socket.destroy(); }, 8000);
socket.on('error', () => {});
socket.on('close', () => { if (!closed) console.log('closed'); closed = true; clearTimeout(timer); });
const pump = () => {
  if (closed || sent >= 64 * 1024 * 1024) return;
  sent += batch.length;
  if (socket.write(batch)) setTimeout(pump, 1); else socket.once('drain', pump);
};
socket.on('connect', pump);
`;

function isIpv4ProxyAddress(address: string): boolean {
  const [first, second] = address.split('.').map(Number);
  return first === 100 && second !== undefined && second >= 96 && second < 128;
}

void it(
  'dns-resources: proxy addresses and PTR from the stub, other names upstream through the tunnel, packets to the peer',
  { timeout: 60_000 },
  async (t) => {
    const skip = systemTestSkipReason([
      'ip',
      'unshare',
      'nsenter',
      'mount',
      'wireguard-go',
      'wg',
      'getent',
      'ping',
    ]);
    if (skip !== undefined) return skipLoudly(t, skip);

    const work = mkdtempSync(join(tmpdir(), 'gh-dns-stub-'));
    const network = TestNetwork.create('dnsstub');
    try {
      const [namespaceA, namespaceB] = await network.addLinkedPair(
        `${A.underlay}/24`,
        `${B.underlay}/24`,
      );
      const [keysA, keysB, decoyKeys] = await Promise.all([
        generateKeyPair(),
        generateKeyPair(),
        generateKeyPair(),
      ]);

      const wireguardB = await WireGuardGo.start(network, {
        namespace: namespaceB,
        privateKey: keysB.privateKey,
        listenPort: B.listenPort,
        address: `${B.tunnel}/24`,
      });
      await wireguardB.setPeer({ publicKey: keysA.publicKey, allowedIps: [`${A.tunnel}/32`] });
      // B stands in for a gateway: it answers for every proxy address.
      await network.exec(namespaceB, [
        'ip',
        'route',
        'add',
        'local',
        IPV4_PROXY_RANGE,
        'dev',
        'lo',
      ]);
      const upstream = network.spawn(namespaceB, [
        process.execPath,
        UPSTREAM_SERVER,
        B.tunnel,
        UPSTREAM_NAME,
        UPSTREAM_ANSWER,
        REBINDING_NAME,
        '100.96.0.77',
        SILENT_NAME,
        'silent',
      ]);

      const privateEtc = await startPrivateEtc(network, namespaceA, work);
      privateEtc.replaceResolvConf(ORIGINAL_RESOLV_CONF);
      const configFile = join(work, `${INTERFACE}.conf`);
      writeFileSync(
        configFile,
        `[Interface]
PrivateKey = ${keysA.privateKey}
Address = ${A.tunnel}/24
ListenPort = ${A.listenPort}
DNS = ${B.tunnel}

[Peer]
PublicKey = ${keysB.publicKey}
Endpoint = ${B.underlay}:${B.listenPort}
AllowedIPs = ${B.tunnel}/32, ${IPV4_PROXY_RANGE}, ${IPV6_PROXY_RANGE}

[Peer]
PublicKey = ${decoyKeys.publicKey}
AllowedIPs = 10.202.0.0/24
`,
        { mode: 0o600 },
      );
      const socketPath = join(work, 'run', 'tunnel.sock');
      const up = await startGatehouseUp(privateEtc, configFile, socketPath);
      assert.ok(upstream.output().includes('ready'), `the upstream resolver: ${upstream.output()}`);
      const cli = (command: string, args: string[] = []) =>
        gatehouseCli(privateEtc, socketPath, command, args);
      const resolvConf = () => readFileSync(privateEtc.resolvConf, 'utf8');
      const nameservers = () => [...resolvConf().matchAll(/^nameserver (\S+)$/gm)].map((m) => m[1]);
      const addressesOf = async (name: string) =>
        [
          ...new Set(
            (await privateEtc.run(['getent', 'ahostsv4', name])).stdout
              .trim()
              .split('\n')
              .map((line) => line.split(/\s+/)[0] ?? ''),
          ),
        ].sort();
      assert.deepEqual(nameservers(), [B.tunnel]);

      const set = await cli('dns-resources', ['app.corp.test', '*.svc.corp.test']);
      assert.equal(
        set.stdout,
        `dns resources: app.corp.test, *.svc.corp.test (DNS stub on ${SENTINELS.join(', ')}; ` +
          `upstreams: ${B.tunnel})\n`,
      );
      assert.deepEqual(nameservers(), SENTINELS);
      const status = async () => JSON.parse((await cli('status', ['--json'])).stdout) as Status;
      const { stubCounters, ...resources } = (await status()).dnsResources;
      assert.deepEqual(resources, {
        patterns: ['app.corp.test', '*.svc.corp.test'],
        stubRunning: true,
        stubAddresses: SENTINELS,
        upstreams: [B.tunnel],
      });
      assert.equal(stubCounters?.assignments, 0);

      const routeGet = async (family: '-4' | '-6', destination: string) =>
        (await privateEtc.run(['ip', family, 'route', 'get', destination])).stdout;
      assert.match(
        await routeGet('-4', '100.96.0.1'),
        new RegExp(`dev ${INTERFACE} .*src ${A.tunnel.replaceAll('.', '\\.')} `),
        'the configured Address is the source, not the sentinel',
      );
      const ipv6Route = await routeGet('-6', 'fd00:2021:1111:8000::1');
      assert.doesNotMatch(ipv6Route, /100:100:111/, `no sentinel as the source: ${ipv6Route}`);
      assert.doesNotMatch(
        (await privateEtc.run(['ip', 'address', 'show', 'dev', INTERFACE])).stdout,
        new RegExp(IPV6_SENTINEL),
        'no IPv6 sentinel without an IPv6 tunnel address',
      );
      // getent ahostsv6 asks with AI_V4MAPPED: without AAAA records glibc maps the A records.
      const ahostsv6 = (await privateEtc.run(['getent', 'ahostsv6', 'app.corp.test'])).stdout;
      assert.ok(
        ahostsv6
          .trim()
          .split('\n')
          .every((line) => line.startsWith('::ffff:100.')),
        `only IPv4-mapped addresses: ${ahostsv6}`,
      );
      const lookupV6 = await privateEtc.run([
        process.execPath,
        '-e',
        "require('node:dns').lookup('app.corp.test', { family: 6, all: true }, " +
          '(error, addresses) => console.log(error?.code ?? JSON.stringify(addresses)))',
      ]);
      assert.equal(lookupV6.stdout.trim(), 'ENOTFOUND', 'getaddrinfo(AF_INET6) finds nothing');
      const anyFamily = (await privateEtc.run(['getent', 'ahosts', 'app.corp.test'])).stdout;
      assert.doesNotMatch(anyFamily, /:/, `IPv4 proxy addresses only: ${anyFamily}`);

      const app = await addressesOf('app.corp.test');
      assert.ok(app.length > 0 && app.every(isIpv4ProxyAddress), `app.corp.test: ${app}`);
      assert.deepEqual(await addressesOf('app.corp.test'), app, 'stable across queries');
      const service = await addressesOf('x.svc.corp.test');
      assert.ok(service.length > 0 && service.every(isIpv4ProxyAddress), `x.svc: ${service}`);
      assert.equal(
        service.filter((address) => app.includes(address)).length,
        0,
        'each name its own proxy addresses',
      );
      const proxy = service[0] ?? '';
      const reverse = (await privateEtc.run(['getent', 'hosts', proxy])).stdout;
      assert.match(
        reverse,
        new RegExp(`^${proxy.replaceAll('.', '\\.')}\\s+x\\.svc\\.corp\\.test$`, 'm'),
      );

      assert.deepEqual(await addressesOf(UPSTREAM_NAME), [UPSTREAM_ANSWER]);
      assert.match(
        upstream.output(),
        new RegExp(`^query ${UPSTREAM_NAME.replaceAll('.', '\\.')} A from ${A.tunnel}$`, 'm'),
        'the stub forwarded through the tunnel',
      );
      assert.doesNotMatch(upstream.output(), /corp\.test/, 'resource names never go upstream');
      await assert.rejects(
        privateEtc.run(['getent', 'ahostsv4', REBINDING_NAME]),
        /exited with 2/,
        'an upstream answer pointing into the proxy ranges is refused',
      );
      assert.ok(upstream.output().includes(`query ${REBINDING_NAME} A`), 'it was asked');
      assert.ok(((await status()).dnsResources.stubCounters?.refused['rebinding'] ?? 0) >= 1);

      // One client asking for names whose server never answers holds its share of forwards only.
      const silentQueries = Array.from({ length: SILENT_QUERIES }, (_, n) =>
        dnsPacket
          .encode({
            type: 'query',
            id: n,
            questions: [{ type: 'A', name: `q${n}.${SILENT_NAME}` }],
          })
          .toString('hex'),
      );
      const silent = await privateEtc.run([
        process.execPath,
        '-e',
        QUERIES_AT_ONCE,
        SENTINELS[0]!,
        A.tunnel,
        silentQueries.join(','),
      ]);
      assert.equal(silent.stdout.trim(), `servfail ${SILENT_QUERIES - CLIENT_FORWARDS}`);
      assert.deepEqual(await addressesOf(UPSTREAM_NAME), [UPSTREAM_ANSWER], 'another client');
      assert.equal(
        (await status()).dnsResources.stubCounters?.refused['client-forward-limit'],
        SILENT_QUERIES - CLIENT_FORWARDS,
      );

      // A TCP client that keeps asking and never reads is closed.
      const canary = dnsPacket.encode({
        type: 'query',
        id: 2,
        questions: [{ type: 'A', name: 'use-application-dns.net' }],
      });
      const framed = Buffer.concat([
        Buffer.from([canary.length >> 8, canary.length & 0xff]),
        canary,
      ]);
      const unread = await privateEtc.run([
        process.execPath,
        '-e',
        UNREAD_TCP_CLIENT,
        SENTINELS[0]!,
        framed.toString('hex'),
      ]);
      assert.equal(unread.stdout.trim(), 'closed');
      assert.equal((await status()).dnsResources.stubCounters?.refused['tcp-unread-replies'], 1);
      assert.match(
        (await cli('status')).stdout,
        /client-forward-limit 12, .*tcp-unread-replies 1/,
        'gatehouse-tunnel status shows them',
      );

      // Who may ask: the stub answers this host only, not a LAN neighbour nor a tunnel peer.
      const query = dnsPacket
        .encode({ type: 'query', id: 1, questions: [{ type: 'A', name: 'app.corp.test' }] })
        .toString('hex');
      const askFromB = async () =>
        (
          await network.exec(namespaceB, [process.execPath, '-e', ONE_QUERY, SENTINELS[0]!, query])
        ).stdout.trim();
      const notLocal = async () => (await status()).dnsResources.stubCounters?.refused['not-local'];
      await network.exec(namespaceB, [
        'ip',
        'route',
        'add',
        `${SENTINELS[0]}/32`,
        'via',
        A.underlay,
      ]);
      assert.equal(await askFromB(), 'silent', 'a LAN neighbour gets no answer');
      assert.equal(await notLocal(), 1);
      await wireguardB.setPeer({
        publicKey: keysA.publicKey,
        allowedIps: [`${A.tunnel}/32`, `${SENTINELS[0]}/32`],
      });
      await network.exec(namespaceB, [
        'ip',
        'route',
        'replace',
        `${SENTINELS[0]}/32`,
        'dev',
        wireguardB.name,
      ]);
      assert.equal(await askFromB(), 'silent', 'a tunnel peer gets no answer');
      assert.equal(await notLocal(), 2);
      assert.ok(
        (await cli('status')).stdout.includes('refused: not-local 2'),
        'gatehouse-tunnel status shows the refusals',
      );

      const receivedBefore = (await wireguardB.peer(keysA.publicKey)).rxBytes;
      const pinged = await ping(network, namespaceA, proxy, {
        count: 3,
        intervalSeconds: 0.2,
        deadlineSeconds: 5,
      });
      assert.ok(pinged.received >= 3, describePing(pinged));
      const receivedAfter = (await wireguardB.peer(keysA.publicKey)).rxBytes;
      assert.ok(
        receivedAfter - receivedBefore >= 3 * 84,
        `B received ${receivedAfter - receivedBefore} bytes from A`,
      );
      assert.equal(
        (await status()).peers.find((peer) => peer.publicKey === decoyKeys.publicKey)?.txPackets,
        0,
        'nothing went to the peer whose AllowedIPs do not cover the proxy range',
      );

      const cleared = await cli('dns-resources');
      assert.equal(cleared.stdout, 'dns resources: none (DNS stub not running)\n');
      assert.deepEqual(nameservers(), [B.tunnel]);
      const addresses = (await privateEtc.run(['ip', 'address', 'show', 'dev', INTERFACE])).stdout;
      assert.doesNotMatch(addresses, /100\.100\.111\.1/, 'the sentinel address is gone');
      assert.deepEqual(await addressesOf(UPSTREAM_NAME), [UPSTREAM_ANSWER]);
      await assert.rejects(
        privateEtc.run(['getent', 'ahostsv4', 'app.corp.test']),
        /exited with 2/,
        'no longer a resource: NXDOMAIN upstream',
      );

      await cli('down');
      const exit = await up.exited;
      assert.equal(exit.code, 0, up.output());
      assert.deepEqual(readFileSync(privateEtc.resolvConf), ORIGINAL_RESOLV_CONF);
    } finally {
      await network.destroy();
      rmSync(work, { recursive: true, force: true });
    }
  },
);
