// placeholder until the gateway shell lands
console.error('gatehouse-gateway: not built yet');
process.exitCode = 1;
