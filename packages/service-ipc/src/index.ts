export { ServiceServer, RequestError, SOCKET_MODE, CONTROL_SOCKET_LIMITS } from './server.ts';
export type {
  ControlSocketLimits,
  RequestContext,
  RequestHandlers,
  ServiceServerOptions,
} from './server.ts';
export { ServiceClient, ServiceClientError, DEFAULT_CLIENT_TIMEOUT_MS } from './client.ts';
export type { ClientErrorCode, ServiceClientOptions } from './client.ts';
export { rootOnly } from './peer-credentials.ts';
export type { Authorization, AuthorizationPolicy, PeerCredentials } from './peer-credentials.ts';
export { SocketInUseError } from './socket-claim.ts';
