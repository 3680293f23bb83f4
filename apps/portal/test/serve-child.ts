/**
 * A portal in its own process for serve-signals.test.ts: runServe on the database named by
 * argv[2], 127.0.0.1 port 0, signals handled; prints `{"port": N}` once listening, and exits 0
 * once stopped.
 */
import { runServe } from '../src/serve.ts';

const portal = await runServe({
  database: process.argv[2] as string,
  listen: '127.0.0.1:0',
  logger: {
    debug: () => {},
    info: (m) => process.stderr.write(`${m}\n`),
    warn: (m) => process.stderr.write(`${m}\n`),
    error: (m) => process.stderr.write(`${m}\n`),
  },
});
process.stdout.write(`${JSON.stringify({ port: portal.port })}\n`);
await portal.stopped;
process.exit(0);
