/**
 * A Phoenix channel client: the sans-IO state machine (PhoenixChannel) and its WebSocket shell
 * (PhoenixSocket).
 */
export {
  DEFAULT_BACKOFF,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_MAX_BUFFERED_PUSHES,
  PhoenixChannel,
  RECONNECT_CLOSE_CODE,
  isInvalidTokenProblem,
} from './channel.ts';
export type {
  BackoffOptions,
  ChannelEffect,
  ChannelEvent,
  ChannelState,
  ChannelStats,
  ConnectFailure,
  PhoenixChannelOptions,
} from './channel.ts';
export { PhoenixSocket, retryAfterMs } from './shell.ts';
export type { PhoenixSocketOptions } from './shell.ts';
export {
  CA_FILE_ENV,
  CaFileError,
  SYSTEM_CA_BUNDLE,
  pemCertificates,
  portalTrustedCas,
  readCaFile,
  resolvePortalCa,
  systemCaCertificates,
} from './trust.ts';
export type { PortalCa, PortalCaInput } from './trust.ts';
