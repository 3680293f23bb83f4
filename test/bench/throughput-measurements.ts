/**
 * The arithmetic and parsing behind `npm run bench:throughput`: iperf3's
 * JSON report, medians and percentiles, and the contract line other checks read.
 */

export interface Iperf3Result {
  /** What the receiving side counted, in bit/s. */
  bitsPerSecond: number;
  /** Bytes the receiving side counted. */
  bytes: number;
  /** TCP retransmissions the sender saw; undefined when iperf3 could not tell. */
  retransmits: number | undefined;
}

interface Iperf3Sum {
  bytes?: number;
  bits_per_second?: number;
  retransmits?: number;
}

interface Iperf3Report {
  error?: string;
  end?: { sum_sent?: Iperf3Sum; sum_received?: Iperf3Sum };
}

/** Parses `iperf3 -J` output (a single stream or the sum of `-P N` streams). */
export function parseIperf3Json(text: string): Iperf3Result {
  const report = JSON.parse(text) as Iperf3Report;
  if (report.error !== undefined) throw new Error(`iperf3: ${report.error}`);
  const received = report.end?.sum_received;
  if (received?.bits_per_second === undefined || received.bytes === undefined) {
    throw new Error('iperf3 report has no end.sum_received');
  }
  return {
    bitsPerSecond: received.bits_per_second,
    bytes: received.bytes,
    retransmits: report.end?.sum_sent?.retransmits,
  };
}

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('median of nothing');
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

/** Nearest-rank percentile (p in 0–100): a value that was actually measured. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) throw new Error('percentile of nothing');
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] as number;
}

export function gigabitsPerSecond(bitsPerSecond: number): number {
  return bitsPerSecond / 1e9;
}

/**
 * The benchmark's last line, which other checks parse: both figures single
 * stream upload, Gatehouse ⇄ Gatehouse and wireguard-go ⇄ wireguard-go.
 */
export function throughputContractLine(
  gatehouseBitsPerSecond: number,
  wireguardGoBitsPerSecond: number,
): string {
  const gatehouse = gigabitsPerSecond(gatehouseBitsPerSecond);
  const wireguardGo = gigabitsPerSecond(wireguardGoBitsPerSecond);
  const ratio = gatehouse / wireguardGo;
  return `throughput: gatehouse=${gatehouse.toFixed(3)} wireguard-go=${wireguardGo.toFixed(3)} ratio=${ratio.toFixed(2)}`;
}
