export { SKIPS_ALLOWED_IN_CI, skipLoudly, skipVerdict } from './skip-policy.ts';
export type { SkipVerdict } from './skip-policy.ts';
