import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { dnsResourcePatternProblem } from '@gatehouse/protocol';
import { matchWithSteps, mostSpecificMatch, parseDomainPattern } from '../src/domain-pattern.ts';

void describe('parseDomainPattern', () => {
  const cases: Array<[pattern: string, name: string, matches: boolean]> = [
    ['app.example.com', 'app.example.com', true],
    ['app.example.com', 'APP.Example.COM.', true],
    ['app.example.com', 'example.com', false],
    ['app.example.com', 'x.app.example.com', false],
    ['*.example.com', 'a.example.com', true],
    ['*.example.com', 'example.com', false],
    ['*.example.com', 'a.b.example.com', false],
    ['**.example.com', 'example.com', true],
    ['**.example.com', 'a.example.com', true],
    ['**.example.com', 'a.b.c.example.com', true],
    ['**.example.com', 'badexample.com', false],
    ['**.example.com', 'example.org', false],
    ['us-east?.example.com', 'us-east1.example.com', true],
    ['us-east?.example.com', 'us-east12.example.com', false],
    ['us-east?.example.com', 'us-east.example.com', false],
    ['?.example.com', 'a.example.com', true],
    ['?.example.com', 'ab.example.com', false],
    ['aws*.example.com', 'aws.example.com', true],
    ['aws*.example.com', 'aws-eu.example.com', true],
    ['aws*.example.com', 'www.example.com', false],
    ['foo.*.example.com', 'foo.bar.example.com', true],
    ['foo.*.example.com', 'foo.bar.baz.example.com', false],
    ['foo.**.example.com', 'foo.bar.baz.example.com', true],
    ['foo.**.example.com', 'foo.example.com', true],
    ['_ldap._tcp.corp.example', '_ldap._tcp.corp.example', true],
    ['app.example.com.', 'app.example.com', true],
    ['APP.Example.COM', 'app.example.com', true],
    ['xn--bcher-kva.example', 'xn--bcher-kva.example', true],
    ['a-*.example.com', 'a-b.example.com', true],
    ['ap?.example.com', 'ap-.example.com', true],
    ['app.**', 'app.example.com', true],
    [`${'a'.repeat(63)}.example`, `${'a'.repeat(63)}.example`, true],
    [
      `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}.`,
      `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`,
      true,
    ],
    ['**.a.**.b.example', 'a.b.example', true],
    ['**.a.**.b.example', 'x.a.y.z.b.example', true],
    ['**.a.**.b.example', 'x.b.a.example', false],
    ['**.a.**.**.b.example', 'a.a.a.b.b.example', true],
    ['a.**.**.b', 'a.b', true],
    ['a.**.**.b', 'a.c', false],
    ['**.x.**', 'x', true],
    ['*a*b*.example', 'ab.example', true],
    ['*a*b*.example', 'xxaxxbxx.example', true],
    ['*a*b*.example', 'ba.example', false],
    ['a*a*a*b.example', 'aaaaaab.example', true],
    ['a*a*a*b.example', 'aaaaaa.example', false],
    ['*?.example', 'a.example', true],
    ['*?.example', 'example', false],
    ['?*?.example', 'a.example', false],
    ['a*b.example', 'ab.example', true],
  ];
  for (const [pattern, name, matches] of cases) {
    void it(`${pattern} ${matches ? 'matches' : 'does not match'} ${name}`, () => {
      assert.equal(parseDomainPattern(pattern).matches(name), matches);
    });
  }

  void it("refuses a pattern with the protocol's check and message", () => {
    assert.throws(
      () => parseDomainPattern('app..example.com'),
      new Error(dnsResourcePatternProblem(['app..example.com'])),
    );
    assert.throws(
      () => parseDomainPattern('**'),
      /DNS resource pattern "\*\*": it is only wildcards/,
    );
  });
});

void describe('mostSpecificMatch', () => {
  const resources = ['**.example.com', '*.example.com', 'ap?.example.com', 'app.example.com'].map(
    (text) => ({
      id: text,
      pattern: parseDomainPattern(text),
    }),
  );
  const cases: Array<[name: string, winner: string | undefined]> = [
    ['app.example.com', 'app.example.com'],
    ['apx.example.com', 'ap?.example.com'],
    ['web.example.com', '*.example.com'],
    ['a.b.example.com', '**.example.com'],
    ['example.com', '**.example.com'],
    ['example.org', undefined],
  ];
  for (const [name, winner] of cases) {
    void it(`picks ${winner ?? 'nothing'} for ${name}`, () => {
      assert.equal(mostSpecificMatch(resources, name)?.id, winner);
    });
  }
});

void describe('matching takes time linear in labels × pattern parts', () => {
  void it('counts steps through the module, not through the patterns the product uses', () => {
    assert.deepEqual(Object.keys(parseDomainPattern('*.example.com')).sort(), [
      'matches',
      'specificity',
      'text',
    ]);
    assert.equal(matchWithSteps('*.example.com', 'a.example.com').matches, true);
  });

  void it('100 labels against six ** labels: at most labels × parts + parts label steps', () => {
    const labels = Array<string>(100).fill('a');
    const { matches, labelSteps, characterSteps } = matchWithSteps(
      '**.a.**.a.**.a.**.a.**.a.**.b.example',
      `${labels.join('.')}.example`,
    );
    assert.equal(matches, false);
    const parts = 13;
    const nameLabels = 101;
    assert.ok(
      labelSteps <= (nameLabels + 1) * parts,
      `${labelSteps} label steps for ${nameLabels} labels × ${parts} parts`,
    );
    assert.ok(characterSteps <= nameLabels * parts * 3, `${characterSteps} character steps`);
  });

  void it('a label with many * against a 63-character label: at most (63 + 1) × (pattern + 1) character steps', () => {
    const label = `${'*a'.repeat(30)}b`;
    const { matches, characterSteps } = matchWithSteps(
      `${label}.example`,
      `${'a'.repeat(63)}.example`,
    );
    assert.equal(matches, false);
    assert.ok(
      characterSteps <= 64 * (label.length + 1) + 'example'.length + 1,
      `${characterSteps} character steps`,
    );
  });
});
