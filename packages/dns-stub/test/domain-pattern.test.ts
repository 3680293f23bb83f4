import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { mostSpecificMatch, parseDomainPattern } from '../src/domain-pattern.ts';

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
    ['a+b.example.com', 'a+b.example.com', true],
    ['a+b.example.com', 'aab.example.com', false],
  ];
  for (const [pattern, name, matches] of cases) {
    void it(`${pattern} ${matches ? 'matches' : 'does not match'} ${name}`, () => {
      assert.equal(parseDomainPattern(pattern).matches(name), matches);
    });
  }

  void it('rejects empty patterns and empty labels', () => {
    assert.throws(() => parseDomainPattern(''), /empty/);
    assert.throws(() => parseDomainPattern('a..example.com'), /empty label/);
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
