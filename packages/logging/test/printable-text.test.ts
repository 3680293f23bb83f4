import assert from 'node:assert/strict';
import { test } from 'node:test';

import { printableText } from '../src/printable-text.ts';

const cases: { name: string; text: string; maxChars?: number; expected: string }[] = [
  {
    name: 'plain text is kept',
    text: 'lab-web (10.232.0.10/32)',
    expected: 'lab-web (10.232.0.10/32)',
  },
  {
    name: 'a newline cannot start a forged line',
    text: 'a\nlevel=info b',
    expected: 'a\ufffdlevel=info b',
  },
  { name: 'an escape sequence is defused', text: '\u001b[31mred', expected: '\ufffd[31mred' },
  { name: 'DEL and C1 controls', text: 'x\u007fy\u0085z\u009b', expected: 'x\ufffdy\ufffdz\ufffd' },
  { name: 'line and paragraph separators', text: 'a\u2028b\u2029c', expected: 'a\ufffdb\ufffdc' },
  { name: 'long text is cut', text: 'abcdef', maxChars: 3, expected: 'abc…' },
  { name: 'text at the limit is whole', text: 'abc', maxChars: 3, expected: 'abc' },
  { name: 'other scripts are kept', text: 'Zürich 東京', expected: 'Zürich 東京' },
];

for (const { name, text, maxChars, expected } of cases) {
  void test(name, () => {
    assert.equal(printableText(text, maxChars), expected);
  });
}
