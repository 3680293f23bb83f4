/**
 * `gatehouse-tunnel status` for people: the connection state; for a portal
 * tunnel, the portal connection, who is signed in and a table of the
 * resources with their sites' status; when connected, the interface, then
 * one table row per peer.
 */

import type {
  ConnectedTunnelStatus,
  ConnectionFailure,
  ControlSocketCounters,
  DnsResourcesStatus,
  DnsStubCounters,
  PeerStatus,
  PortalStatus,
  TunnelStatus,
} from '@gatehouse/protocol';

export function formatStatus(status: TunnelStatus, now: number): string {
  switch (status.state) {
    case 'disconnected':
      return [
        'no tunnel (disconnected)',
        ...failureLine(status.failure, 'last failure'),
        ...portalLines(status.portal),
        ...serviceLines(status),
        ...resourceTable(status.portal),
      ].join('\n');
    case 'connecting':
      return [
        `interface: ${status.interfaceName} (connecting)`,
        ...portalLines(status.portal),
        ...serviceLines(status),
        ...resourceTable(status.portal),
      ].join('\n');
    case 'disconnecting':
      return [
        `interface: ${status.interfaceName} (disconnecting)`,
        ...failureLine(status.failure, 'failure'),
        ...portalLines(status.portal),
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

/** The portal connection with its last error, who is signed in, and what it dropped. */
function portalLines(portal: PortalStatus | undefined): string[] {
  if (portal === undefined) return [];
  const error =
    portal.lastError === undefined || portal.connection === 'connected'
      ? ''
      : `: ${shown(portal.lastError)}`;
  const identity = portal.identity;
  return [
    `  portal: ${shown(portal.url)} (${portal.connection}${error})`,
    ...(identity === undefined
      ? []
      : [`  signed in as ${shown(identity.actorName)} (account ${shown(identity.accountSlug)})`]),
    ...portalProblemsLine(portal.counters),
  ];
}

/** Portal counters that mean something was dropped, refused or failed; only the non-zero ones. */
const PORTAL_PROBLEM_LABELS: Readonly<Record<string, string>> = {
  'session.malformed': 'malformed pushes',
  'session.unknownEvents': 'unknown pushes',
  'session.invalidResources': 'invalid resources',
  'session.refusedResources': 'resources over the limit',
  'session.effectsDropped': 'session effects dropped',
  'session.internalErrors': 'session errors',
  'channel.malformedFrames': 'malformed frames',
  'channel.droppedPushes': 'pushes not sent',
  pushesLost: 'pushes unanswered',
  joinRefusals: 'joins refused',
  applyFailures: 'changes not applied',
  internalErrors: 'errors',
};

function portalProblemsLine(counters: Readonly<Record<string, number>>): string[] {
  const parts = Object.entries(PORTAL_PROBLEM_LABELS).flatMap(([key, label]) => {
    const count = counters[key] ?? 0;
    return count > 0 ? [`${label} ${count}`] : [];
  });
  return parts.length === 0 ? [] : [`  portal drops: ${parts.join(', ')}`];
}

/** The portal's resources, one row each, after a blank line. */
function resourceTable(portal: PortalStatus | undefined): string[] {
  if (portal === undefined) return [];
  if (portal.resources.length === 0) return ['', 'no resources'];
  const header = ['RESOURCE', 'TYPE', 'ADDRESS', 'SITE', 'SITE STATUS', 'ACCESS'];
  const rows = portal.resources.map((resource) => [
    shown(resource.name),
    resource.type,
    shown(resource.address ?? '-'),
    shown(resource.siteName ?? '-'),
    resource.siteStatus,
    resource.authorized ? 'authorized' : '-',
  ]);
  return ['', ...table([header, ...rows])];
}

/** Text from the portal, safe for a terminal. */
function shown(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

function formatConnected(status: ConnectedTunnelStatus, now: number): string {
  const lines = [
    `interface: ${status.interfaceName} (connected)`,
    ...portalLines(status.portal),
    ...(status.workerRestarts === 0 ? [] : [`  data worker restarts: ${status.workerRestarts}`]),
    `  listening port: ${status.listenPort ?? 'none'}`,
    `  crypto: ${status.cryptoProvider}`,
    `  dns: ${formatDns(status.dns)}`,
    `  dns resources: ${formatDnsResources(status.dnsResources)}`,
    `  drops without a peer: ${formatDrops({ 'no-route': status.noRoute, ...status.unattributedDrops })}`,
    ...serviceLines(status),
    '',
  ];
  const resources = resourceTable(status.portal);
  if (status.peers.length === 0) return [...lines, 'no peers', ...resources].join('\n');
  const header = ['PEER', 'ENDPOINT', 'HANDSHAKE', 'RECEIVED', 'SENT', 'DROPS'];
  const rows = status.peers.map((peer) => peerRow(peer, now));
  return [...lines, ...table([header, ...rows]), ...resources].join('\n');
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
