/**
 * Text from outside (a portal, a peer, a file) made safe for a log line or a terminal: the
 * control characters a terminal would act on (C0, DEL, C1) and the line and paragraph
 * separators become U+FFFD, and text past `maxChars` is cut with an ellipsis, so a hostile
 * name can neither forge a log line nor flood one.
 */
export function printableText(text: string, maxChars = 200): string {
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '\ufffd');
  return clean.length > maxChars ? `${clean.slice(0, maxChars)}…` : clean;
}
