import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { TcpMessageReader, frameTcpMessage } from '../src/tcp-framing.ts';

void describe('TCP framing', () => {
  void it('prefixes the length in two big-endian bytes', () => {
    assert.deepEqual([...frameTcpMessage(Buffer.from([9, 8, 7]))], [0, 3, 9, 8, 7]);
    assert.throws(() => frameTcpMessage(Buffer.alloc(0x10000)), /too long/);
  });

  void it('yields messages split across reads, byte by byte', () => {
    const reader = new TcpMessageReader();
    const stream = Buffer.concat([
      frameTcpMessage(Buffer.from('first')),
      frameTcpMessage(Buffer.from('second')),
    ]);
    const messages: string[] = [];
    for (const byte of stream) messages.push(...reader.push(Buffer.from([byte])).map(String));
    assert.deepEqual(messages, ['first', 'second']);
    assert.equal(reader.bufferedBytes, 0);
  });

  void it('yields several messages from one read and keeps an incomplete tail', () => {
    const reader = new TcpMessageReader();
    const stream = Buffer.concat([
      frameTcpMessage(Buffer.from('a')),
      frameTcpMessage(Buffer.from('bc')),
      Buffer.from([0, 5, 1]),
    ]);
    assert.deepEqual(reader.push(stream).map(String), ['a', 'bc']);
    assert.equal(reader.bufferedBytes, 3);
    assert.deepEqual(
      reader.push(Buffer.from([2, 3, 4, 5])).map((message) => [...message]),
      [[1, 2, 3, 4, 5]],
    );
  });

  void it('yields an empty message for a zero length', () => {
    assert.deepEqual(
      new TcpMessageReader().push(Buffer.from([0, 0])).map((message) => message.length),
      [0],
    );
  });
});
