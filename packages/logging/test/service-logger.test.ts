import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createServiceLogger, LogFile, prefixedLogger } from '../src/index.ts';

function collecting(options: { failAfter?: number; isTTY?: boolean } = {}) {
  const written: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (options.failAfter !== undefined && written.length >= options.failAfter) {
        callback(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
        return;
      }
      written.push(chunk.toString());
      callback();
    },
  });
  return { written, stream: Object.assign(stream, { isTTY: options.isTTY ?? false }) };
}

void test('stderr gets one readable line per message at the configured level', () => {
  const { written, stream } = collecting();
  const logger = createServiceLogger({ name: 'gatehouse-tunnel', debug: false, stream });
  logger.debug('not without --verbose');
  logger.info('tunnel wg0 is up');
  logger.warn('careful');
  logger.error('broken\nsecond line');
  assert.deepEqual(written, [
    'gatehouse-tunnel: info: tunnel wg0 is up\n',
    'gatehouse-tunnel: warning: careful\n',
    'gatehouse-tunnel: error: broken\nsecond line\n',
  ]);
  createServiceLogger({ name: 'x', debug: true, stream }).debug('now');
  assert.equal(written.at(-1), 'x: debug: now\n');
});

void test('on a terminal each readable line starts with the local time', () => {
  const { written, stream } = collecting({ isTTY: true });
  createServiceLogger({ name: 'gatehouse-tunnel', debug: false, stream }).info('hello');
  assert.match(written[0] ?? '', /^\d\d:\d\d:\d\d\.\d{3} gatehouse-tunnel: info: hello\n$/);
});

void test('after the stream breaks (EPIPE) lines are counted as lost, and nothing throws', async () => {
  const { written, stream } = collecting({ failAfter: 1 });
  const logger = createServiceLogger({ name: 'gatehouse-tunnel', debug: false, stream });
  logger.info('first');
  logger.warn('second: its write fails');
  await new Promise((resolve) => setImmediate(resolve));
  logger.error('third');
  logger.info('fourth');
  logger.debug('not logged at all without --verbose');
  assert.deepEqual(written, ['gatehouse-tunnel: info: first\n']);
  assert.equal(logger.linesLost, 3);
});

void test('the log file gets JSON lines with time, level, pid and message; stderr still gets its lines', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-log-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'tunnel.log');
  const { written, stream } = collecting();
  const logger = createServiceLogger({
    name: 'gatehouse-tunnel',
    debug: false,
    stream,
    file: new LogFile(path),
  });
  const before = Date.now();
  logger.info('tunnel wg0 is up; "quoted"');
  logger.debug('below the level');
  logger.error('two\nlines');
  logger.close();
  const lines = readFileSync(path, 'utf8').split('\n');
  assert.equal(lines.pop(), '');
  const records = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  assert.deepEqual(
    records.map(({ level, msg, pid, name }) => ({ level, msg, pid, name })),
    [
      {
        level: 'info',
        msg: 'tunnel wg0 is up; "quoted"',
        pid: process.pid,
        name: 'gatehouse-tunnel',
      },
      { level: 'error', msg: 'two\nlines', pid: process.pid, name: 'gatehouse-tunnel' },
    ],
  );
  const time = Date.parse(String(records[0]?.['time']));
  assert.ok(time >= before - 1000 && time <= Date.now(), `time ${String(records[0]?.['time'])}`);
  assert.equal(written.length, 2);
  assert.equal(logger.linesLost, 0);
});

void test('a prefixed logger puts its prefix before every message, at every level', () => {
  const lines: string[] = [];
  const base = {
    debug: (message: string) => lines.push(`debug ${message}`),
    info: (message: string) => lines.push(`info ${message}`),
    warn: (message: string) => lines.push(`warn ${message}`),
    error: (message: string) => lines.push(`error ${message}`),
  };
  const engine = prefixedLogger(base, 'engine: ');
  engine.debug('a');
  engine.info('b');
  engine.warn('c');
  engine.error('d');
  assert.deepEqual(lines, [
    'debug engine: a',
    'info engine: b',
    'warn engine: c',
    'error engine: d',
  ]);
});
