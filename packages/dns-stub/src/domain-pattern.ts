/**
 * Names of DNS resources, with the wildcard semantics Firezone documents for
 * its DNS resources:
 *
 * - `app.example.com` matches exactly that name;
 * - `?` matches exactly one character inside a label (`us-east?.example.com`
 *   matches `us-east1.example.com`, not `us-east12.example.com`);
 * - `*` matches zero or more characters inside one label, so a whole-label
 *   `*.example.com` matches `a.example.com` but neither `example.com` nor
 *   `a.b.example.com`, and `aws*.example.com` matches `aws.example.com`;
 * - a whole-label `**` matches zero or more labels: `**.example.com` matches
 *   `example.com`, `a.example.com` and `a.b.example.com`.
 *
 * Matching is case-insensitive (RFC 4343) and ignores a trailing dot.
 */

export interface DomainPattern {
  /** The pattern as given, lower-cased and without a trailing dot. */
  text: string;
  /** Lower numbers are more specific and win when several patterns match. */
  specificity: PatternSpecificity;
  matches(name: string): boolean;
}

/** Exact names first, then `?`, then `*`, then `**` (Firezone's order). */
export type PatternSpecificity = 0 | 1 | 2 | 3;

type LabelMatcher = { kind: 'any-labels' } | { kind: 'label'; test: (label: string) => boolean };

export function parseDomainPattern(pattern: string): DomainPattern {
  const text = normalizeDomainName(pattern);
  if (text === '') throw new Error('empty DNS resource pattern');
  const labels = text.split('.');
  if (labels.some((label) => label === ''))
    throw new Error(`empty label in DNS resource pattern ${JSON.stringify(pattern)}`);
  const matchers = labels.map(labelMatcher);
  return {
    text,
    specificity: specificityOf(labels),
    matches: (name) => {
      const normalized = normalizeDomainName(name);
      return normalized !== '' && matchLabels(matchers, 0, normalized.split('.'), 0);
    },
  };
}

export function normalizeDomainName(name: string): string {
  return (name.endsWith('.') ? name.slice(0, -1) : name).toLowerCase();
}

/** The most specific of `patterns` that matches `name`; ties go to the longer pattern, then the earlier one. */
export function mostSpecificMatch<T extends { pattern: DomainPattern }>(
  candidates: readonly T[],
  name: string,
): T | undefined {
  let best: T | undefined;
  for (const candidate of candidates) {
    if (!candidate.pattern.matches(name)) continue;
    if (best === undefined || isMoreSpecific(candidate.pattern, best.pattern)) best = candidate;
  }
  return best;
}

function isMoreSpecific(a: DomainPattern, b: DomainPattern): boolean {
  if (a.specificity !== b.specificity) return a.specificity < b.specificity;
  return a.text.length > b.text.length;
}

function specificityOf(labels: readonly string[]): PatternSpecificity {
  if (labels.includes('**')) return 3;
  if (labels.some((label) => label.includes('*'))) return 2;
  if (labels.some((label) => label.includes('?'))) return 1;
  return 0;
}

function labelMatcher(label: string): LabelMatcher {
  if (label === '**') return { kind: 'any-labels' };
  if (!label.includes('*') && !label.includes('?'))
    return { kind: 'label', test: (candidate) => candidate === label };
  const source = [...label]
    .map((character) => {
      if (character === '*') return '.*';
      if (character === '?') return '.';
      return character.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
    })
    .join('');
  const expression = new RegExp(`^${source}$`, 's');
  return { kind: 'label', test: (candidate) => expression.test(candidate) };
}

function matchLabels(
  matchers: readonly LabelMatcher[],
  matcherIndex: number,
  labels: readonly string[],
  labelIndex: number,
): boolean {
  const matcher = matchers[matcherIndex];
  if (matcher === undefined) return labelIndex === labels.length;
  if (matcher.kind === 'any-labels') {
    for (let next = labelIndex; next <= labels.length; next += 1) {
      if (matchLabels(matchers, matcherIndex + 1, labels, next)) return true;
    }
    return false;
  }
  const label = labels[labelIndex];
  return (
    label !== undefined &&
    matcher.test(label) &&
    matchLabels(matchers, matcherIndex + 1, labels, labelIndex + 1)
  );
}
