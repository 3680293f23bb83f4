export * from './device.ts';
export * from './keys.ts';
export * from './constants.ts';
export * from './crypto/index.ts';
export * from './worker-contract.ts';
export * from './transport.ts';
export { ReplayWindow, REPLAY_WINDOW_SIZE, REPLAY_WINDOW_WORDS } from './replay-window.ts';
export { tai64n, isLaterTimestamp } from './tai64n.ts';
export { messageType } from './messages.ts';
