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
 * becoming a resource that never (or always) matches: see
 * `domainPatternProblem`.
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

/** RFC 1035: 255 octets on the wire, i.e. 253 characters written out without the trailing dot. */
const MAX_NAME_LENGTH = 253;
const MAX_LABEL_LENGTH = 63;

/** Throws an error that names the pattern and what is wrong with it. */
export function parseDomainPattern(pattern: string): DomainPattern {
  const text = normalizeDomainName(pattern);
  const problem = domainPatternProblem(text);
  if (problem !== undefined)
    throw new Error(`DNS resource pattern ${JSON.stringify(pattern)}: ${problem}`);
  const labels = text.split('.');
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

/**
 * What is wrong with a normalized pattern, or undefined. Labels hold letters,
 * digits, hyphens (not first or last) and the wildcards; underscores too,
 * because DNS allows them (RFC 2181) and names such as `_ldap._tcp.corp` or
 * legacy `build_01.corp` occur in internal zones, and no one types one by
 * mistake. A pattern needs a label that is not only wildcards, so that it can
 * never match every name (`**`) or every name of a length (`*`, `*.*`), and
 * an all-digit last label is refused as an IP address (RFC 3696 §2).
 */
function domainPatternProblem(text: string): string | undefined {
  if (text === '') return 'it is empty';
  const separator = /[/:]/.exec(text)?.[0];
  if (separator !== undefined)
    return `it has ${JSON.stringify(separator)}: a DNS resource is a bare name, without a scheme, port or path`;
  const labels = text.split('.');
  for (const [index, label] of labels.entries()) {
    const problem = labelProblem(label);
    if (problem !== undefined) return `label ${index + 1} ${problem}`;
  }
  if (text.length > MAX_NAME_LENGTH)
    return `it is ${text.length} characters long; a name has at most ${MAX_NAME_LENGTH}`;
  if (labels.every((label) => /^[*?]+$/.test(label)))
    return 'it is only wildcards and would match nearly every name; name the domain, e.g. *.example.com';
  if (/^[0-9]+$/.test(labels.at(-1) ?? ''))
    return 'its last label is all digits: an IP address is not a DNS resource';
  return undefined;
}

function labelProblem(label: string): string | undefined {
  if (label === '') return 'is empty (two dots in a row, or a leading dot)';
  const quoted = JSON.stringify(label);
  const character = /[^a-z0-9_*?-]/.exec(label)?.[0];
  if (character !== undefined) {
    return (
      `${quoted} has ${JSON.stringify(character)}; labels hold letters, digits, hyphens, ` +
      'underscores and the wildcards * and ? (internationalized names in their xn-- form)'
    );
  }
  if (label.length > MAX_LABEL_LENGTH)
    return `${quoted} is ${label.length} characters long; a label has at most ${MAX_LABEL_LENGTH}`;
  if (label.startsWith('-')) return `${quoted} starts with a hyphen`;
  if (label.endsWith('-')) return `${quoted} ends with a hyphen`;
  if (label !== '**' && label.includes('**'))
    return `${quoted} has "**" inside it; "**" stands alone as a whole label (zero or more labels)`;
  return undefined;
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
  // Checked labels hold no regular-expression syntax besides the wildcards.
  const source = label.replaceAll('*', '.*').replaceAll('?', '.');
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
