export { formatAddress, isAddress, parseAddress } from './address.ts';
export type { Address, AddressFamily } from './address.ts';
export { formatEndpoint, parseEndpoint } from './endpoint.ts';
export type { Endpoint } from './endpoint.ts';
export {
  formatPrefix,
  hasHostBits,
  normalizePrefix,
  parsePrefix,
  prefixContains,
} from './prefix.ts';
export type { Prefix } from './prefix.ts';
