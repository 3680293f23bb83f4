import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createStderrLogger } from '../src/stderr-logger.ts';

void test('after the stream breaks (EPIPE) lines are counted as lost, and nothing throws', async () => {
  const written: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (written.length === 0) {
        written.push(chunk.toString());
        callback();
      } else {
        callback(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
      }
    },
  });
  const logger = createStderrLogger({ debug: false }, stream);
  logger.info('first');
  logger.warn('second: its write fails');
  await new Promise((resolve) => setImmediate(resolve));
  logger.error('third');
  logger.info('fourth');
  logger.debug('not logged at all without --verbose');
  assert.deepEqual(written, ['gatehouse-tunnel: info: first\n']);
  assert.equal(logger.linesLost, 3);
});
