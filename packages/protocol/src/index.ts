export * from './ipc.ts';
export * from './tunnel-status.ts';
export * from './dns-resource-pattern.ts';
export * from './portal/index.ts';
