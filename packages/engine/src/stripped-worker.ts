/**
 * Worker threads whose TypeScript the parent thread strips.
 *
 * Node strips types with a WebAssembly build of swc that every thread
 * instantiates for itself the first time it loads a .ts module: about
 * 20 MB of resident memory per thread, for as long as the thread lives.
 * A worker started here loads its .ts modules through a synchronous load
 * hook that hands the source to the parent thread, which strips it with
 * its own instance (it runs one anyway) while the worker waits on a shared
 * counter of replies. Stripping only blanks out types, so line and column numbers in
 * stack traces stay those of the .ts files.
 */
import { stripTypeScriptTypes } from 'node:module';
import { MessageChannel, Worker } from 'node:worker_threads';
import type { WorkerOptions } from 'node:worker_threads';

const LOADER = '__strippedWorkerLoader';

// Plain JavaScript: it runs before any TypeScript can be loaded.
const BOOTSTRAP = `
const { registerHooks } = require('node:module');
const { receiveMessageOnPort, workerData } = require('node:worker_threads');
const { port, replies, entry } = workerData.${LOADER};
const word = new Int32Array(replies);
const formats = { 'module-typescript': 'module', 'commonjs-typescript': 'commonjs' };
// The parent posts the reply, then counts it in the shared word. Reading the
// word before looking for the message means no reply can slip by unnoticed,
// however the wait returns.
function reply() {
  for (;;) {
    const seen = Atomics.load(word, 0);
    const received = receiveMessageOnPort(port);
    if (received !== undefined) return received.message;
    Atomics.wait(word, 0, seen);
  }
}
registerHooks({
  load(url, context, nextLoad) {
    const loaded = nextLoad(url, context);
    const format = formats[loaded.format];
    if (format === undefined) return loaded;
    port.postMessage(String(loaded.source));
    const { source, error } = reply();
    if (error !== undefined) throw new Error(url + ': ' + error);
    return { format, source, shortCircuit: true };
  },
});
import(entry);
`;

/** As `new Worker(entry, options)` for a .ts entry; `workerData` must be an object. */
export function startStrippedWorker(
  entry: URL,
  options: WorkerOptions & { workerData: object },
): Worker {
  const channel = new MessageChannel();
  const replies = new SharedArrayBuffer(4);
  const word = new Int32Array(replies);
  channel.port1.on('message', (source: string) => {
    let reply: { source: string } | { error: string };
    try {
      reply = { source: stripTypeScriptTypes(source) };
    } catch (error) {
      reply = { error: error instanceof Error ? error.message : String(error) };
    }
    channel.port1.postMessage(reply);
    Atomics.add(word, 0, 1);
    Atomics.notify(word, 0);
  });
  channel.port1.unref();
  const worker = new Worker(BOOTSTRAP, {
    ...options,
    eval: true,
    workerData: {
      ...options.workerData,
      [LOADER]: { port: channel.port2, replies, entry: entry.href },
    },
    transferList: [...(options.transferList ?? []), channel.port2],
  });
  worker.once('exit', () => channel.port1.close());
  return worker;
}
