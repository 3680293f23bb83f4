import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { dnsResourcePatternProblem, normalizeDomainName } from '../src/index.ts';

void describe('dnsResourcePatternProblem', () => {
  const accepted = [
    'app.example.com',
    'APP.Example.COM.',
    'us-east?.example.com',
    '*.example.com',
    'aws*.example.com',
    '**.example.com',
    '_ldap._tcp.corp',
    'build_01.corp',
    'xn--bcher-kva.example',
    `${'a'.repeat(63)}.test`,
  ];
  void it('accepts names and wildcard patterns', () => {
    for (const pattern of accepted) assert.equal(dnsResourcePatternProblem([pattern]), undefined);
    assert.equal(dnsResourcePatternProblem(accepted), undefined);
    assert.equal(dnsResourcePatternProblem([]), undefined);
  });

  const refused: Array<[pattern: string, message: string]> = [
    ['', 'it is empty'],
    ['.', 'it is empty'],
    ['a..example.com', 'label 2 is empty (two dots in a row, or a leading dot)'],
    ['.example.com', 'label 1 is empty (two dots in a row, or a leading dot)'],
    ['app.example.com..', 'label 4 is empty (two dots in a row, or a leading dot)'],
    [
      'app.corp.test,',
      'label 3 "test," has ","; labels hold letters, digits, hyphens, underscores and the wildcards * and ? (internationalized names in their xn-- form)',
    ],
    ['a b.test', 'label 1 "a b" has " "; labels hold'],
    [' app.test', 'label 1 " app" has " "'],
    ['bücher.example', 'label 1 "bücher" has "ü"'],
    ['a+b.example.com', 'label 1 "a+b" has "+"'],
    [
      'http://app.corp.test',
      'it has ":": a DNS resource is a bare name, without a scheme, port or path',
    ],
    ['app.corp.test/admin', 'it has "/"'],
    ['app.corp.test:443', 'it has ":"'],
    ['10.0.0.0/8', 'it has "/"'],
    ['fd00::1', 'it has ":"'],
    ['-app.test', 'label 1 "-app" starts with a hyphen'],
    ['app-.test', 'label 1 "app-" ends with a hyphen'],
    ['app.corp-.test', 'label 2 "corp-" ends with a hyphen'],
    [
      `${'a'.repeat(70)}.test`,
      `label 1 "${'a'.repeat(70)}" is 70 characters long; a label has at most 63`,
    ],
    [
      `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(62)}`,
      'it is 254 characters long; a name has at most 253',
    ],
    [
      'a**.example.com',
      'label 1 "a**" has "**" inside it; "**" stands alone as a whole label (zero or more labels)',
    ],
    ['***.example.com', 'label 1 "***" has "**" inside it'],
    [
      '*',
      'it is only wildcards and would match nearly every name; name the domain, e.g. *.example.com',
    ],
    ['**', 'it is only wildcards'],
    ['**.', 'it is only wildcards'],
    ['?', 'it is only wildcards'],
    ['*.*', 'it is only wildcards'],
    ['**.?*', 'it is only wildcards'],
    ['10.0.0.1', 'its last label is all digits: an IP address is not a DNS resource'],
    ['app.123', 'its last label is all digits'],
  ];
  for (const [pattern, message] of refused) {
    void it(`refuses ${JSON.stringify(pattern)}: ${message}`, () => {
      const problem = dnsResourcePatternProblem([pattern]) ?? '';
      assert.ok(
        problem.startsWith(`DNS resource pattern ${JSON.stringify(pattern)}: ${message}`),
        problem,
      );
    });
  }

  void it('names the first refused pattern of several', () => {
    assert.equal(
      dnsResourcePatternProblem(['app.example.com', 'a..b', '-x.test']),
      'DNS resource pattern "a..b": label 2 is empty (two dots in a row, or a leading dot)',
    );
  });
});

void it('normalizeDomainName lower-cases and drops one trailing dot', () => {
  assert.equal(normalizeDomainName('App.Example.COM.'), 'app.example.com');
  assert.equal(normalizeDomainName('app.example.com'), 'app.example.com');
});
