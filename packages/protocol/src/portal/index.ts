/** The portal protocol: Phoenix framing and the client and gateway channels' messages. */
export * from './common.ts';
export * from './phoenix.ts';
export * from './channel-definition.ts';
export * from './client.ts';
export * from './gateway.ts';
