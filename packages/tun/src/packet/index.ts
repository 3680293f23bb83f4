export { flowHash } from './flow.ts';
export { IpPacket } from './ip-packet.ts';
export {
  Ipv6HeaderChain,
  IPV6_MAX_EXTENSION_HEADERS,
  isExtensionHeader,
  walkIpv6HeaderChain,
} from './ipv6-extension-headers.ts';
export {
  fixIpv4HeaderChecksum,
  fixTransportChecksum,
  internetChecksum,
  ipv4HeaderChecksum,
  onesComplementSum,
  pseudoHeaderSum,
  transportChecksum,
  transportChecksumField,
  updateChecksum16,
  updateChecksum32,
  verifyIpv4HeaderChecksum,
  verifyTransportChecksum,
} from './checksum.ts';
export {
  applyDecapsulationEcn,
  ECN_CE,
  ECN_ECT_0,
  ECN_ECT_1,
  ECN_MASK,
  ECN_NOT_ECT,
  ecnForDecapsulation,
  ecnForEncapsulation,
  getEcn,
  setEcn,
} from './ecn.ts';
export type { Ecn, EcnDecapsulation } from './ecn.ts';
export * from './virtio-net-header.ts';
export { completePartialChecksum, gsoSplit } from './gso-split.ts';
export type { WritableLengths } from './gso-split.ts';
export { GroCoalescer } from './gro-coalesce.ts';
export type { GroOptions } from './gro-coalesce.ts';
export { copyBytes } from './copy-bytes.ts';
export * from './ip-protocol.ts';
export * from './header-layout.ts';
