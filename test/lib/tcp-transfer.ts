/**
 * A TCP transfer between two namespaces with a SHA-256 of the bytes on each
 * end, so a test can tell that every byte arrived intact and in order.
 */
import { createInterface } from 'node:readline';
import type { NamespaceProcess, TestNetwork } from './netns.ts';

const ENDPOINT_SCRIPT = new URL('./tcp-transfer-endpoint.ts', import.meta.url).pathname;

export interface TransferredBytes {
  bytes: number;
  sha256: string;
}

export interface TransferResult {
  sent: TransferredBytes;
  received: TransferredBytes;
  seconds: number;
}

export interface TransferOptions {
  senderNamespace: string;
  receiverNamespace: string;
  /** The receiver's address, as the sender reaches it (e.g. its tunnel address). */
  address: string;
  port: number;
  bytes: number;
  timeoutMs: number;
}

/** Resolves with the first stdout line `accept` takes; rejects when the process exits first. */
function firstLine<T>(
  endpoint: NamespaceProcess,
  accept: (line: string) => T | undefined,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const stdout = endpoint.child.stdout;
    if (stdout === null) {
      reject(new Error(`${endpoint.description} has no stdout`));
      return;
    }
    const lines = createInterface({ input: stdout });
    lines.on('line', (line) => {
      const value = accept(line);
      if (value === undefined) return;
      lines.close();
      resolve(value);
    });
    void endpoint.exited.then((exit) =>
      reject(
        new Error(
          `${endpoint.description} exited (${exit.code ?? exit.signal}): ${endpoint.output()}`,
        ),
      ),
    );
  });
}

function reportLine(line: string): TransferredBytes | undefined {
  return line.startsWith('{') ? (JSON.parse(line) as TransferredBytes) : undefined;
}

export async function transferOverTcp(
  network: TestNetwork,
  options: TransferOptions,
): Promise<TransferResult> {
  const started = performance.now();
  const port = `${options.port}`;
  const receiver = network.spawn(options.receiverNamespace, [
    process.execPath,
    ENDPOINT_SCRIPT,
    'receive',
    options.address,
    port,
  ]);
  const receiverReport = firstLine(receiver, reportLine);
  let sender: NamespaceProcess | undefined;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new Error(
            `TCP transfer of ${options.bytes} bytes to ${options.address}:${port} took longer than ` +
              `${options.timeoutMs} ms; receiver: ${receiver.output()} sender: ${sender?.output() ?? ''}`,
          ),
        ),
      options.timeoutMs,
    );
  });
  try {
    await Promise.race([
      firstLine(receiver, (line) => (line === 'listening' ? true : undefined)),
      timedOut,
    ]);
    sender = network.spawn(options.senderNamespace, [
      process.execPath,
      ENDPOINT_SCRIPT,
      'send',
      options.address,
      port,
      `${options.bytes}`,
    ]);
    const [sent, received] = await Promise.race([
      Promise.all([firstLine(sender, reportLine), receiverReport]),
      timedOut,
    ]);
    return { sent, received, seconds: (performance.now() - started) / 1000 };
  } finally {
    clearTimeout(timer);
    receiverReport.catch(() => {});
    await Promise.all([receiver.stop(), sender?.stop()]);
  }
}
