import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LOG_FILE_MODE, LogFile, ROTATED_LOG_FILE_SUFFIX } from '../src/index.ts';

function directory(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-log-file-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

void test('the file is created mode 0640 whatever the umask, and appended to', (t) => {
  const path = join(directory(t), 'tunnel.log');
  writeFileSync(path, 'earlier\n', { mode: 0o666 });
  const previous = process.umask(0);
  try {
    const file = new LogFile(path);
    file.write('later\n');
    file.close();
  } finally {
    process.umask(previous);
  }
  assert.equal(statSync(path).mode & 0o777, LOG_FILE_MODE);
  assert.equal(readFileSync(path, 'utf8'), 'earlier\nlater\n');
});

void test('past its size the file is renamed to .1, replacing the older one, and a new one starts', (t) => {
  const path = join(directory(t), 'tunnel.log');
  const rotated = path + ROTATED_LOG_FILE_SUFFIX;
  const line = (n: number) => `line ${String(n).padStart(3, '0')}\n`; // 9 bytes
  const file = new LogFile(path, 30);
  for (let n = 0; n < 10; n++) file.write(line(n));
  file.close();
  // 3 lines (27 bytes) fit; the 4th would pass 30.
  assert.equal(readFileSync(path, 'utf8'), line(9));
  assert.equal(readFileSync(rotated, 'utf8'), line(6) + line(7) + line(8));
  assert.equal(statSync(rotated).mode & 0o777, LOG_FILE_MODE);
  assert.equal(file.linesLost, 0);
});

void test('a file larger than the bound at start is rotated before the first line', (t) => {
  const path = join(directory(t), 'tunnel.log');
  writeFileSync(path, 'x'.repeat(100));
  const file = new LogFile(path, 50);
  file.write('first\n');
  file.close();
  assert.equal(readFileSync(path, 'utf8'), 'first\n');
  assert.equal(readFileSync(path + ROTATED_LOG_FILE_SUFFIX, 'utf8'), 'x'.repeat(100));
});

void test('a symbolic link, a hard-linked file and a FIFO are refused, and the target is untouched', (t) => {
  const dir = directory(t);
  const target = join(dir, 'precious');
  writeFileSync(target, 'keep\n', { mode: 0o600 });
  const link = join(dir, 'tunnel.log');
  symlinkSync(target, link);
  assert.throws(() => new LogFile(link), /it is a symbolic link/);
  const hard = join(dir, 'hard.log');
  linkSync(target, hard);
  assert.throws(() => new LogFile(hard), /it has 2 hard links/);
  const fifo = join(dir, 'fifo.log');
  execFileSync('mkfifo', [fifo]);
  assert.throws(() => new LogFile(fifo), /it is not a regular file/);
  assert.equal(readFileSync(target, 'utf8'), 'keep\n');
  assert.equal(statSync(target).mode & 0o777, 0o600);
});

void test('while the file cannot be opened again lines are counted as lost; then it comes back', (t) => {
  const dir = join(directory(t), 'logs');
  mkdirSync(dir);
  const path = join(dir, 'tunnel.log');
  const file = new LogFile(path, 10);
  file.write('123456789\n');
  rmSync(dir, { recursive: true });
  file.write('lost: the rotation finds no directory\n');
  file.write('lost too\n');
  assert.equal(file.linesLost, 2);
  mkdirSync(dir);
  file.write('back\n');
  file.close();
  assert.equal(readFileSync(path, 'utf8'), 'back\n');
  assert.equal(file.linesLost, 2);
});
