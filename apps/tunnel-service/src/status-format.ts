/**
 * `gatehouse-tunnel status` for people: the connection state; when
 * connected, the interface, then one table row per peer.
 */

import type {
  ConnectedTunnelStatus,
  ConnectionFailure,
  ControlSocketCounters,
  DnsResourcesStatus,
  DnsStubCounters,
  PeerStatus,
  TunnelStatus,
} from '@gatehouse/protocol';

export function formatStatus(status: TunnelStatus, now: number): string {
  switch (status.state) {
    case 'disconnected':
      return [
        'no tunnel (disconnected)',
        ...failureLine(status.failure, 'last failure'),
        ...serviceLines(status),
      ].join('\n');
    case 'connecting':
      return [`interface: ${status.interfaceName} (connecting)`, ...serviceLines(status)].join(
        '\n',
      );
    case 'disconnecting':
      return [
        `interface: ${status.interfaceName} (disconnecting)`,
        ...failureLine(status.failure, 'failure'),
        ...serviceLines(status),
      ].join('\n');
    case 'connected':
      return formatConnected(status, now);
  }
}

function failureLine(failure: ConnectionFailure | null, label: string): string[] {
  return failure === null ? [] : [`  ${label} (${failure.reason}): ${failure.message}`];
}

/** The service's own counters, only the non-zero ones. */
function serviceLines(status: TunnelStatus): string[] {
  return [
    ...controlSocketLine(status.controlSocket),
    ...(status.logLinesLost === 0
      ? []
      : [`  log lines lost: ${status.logLinesLost} (stderr has no reader)`]),
  ];
}

function formatConnected(status: ConnectedTunnelStatus, now: number): string {
  const lines = [
    `interface: ${status.interfaceName} (connected)`,
    ...(status.workerRestarts === 0 ? [] : [`  data worker restarts: ${status.workerRestarts}`]),
    `  listening port: ${status.listenPort ?? 'none'}`,
    `  crypto: ${status.cryptoProvider}`,
    `  dns: ${formatDns(status.dns)}`,
    `  dns resources: ${formatDnsResources(status.dnsResources)}`,
    `  drops without a peer: ${formatDrops({ 'no-route': status.noRoute, ...status.unattributedDrops })}`,
    ...serviceLines(status),
    '',
  ];
  if (status.peers.length === 0) return [...lines, 'no peers'].join('\n');
  const header = ['PEER', 'ENDPOINT', 'HANDSHAKE', 'RECEIVED', 'SENT', 'DROPS'];
  const rows = status.peers.map((peer) => peerRow(peer, now));
  return [...lines, ...table([header, ...rows])].join('\n');
}

export function formatHandshakeAge(lastHandshakeAt: number | null, now: number): string {
  if (lastHandshakeAt === null) return 'never';
  const seconds = Math.max(0, Math.floor((now - lastHandshakeAt) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${seconds % 60}s ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h ${minutes % 60}m ago`;
  return `${Math.floor(hours / 24)}d ago`;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function peerRow(peer: PeerStatus, now: number): string[] {
  return [
    peer.publicKey,
    peer.endpoint ?? '(none)',
    formatHandshakeAge(peer.lastHandshakeAt, now),
    `${formatBytes(peer.rxBytes)} / ${peer.rxPackets} pkts`,
    `${formatBytes(peer.txBytes)} / ${peer.txPackets} pkts`,
    formatDrops(peer.drops),
  ];
}

function formatDrops(drops: Readonly<Record<string, number>>): string {
  const nonZero = Object.entries(drops).filter(([, count]) => count > 0);
  if (nonZero.length === 0) return 'none';
  return nonZero.map(([reason, count]) => `${reason} ${count}`).join(', ');
}

const CONTROL_SOCKET_LABELS: Record<keyof ControlSocketCounters, string> = {
  refusedConnections: 'refused connections',
  idleClosed: 'closed idle',
  slowClosed: 'closed slow',
  badRequests: 'bad requests',
  refusedRequests: 'refused requests',
  handlerErrors: 'handler errors',
  internalErrors: 'internal errors',
};

/** Only when something was refused, closed or caught. */
function controlSocketLine(counters: ControlSocketCounters): string[] {
  const nonZero = Object.entries(counters).filter(([, count]) => count > 0);
  if (nonZero.length === 0) return [];
  const parts = nonZero.map(
    ([name, count]) => `${CONTROL_SOCKET_LABELS[name as keyof ControlSocketCounters]} ${count}`,
  );
  return [`  control socket: ${parts.join(', ')}`];
}

function formatDns(dns: ConnectedTunnelStatus['dns']): string {
  const parts = [];
  if (dns.servers.length > 0) parts.push(dns.servers.join(', '));
  if (dns.searchDomains.length > 0) parts.push(`search ${dns.searchDomains.join(', ')}`);
  const settings = parts.length > 0 ? parts.join('; ') : 'none';
  const watch = [
    ...(dns.reapplied === 0 ? [] : [`applied again ${dns.reapplied}x after being overwritten`]),
    ...(dns.checkFailures === 0 ? [] : [`${dns.checkFailures} failed checks`]),
  ].map((part) => `; ${part}`);
  return dns.applied
    ? `${settings} (applied${watch.join('')})`
    : `${settings} (not applied: ${dns.reason}${watch.join('')})`;
}

/**
 * The patterns, then whether the stub runs, where, where it forwards other
 * names, and its non-zero counters.
 */
export function formatDnsResources(resources: DnsResourcesStatus): string {
  const patterns = resources.patterns.length > 0 ? resources.patterns.join(', ') : 'none';
  if (!resources.stubRunning) return `${patterns} (DNS stub not running)`;
  const upstreams = resources.upstreams.length > 0 ? resources.upstreams.join(', ') : 'none';
  const counters = resources.stubCounters ? formatStubCounters(resources.stubCounters) : [];
  return (
    `${patterns} (DNS stub on ${resources.stubAddresses.join(', ')}; upstreams: ${upstreams}` +
    `${counters.map((part) => `; ${part}`).join('')})`
  );
}

function formatStubCounters(counters: DnsStubCounters): string[] {
  const { assignments, quarantined, reclaimed, refused } = counters;
  const addresses = [
    ...(assignments > 0 ? [`proxy addresses for ${assignments} names`] : []),
    ...(reclaimed > 0 ? [`${reclaimed} reclaimed`] : []),
    ...(quarantined > 0 ? [`${quarantined} quarantined`] : []),
  ];
  const nonZero = Object.entries(refused).filter(([, count]) => count > 0);
  const refusals = nonZero.map(([reason, count]) => `${reason} ${count}`).join(', ');
  return [
    ...(addresses.length > 0 ? [addresses.join(', ')] : []),
    ...(nonZero.length > 0 ? [`refused: ${refusals}`] : []),
  ];
}

function table(rows: string[][]): string[] {
  const widths =
    rows[0]?.map((_, column) => Math.max(...rows.map((row) => row[column]?.length ?? 0))) ?? [];
  return rows.map((row) =>
    row
      .map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)))
      .join('  '),
  );
}
