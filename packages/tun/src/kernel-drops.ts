/**
 * What the kernel itself dropped on a TUN interface, from its netdev
 * statistics in sysfs (the counters `ip -s link` prints). For a TUN device
 * "transmit" is the kernel handing a packet to our queue reader and
 * "receive" is a packet we wrote.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface TunKernelDrops {
  /** Packets for the tunnel dropped because our TUN queue was full (tx_dropped). */
  txDropped: number;
  /** Packets we wrote that the kernel dropped (rx_dropped). */
  rxDropped: number;
}

const SYS_CLASS_NET = '/sys/class/net';

/** Undefined when the interface's statistics cannot be read (gone, or sysfs of another namespace). */
export function readTunKernelDrops(
  interfaceName: string,
  sysClassNet = SYS_CLASS_NET,
): TunKernelDrops | undefined {
  const statistics = join(sysClassNet, interfaceName, 'statistics');
  try {
    return {
      txDropped: readCounter(join(statistics, 'tx_dropped')),
      rxDropped: readCounter(join(statistics, 'rx_dropped')),
    };
  } catch {
    return undefined;
  }
}

function readCounter(path: string): number {
  const value = Number(readFileSync(path, 'utf8').trim());
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${path}: not a counter`);
  return value;
}
