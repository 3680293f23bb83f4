export {
  APPLICATION_DNS_CANARY,
  DEFAULT_ADDRESSES_PER_NAME,
  DEFAULT_CLIENT_QUERIES_PER_SECOND,
  DEFAULT_CLIENT_QUERY_BURST,
  DEFAULT_MAX_ASSIGNMENTS_PER_RESOURCE,
  DEFAULT_PROXY_ADDRESS_IDLE_MS,
  DEFAULT_PROXY_ADDRESS_QUARANTINE_MS,
  DNS_STUB_REFUSALS,
  DEFAULT_FORWARD_TIMEOUT_MS,
  DEFAULT_IPV4_PROXY_RANGE,
  DEFAULT_IPV6_PROXY_RANGE,
  DEFAULT_SENTINEL_ADDRESSES,
  DEFAULT_TTL_SECONDS,
  DEFAULT_UPSTREAM_ATTEMPT_TIMEOUT_MS,
  DnsStub,
  SENTINEL_IPV4_RANGE,
  SENTINEL_IPV6_RANGE,
} from './stub.ts';
export type {
  DnsResource,
  DnsStubOptions,
  DnsStubRefusal,
  DnsStubStats,
  ForwardEvent,
  ForwardRequest,
  ProxyAddressFamilies,
  QueryOutcome,
  Upstream,
} from './stub.ts';
export { plainUpstreamSockets, startDnsStubServer, systemLocalAddresses } from './server.ts';
export type {
  BoundAddress,
  DnsStubServer,
  DnsStubServerOptions,
  ListenAddress,
  LocalAddressTest,
  UpstreamSocketFactory,
} from './server.ts';
export { frameTcpMessage, TcpMessageReader } from './tcp-framing.ts';
export { mostSpecificMatch, parseDomainPattern } from './domain-pattern.ts';
export type { DomainPattern } from './domain-pattern.ts';
export type { ProxyAssignment } from './proxy-addresses.ts';
