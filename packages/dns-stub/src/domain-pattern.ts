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
 *
 * Patterns are checked strictly, so that a typo is refused rather than
 * becoming a resource that never (or always) matches, by the protocol's
 * `dnsResourcePatternProblem`, the check the GUI, the CLI and the service
 * make too.
 */

import { dnsResourcePatternProblem, normalizeDomainName } from '@gatehouse/protocol';

export interface DomainPattern {
  /** The pattern as given, lower-cased and without a trailing dot. */
  text: string;
  /** Lower numbers are more specific and win when several patterns match. */
  specificity: PatternSpecificity;
  matches(name: string): boolean;
}

/** A match with the work it took: `labelSteps` (label × pattern part cells) and `characterSteps`. */
export interface PatternMatch {
  matches: boolean;
  labelSteps: number;
  characterSteps: number;
}

/** Exact names first, then `?`, then `*`, then `**` (Firezone's order). */
export type PatternSpecificity = 0 | 1 | 2 | 3;

/** A whole-label `**`, or one label's text with its `*` and `?`. */
type PatternPart = { kind: 'any-labels' } | { kind: 'label'; text: string; wildcards: boolean };

/** Throws an error that names the pattern and what is wrong with it. */
export function parseDomainPattern(pattern: string): DomainPattern {
  const { text, labels, parts } = compilePattern(pattern);
  return {
    text,
    specificity: specificityOf(labels),
    matches: (name) => matchParts(parts, name).matches,
  };
}

/**
 * `parseDomainPattern(pattern).matches(name)` with the work it took, for the
 * tests and the benchmark of the matcher's bounds (not part of the package's API).
 */
export function matchWithSteps(pattern: string, name: string): PatternMatch {
  return matchParts(compilePattern(pattern).parts, name);
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

function compilePattern(pattern: string): {
  text: string;
  labels: string[];
  parts: PatternPart[];
} {
  const problem = dnsResourcePatternProblem([pattern]);
  if (problem !== undefined) throw new Error(problem);
  const text = normalizeDomainName(pattern);
  const labels = text.split('.');
  return { text, labels, parts: labels.map(patternPart) };
}

function matchParts(parts: readonly PatternPart[], name: string): PatternMatch {
  const normalized = normalizeDomainName(name);
  const steps = { matches: false, labelSteps: 0, characterSteps: 0 };
  if (normalized !== '') steps.matches = matchLabels(parts, normalized.split('.'), steps);
  return steps;
}

function patternPart(label: string): PatternPart {
  if (label === '**') return { kind: 'any-labels' };
  return { kind: 'label', text: label, wildcards: /[*?]/.test(label) };
}

/**
 * Whether `labels` match `parts`, in time linear in labels × parts (a
 * recursive search over the ways several `**` can split the labels is
 * exponential: 100 labels against six `**` took seconds). `reached[j]`: the
 * labels so far match the first j parts.
 */
function matchLabels(
  parts: readonly PatternPart[],
  labels: readonly string[],
  steps: PatternMatch,
): boolean {
  let reached = new Uint8Array(parts.length + 1);
  reached[0] = 1;
  for (let index = 0; index < parts.length; index++) {
    steps.labelSteps++;
    if (reached[index] === 1 && parts[index]!.kind === 'any-labels') reached[index + 1] = 1;
  }
  for (const label of labels) {
    const next = new Uint8Array(parts.length + 1);
    let any = false;
    for (let index = 0; index < parts.length; index++) {
      steps.labelSteps++;
      const part = parts[index]!;
      if (part.kind === 'label') {
        if (reached[index] === 1 && labelMatches(part, label, steps)) next[index + 1] = 1;
        continue;
      }
      // `**` takes this label and stays, or (zero labels) passes on what reached it.
      if (reached[index] === 1) next[index] = 1;
      if (next[index] === 1) next[index + 1] = 1;
    }
    for (const reach of next) any ||= reach === 1;
    if (!any) return false;
    reached = next;
  }
  return reached[parts.length] === 1;
}

/**
 * `*` and `?` inside one label, greedily: on a mismatch, the last `*` takes
 * one more character. At most (label + 1) × (pattern + 1) comparisons, where
 * a regular expression with several `.*` backtracks exponentially.
 */
function labelMatches(
  part: { text: string; wildcards: boolean },
  label: string,
  steps: PatternMatch,
): boolean {
  const pattern = part.text;
  if (!part.wildcards) {
    steps.characterSteps += Math.min(label.length, pattern.length) + 1;
    return label === pattern;
  }
  let at = 0;
  let patternAt = 0;
  let starAt = -1;
  let starLabelAt = 0;
  while (at < label.length) {
    steps.characterSteps++;
    const wanted = pattern[patternAt];
    if (wanted === '*') {
      starAt = patternAt++;
      starLabelAt = at;
    } else if (wanted === '?' || (wanted !== undefined && wanted === label[at])) {
      patternAt++;
      at++;
    } else if (starAt >= 0) {
      patternAt = starAt + 1;
      at = ++starLabelAt;
    } else {
      return false;
    }
  }
  while (pattern[patternAt] === '*') {
    steps.characterSteps++;
    patternAt++;
  }
  return patternAt === pattern.length;
}
