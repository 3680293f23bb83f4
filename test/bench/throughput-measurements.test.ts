import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePingOutput } from '../lib/ping.ts';
import { cpuTicksFromStat } from '../lib/process-usage.ts';
import { parseSocketBuffers } from '../lib/tunnel-peers.ts';
import {
  median,
  parseIperf3Json,
  percentile,
  throughputContractLine,
} from './throughput-measurements.ts';

void test('median and nearest-rank percentile', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.throws(() => median([]), /nothing/);
  const hundred = Array.from({ length: 100 }, (_, i) => 100 - i);
  assert.equal(percentile(hundred, 50), 50);
  assert.equal(percentile(hundred, 99), 99);
  assert.equal(percentile([7], 99), 7);
  assert.equal(percentile([5, 1], 0), 1);
});

void test('iperf3 JSON: receiver side of the sum, error reports refused', () => {
  const report = JSON.stringify({
    end: {
      sum_sent: { bytes: 600, bits_per_second: 480, retransmits: 7 },
      sum_received: { bytes: 500, bits_per_second: 400 },
    },
  });
  assert.deepEqual(parseIperf3Json(report), { bitsPerSecond: 400, bytes: 500, retransmits: 7 });
  assert.throws(
    () => parseIperf3Json('{"error":"unable to connect to server"}'),
    /unable to connect/,
  );
  assert.throws(() => parseIperf3Json('{"end":{}}'), /sum_received/);
});

void test('the contract line', () => {
  assert.equal(
    throughputContractLine(812_345_678, 450_000_000),
    'throughput: gatehouse=0.812 wireguard-go=0.450 ratio=1.81',
  );
});

void test('ping output: counts and per-reply round trips', () => {
  const result = parsePingOutput(
    'PING 10.201.0.2 (10.201.0.2) 56(84) bytes of data.\n' +
      '64 bytes from 10.201.0.2: icmp_seq=1 ttl=64 time=1.99 ms\n' +
      '64 bytes from 10.201.0.2: icmp_seq=3 ttl=64 time=0.437 ms\n\n' +
      '--- 10.201.0.2 ping statistics ---\n' +
      '3 packets transmitted, 2 received, 33.3333% packet loss, time 404ms\n',
  );
  assert.equal(result.transmitted, 3);
  assert.equal(result.received, 2);
  assert.deepEqual(result.roundTripsMs, [1.99, 0.437]);
});

void test('ss -uampn: the skmem buffers of one process', () => {
  const output =
    'UNCONN 0      0      0.0.0.0:51820 0.0.0.0:* users:(("wireguard-go",pid=3587,fd=17))\n' +
    '\t skmem:(r0,rb212992,t0,tb212992,f4096,w0,o0,bl0,d0)\n' +
    'UNCONN 0      0      0.0.0.0:5353 0.0.0.0:* users:(("other",pid=35870,fd=3))\n' +
    '\t skmem:(r0,rb1,t0,tb2,f0,w0,o0,bl0,d0)\n';
  assert.deepEqual(parseSocketBuffers(output, 3587), [
    { localAddress: '0.0.0.0:51820', receiveBytes: 212992, sendBytes: 212992 },
  ]);
});

void test('/proc/<pid>/stat: utime + stime, even with spaces and parentheses in comm', () => {
  const stat = '42 (a (b) c) S 1 42 42 0 -1 4194304 102 0 0 0 250 30 0 0 20 0 3 0 194454';
  assert.equal(cpuTicksFromStat(stat), 280);
});
