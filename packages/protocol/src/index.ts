export * from './ipc.ts';
export * from './tunnel-status.ts';
