import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  NotAnIcmpEcho,
  buildIcmpEcho,
  echoReplyFor,
  echoReplyMismatch,
  internetChecksum,
  parseIcmpEcho,
} from './lib/icmp-echo.ts';
import type { IcmpEcho } from './lib/icmp-echo.ts';

const request: IcmpEcho = {
  kind: 'request',
  source: '10.99.0.2',
  destination: '10.99.0.1',
  identifier: 0x1234,
  sequence: 7,
  payload: new TextEncoder().encode('gatehouse interop'),
};

void describe('icmp-echo', () => {
  void test('checksum of the textbook IPv4 header example', () => {
    const header = Uint8Array.from(Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex'));
    assert.equal(internetChecksum(header), 0xb861);
    header[10] = 0xb8;
    header[11] = 0x61;
    assert.equal(internetChecksum(header), 0);
  });

  void test('odd-length data is padded with a zero byte', () => {
    assert.equal(internetChecksum(Uint8Array.of(0x01)), ~0x0100 & 0xffff);
  });

  void test('builds an IPv4 echo request whose fields and checksums are right', () => {
    const packet = buildIcmpEcho(request);
    assert.equal(packet.length, 20 + 8 + request.payload.length);
    assert.equal(packet[0], 0x45);
    assert.equal((packet[2]! << 8) | packet[3]!, packet.length);
    assert.equal(packet[9], 1);
    assert.deepEqual([...packet.subarray(12, 20)], [10, 99, 0, 2, 10, 99, 0, 1]);
    assert.equal(packet[20], 8);
    assert.equal(internetChecksum(packet.subarray(0, 20)), 0);
    assert.equal(internetChecksum(packet.subarray(20)), 0);
    const parsed = parseIcmpEcho(packet);
    assert.deepEqual({ ...parsed, ttl: undefined }, { ...request, ttl: undefined });
    assert.equal(parsed.ttl, 64);
  });

  void test('parses a reply with trailing padding and matches it to its request', () => {
    const reply = buildIcmpEcho(echoReplyFor(request));
    const padded = new Uint8Array(reply.length + 11);
    padded.set(reply);
    const parsed = parseIcmpEcho(padded);
    assert.equal(parsed.kind, 'reply');
    assert.equal(echoReplyMismatch(request, parsed), undefined);
  });

  void test('names what differs between a reply and its request', () => {
    const reply = echoReplyFor(request);
    assert.match(echoReplyMismatch(request, { ...reply, sequence: 8 }) ?? '', /sequence 8 != 7/);
    assert.match(echoReplyMismatch(request, { ...reply, identifier: 1 }) ?? '', /identifier/);
    assert.match(echoReplyMismatch(request, { ...reply, source: '10.99.0.9' }) ?? '', /reply from/);
    assert.match(
      echoReplyMismatch(request, { ...reply, payload: Uint8Array.of(1) }) ?? '',
      /payload differs/,
    );
    assert.match(echoReplyMismatch(request, request) ?? '', /not an echo reply/);
  });

  void test('rejects corrupted and foreign packets', () => {
    const packet = buildIcmpEcho(request);
    const flip = (index: number): Uint8Array => {
      const copy = packet.slice();
      copy[index] = copy[index]! ^ 0x01;
      return copy;
    };
    assert.throws(() => parseIcmpEcho(flip(8)), /bad IPv4 header checksum/);
    assert.throws(() => parseIcmpEcho(flip(30)), /bad ICMP checksum/);
    assert.throws(() => parseIcmpEcho(packet.subarray(0, 30)), /truncated/);
    assert.throws(() => parseIcmpEcho(packet.subarray(0, 10)), NotAnIcmpEcho);
    const udp = packet.slice();
    udp[9] = 17;
    udp[10] = 0;
    udp[11] = 0;
    const checksum = internetChecksum(udp.subarray(0, 20));
    udp[10] = checksum >> 8;
    udp[11] = checksum & 0xff;
    assert.throws(() => parseIcmpEcho(udp), /IP protocol 17/);
  });
});
