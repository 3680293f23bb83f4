/**
 * The syntax of a DNS resource's name or pattern (`app.example.com`,
 * `us-east?.example.com`, `*.example.com`, `**.example.com`; the DNS stub
 * matches them), checked the same way by everyone who handles one: the GUI
 * and the CLI before they send it, the service before it applies it. Checked
 * strictly, so that a typo is refused rather than becoming a resource that
 * never (or always) matches.
 */

/** RFC 1035: 255 octets on the wire, i.e. 253 characters written out without the trailing dot. */
const MAX_NAME_LENGTH = 253;
const MAX_LABEL_LENGTH = 63;

/** DNS names compare case-insensitively (RFC 4343), and a trailing dot changes nothing. */
export function normalizeDomainName(name: string): string {
  return (name.endsWith('.') ? name.slice(0, -1) : name).toLowerCase();
}

/** Why the first refused pattern is refused, naming it; undefined when every pattern is fine. */
export function dnsResourcePatternProblem(patterns: readonly string[]): string | undefined {
  for (const pattern of patterns) {
    const problem = normalizedPatternProblem(normalizeDomainName(pattern));
    if (problem !== undefined) return `DNS resource pattern ${JSON.stringify(pattern)}: ${problem}`;
  }
  return undefined;
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
function normalizedPatternProblem(text: string): string | undefined {
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
