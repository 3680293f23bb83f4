export { checkPeerUpdate, DROP_REASONS, WireGuardDevice } from './device.ts';
export type { DeviceEvent, Endpoint, Instant } from './device.ts';
export { decodeKey, encodeKey, generateKeyPair } from './keys.ts';
export type { KeyPair } from './keys.ts';
export {
  MESSAGE_HANDSHAKE_COOKIE,
  MESSAGE_HANDSHAKE_COOKIE_SIZE,
  MESSAGE_HANDSHAKE_INITIATION,
  MESSAGE_HANDSHAKE_INITIATION_SIZE,
  MESSAGE_HANDSHAKE_RESPONSE,
  MESSAGE_HANDSHAKE_RESPONSE_SIZE,
  MESSAGE_TRANSPORT_DATA,
  MESSAGE_TRANSPORT_HEADER_SIZE,
  MESSAGE_TRANSPORT_MIN_SIZE,
} from './constants.ts';
export { AEAD_TAG_LENGTH, selectCryptoProvider } from './crypto/index.ts';
export type { CryptoProvider, CryptoProviderName } from './crypto/index.ts';
export {
  createSharedTransportMemory,
  Doorbell,
  endpointAddressLength,
  endpointPort,
  PeerSlots,
} from './worker-contract.ts';
export type { SharedTransportMemory } from './worker-contract.ts';
export {
  sealedLength,
  TRANSPORT_DECRYPT_FAILED,
  TRANSPORT_EXPIRED,
  TRANSPORT_NO_SESSION,
  TRANSPORT_REPLAY,
  TRANSPORT_UNKNOWN_RECEIVER,
  TransportPath,
} from './transport.ts';
export type { OpenedFrom } from './transport.ts';
export { messageType } from './messages.ts';
export { hasValidMac1, mac1Key } from './cookie.ts';
