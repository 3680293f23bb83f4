export {
  ApplyError,
  applyFile,
  formatChange,
  formatPath,
  MAX_APPLY_FILE_BYTES,
  parseApplyText,
  readApplyFile,
  type ApplyIssue,
  type ApplyOptions,
  type ApplyResult,
  type Change,
  type ChangeAction,
} from './apply.ts';
export { applyFileSchema, type ApplyAccount, type ApplyFile } from './schema.ts';
