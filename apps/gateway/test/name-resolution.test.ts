import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { test } from 'node:test';

import { parseAddress } from '@gatehouse/addresses';

import { outcome, systemNameResolution, type FamilyAnswer } from '../src/name-resolution.ts';

const none: FamilyAnswer = { ok: true, addresses: [], ttl: undefined };

const outcomes: { name: string; v4: FamilyAnswer; v6: FamilyAnswer; expected: unknown }[] = [
  {
    name: 'both families: the smallest TTL',
    v4: { ok: true, addresses: ['10.0.0.5', '10.0.0.6'], ttl: 300 },
    v6: { ok: true, addresses: ['2001:db8::5'], ttl: 60 },
    expected: { ok: true, ipv4: ['10.0.0.5', '10.0.0.6'], ipv6: ['2001:db8::5'], ttlSeconds: 60 },
  },
  {
    name: 'IPv4 only (no AAAA records)',
    v4: { ok: true, addresses: ['10.0.0.5'], ttl: 30 },
    v6: none,
    expected: { ok: true, ipv4: ['10.0.0.5'], ipv6: [], ttlSeconds: 30 },
  },
  {
    name: 'one family answered, the other timed out: what was answered',
    v4: { ok: true, addresses: ['10.0.0.5'], ttl: 30 },
    v6: { ok: false, code: 'ETIMEOUT' },
    expected: { ok: true, ipv4: ['10.0.0.5'], ipv6: [], ttlSeconds: 30 },
  },
  {
    name: 'no records at all',
    v4: none,
    v6: none,
    expected: { ok: false, problem: 'app.example.com has no A or AAAA records' },
  },
  {
    name: 'a failure and no records',
    v4: { ok: false, code: 'ESERVFAIL' },
    v6: none,
    expected: { ok: false, problem: 'resolving app.example.com failed (ESERVFAIL)' },
  },
];

for (const { name, v4, v6, expected } of outcomes) {
  void test(`outcome: ${name}`, () => {
    assert.deepEqual(outcome('app.example.com', v4, v6), expected);
  });
}

/** A DNS server on loopback answering A and AAAA from `records` (NXDOMAIN for other names). */
async function dnsServer(
  records: Record<string, { a?: string[]; aaaa?: string[]; ttl: number }>,
): Promise<{ server: Socket; address: string }> {
  const server = createSocket('udp4');
  server.on('message', (query, from) => {
    let offset = 12;
    const labels: string[] = [];
    while (query[offset]! !== 0) {
      const length = query[offset]!;
      labels.push(query.subarray(offset + 1, offset + 1 + length).toString('ascii'));
      offset += length + 1;
    }
    const questionEnd = offset + 5;
    const type = query.readUInt16BE(offset + 1);
    const record = records[labels.join('.').toLowerCase()];
    const addresses = record === undefined ? [] : ((type === 1 ? record.a : record.aaaa) ?? []);
    const header = Buffer.alloc(12);
    query.copy(header, 0, 0, 2);
    header.writeUInt16BE(0x8180 | (record === undefined ? 3 : 0), 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(addresses.length, 6);
    const answers = addresses.map((text) => {
      const { address } = parseAddress(text);
      const answer = Buffer.alloc(12);
      answer.writeUInt16BE(0xc00c, 0);
      answer.writeUInt16BE(type, 2);
      answer.writeUInt16BE(1, 4);
      answer.writeUInt32BE(record!.ttl, 6);
      answer.writeUInt16BE(address.length, 10);
      return Buffer.concat([answer, address]);
    });
    server.send(
      Buffer.concat([header, query.subarray(12, questionEnd), ...answers]),
      from.port,
      from.address,
    );
  });
  await new Promise<void>((resolve) => server.bind(0, '127.0.0.1', resolve));
  return { server, address: `127.0.0.1:${server.address().port}` };
}

void test('systemNameResolution asks A and AAAA and takes the records’ TTLs', async (t) => {
  const { server, address } = await dnsServer({
    'app.example.com': { a: ['10.0.0.5', '10.0.0.6'], aaaa: ['2001:db8::5'], ttl: 42 },
    'v4only.example.com': { a: ['10.0.0.7'], ttl: 7 },
  });
  t.after(() => server.close());
  const resolve = systemNameResolution({ servers: [address], timeoutMs: 1_000, tries: 1 });

  assert.deepEqual(await resolve('app.example.com'), {
    ok: true,
    ipv4: ['10.0.0.5', '10.0.0.6'],
    ipv6: ['2001:db8::5'],
    ttlSeconds: 42,
  });
  assert.deepEqual(await resolve('v4only.example.com'), {
    ok: true,
    ipv4: ['10.0.0.7'],
    ipv6: [],
    ttlSeconds: 7,
  });
  assert.deepEqual(await resolve('missing.example.com'), {
    ok: false,
    problem: 'missing.example.com has no A or AAAA records',
  });
});
