import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { formatIpAddress, parseIpAddress, parseIpRange, rangeContains } from '../src/ip-address.ts';
import { addressFromReverseName, reverseNameFor } from '../src/reverse-name.ts';

void describe('IP addresses', () => {
  const canonical: Array<[input: string, output: string]> = [
    ['100.96.0.1', '100.96.0.1'],
    ['FD00:2021:1111:8000:0:0:0:1', 'fd00:2021:1111:8000::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['::', '::'],
    ['::ffff:192.0.2.1', '::ffff:192.0.2.1'],
    ['::FFFF:c000:201', '::ffff:192.0.2.1'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2:3:4:5:6'],
    ['2001:db8::0:1', '2001:db8::1'],
  ];
  for (const [input, output] of canonical) {
    void it(`prints ${input} as ${output}`, () =>
      assert.equal(formatIpAddress(parseIpAddress(input)), output));
  }

  void it('parses ranges and rejects host bits and bad prefixes', () => {
    const range = parseIpRange('fd00:2021:1111:8000::/107');
    assert.ok(rangeContains(range, parseIpAddress('fd00:2021:1111:8000::1f:ffff')));
    assert.ok(!rangeContains(range, parseIpAddress('fd00:2021:1111:8000::20:0')));
    assert.throws(() => parseIpRange('100.96.0.1/11'), /host bits/);
    assert.throws(() => parseIpRange('100.96.0.0/33'), /prefix/);
    assert.throws(() => parseIpRange('100.96.0.0'), /prefix/);
  });

  void it('round-trips reverse names and rejects malformed ones', () => {
    for (const text of ['100.96.0.7', 'fd00:2021:1111:8000::abc']) {
      const address = parseIpAddress(text);
      assert.deepEqual(addressFromReverseName(reverseNameFor(address)), address);
    }
    assert.equal(addressFromReverseName('1.2.3.in-addr.arpa'), undefined);
    assert.equal(addressFromReverseName('256.0.0.1.in-addr.arpa'), undefined);
    assert.equal(addressFromReverseName('01.0.0.1.in-addr.arpa'), undefined);
    assert.equal(addressFromReverseName('example.com'), undefined);
  });
});
