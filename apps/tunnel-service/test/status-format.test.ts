import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DNS_STUB_REFUSALS,
  DROP_REASONS,
  UNATTRIBUTED_DROP_REASONS,
  type ConnectedTunnelStatus,
  type DropCounters,
  type PortalStatus,
  type UnattributedDropCounters,
} from '@gatehouse/protocol';
import {
  formatBytes,
  formatDnsResources,
  formatHandshakeAge,
  formatStatus,
} from '../src/status-format.ts';
import { NO_DNS_RESOURCES } from '../src/tunnel.ts';

const NOW = 1_700_000_000_000;

void test('handshake ages', () => {
  const cases: [number | null, string][] = [
    [null, 'never'],
    [NOW, '0s ago'],
    [NOW + 5000, '0s ago'],
    [NOW - 59_999, '59s ago'],
    [NOW - 65_000, '1m 5s ago'],
    [NOW - 3 * 3600_000 - 60_000, '3h 1m ago'],
    [NOW - 5 * 86400_000, '5d ago'],
  ];
  for (const [at, expected] of cases)
    assert.equal(formatHandshakeAge(at, NOW), expected, String(at));
});

void test('byte counts', () => {
  const cases: [number, string][] = [
    [0, '0 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [1536 * 1024, '1.5 MiB'],
    [5 * 1024 ** 4, '5.0 TiB'],
  ];
  for (const [bytes, expected] of cases) assert.equal(formatBytes(bytes), expected);
});

void test('the status table lists each peer with its handshake, transfer and non-zero drops', () => {
  const drops = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as DropCounters;
  const unattributed = Object.fromEntries(
    UNATTRIBUTED_DROP_REASONS.map((r) => [r, 0]),
  ) as UnattributedDropCounters;
  const status: ConnectedTunnelStatus = {
    state: 'connected',
    workerRestarts: 0,
    interfaceName: 'wg0',
    listenPort: null,
    cryptoProvider: 'openssl-native',
    peers: [
      {
        publicKey: Buffer.alloc(32, 7).toString('base64'),
        endpoint: null,
        allowedIps: [],
        rxBytes: 2048,
        txBytes: 10,
        rxPackets: 2,
        txPackets: 1,
        drops: { ...drops, replay: 3, 'decrypt-failed': 1 },
        lastHandshakeAt: NOW - 61_000,
        persistentKeepalive: null,
      },
    ],
    noRoute: 0,
    unattributedDrops: { ...unattributed },
    dns: {
      servers: [],
      searchDomains: [],
      reapplied: 0,
      checkFailures: 0,
      applied: false,
      reason: 'not yet',
    },
    dnsResources: NO_DNS_RESOURCES,
    controlSocket: {
      refusedConnections: 0,
      idleClosed: 0,
      slowClosed: 0,
      badRequests: 0,
      refusedRequests: 0,
      handlerErrors: 0,
      internalErrors: 0,
    },
    logLinesLost: 0,
  };
  const lines = formatStatus(status, NOW).split('\n');
  assert.deepEqual(lines.slice(0, 6), [
    'interface: wg0 (connected)',
    '  listening port: none',
    '  crypto: openssl-native',
    '  dns: none (not applied: not yet)',
    '  dns resources: none (DNS stub not running)',
    '  drops without a peer: none',
  ]);
  assert.match(lines[7] ?? '', /^PEER\s+ENDPOINT\s+HANDSHAKE\s+RECEIVED\s+SENT\s+DROPS$/);
  assert.match(
    lines[8] ?? '',
    /^BwcH\S+=\s+\(none\)\s+1m 1s ago\s+2\.0 KiB \/ 2 pkts\s+10 B \/ 1 pkts\s+replay 3, decrypt-failed 1$/,
  );
  assert.equal(
    formatStatus({ ...status, peers: [] }, NOW)
      .split('\n')
      .at(-1),
    'no peers',
  );
  const withoutPeer = {
    ...status,
    noRoute: 4,
    unattributedDrops: { ...unattributed, 'unknown-type': 2, 'handshake-ring-full': 1 },
  };
  assert.equal(
    formatStatus(withoutPeer, NOW).split('\n')[5],
    '  drops without a peer: no-route 4, unknown-type 2, handshake-ring-full 1',
  );
  const refusing = {
    ...status,
    controlSocket: {
      ...status.controlSocket,
      refusedConnections: 3,
      refusedRequests: 2,
      handlerErrors: 1,
    },
  };
  assert.equal(
    formatStatus(refusing, NOW).split('\n')[6],
    '  control socket: refused connections 3, refused requests 2, handler errors 1',
  );
  const trampled = {
    ...status,
    dns: {
      ...status.dns,
      servers: ['10.9.0.1'],
      applied: true as const,
      reapplied: 2,
      checkFailures: 1,
    },
  };
  assert.equal(
    formatStatus(trampled, NOW).split('\n')[3],
    '  dns: 10.9.0.1 (applied; applied again 2x after being overwritten; 1 failed checks)',
  );
  assert.equal(
    formatStatus({ ...status, logLinesLost: 12 }, NOW).split('\n')[6],
    '  log lines lost: 12 (stderr has no reader)',
  );
  assert.equal(
    formatStatus({ ...status, workerRestarts: 3 }, NOW).split('\n')[1],
    '  data worker restarts: 3',
  );
});

void test('without a tunnel: the state, the failure and why, and only non-zero service counters', () => {
  const counters = {
    controlSocket: {
      refusedConnections: 0,
      idleClosed: 0,
      slowClosed: 0,
      badRequests: 2,
      refusedRequests: 0,
      handlerErrors: 0,
      internalErrors: 0,
    },
    logLinesLost: 0,
  };
  const failure = {
    reason: 'engine-failed' as const,
    message: 'data worker 0 died 4 times within 60 s (last: exited with code 1)',
  };
  assert.equal(
    formatStatus({ state: 'disconnected', failure: null, ...counters }, NOW),
    'no tunnel (disconnected)\n  control socket: bad requests 2',
  );
  assert.deepEqual(formatStatus({ state: 'disconnected', failure, ...counters }, NOW).split('\n'), [
    'no tunnel (disconnected)',
    '  last failure (engine-failed): data worker 0 died 4 times within 60 s (last: exited with code 1)',
    '  control socket: bad requests 2',
  ]);
  assert.deepEqual(
    formatStatus({ state: 'disconnecting', interfaceName: 'wg0', failure, ...counters }, NOW)
      .split('\n')
      .slice(0, 2),
    [
      'interface: wg0 (disconnecting)',
      '  failure (engine-failed): data worker 0 died 4 times within 60 s (last: exited with code 1)',
    ],
  );
  assert.equal(
    formatStatus({ state: 'connecting', interfaceName: 'wg0', ...counters, logLinesLost: 1 }, NOW),
    'interface: wg0 (connecting)\n  control socket: bad requests 2\n  log lines lost: 1 (stderr has no reader)',
  );
});

void test('DNS resources: the patterns, then where the stub answers and forwards', () => {
  const running = {
    patterns: ['app.corp.example', '*.svc.corp.example'],
    stubRunning: true,
    stubAddresses: ['100.100.111.1', 'fd00:2021:1111:8000:100:100:111:1'],
    upstreams: ['10.9.0.1'],
  };
  assert.equal(
    formatDnsResources(running),
    'app.corp.example, *.svc.corp.example (DNS stub on 100.100.111.1, ' +
      'fd00:2021:1111:8000:100:100:111:1; upstreams: 10.9.0.1)',
  );
  assert.equal(
    formatDnsResources({ ...running, upstreams: [] }),
    'app.corp.example, *.svc.corp.example (DNS stub on 100.100.111.1, ' +
      'fd00:2021:1111:8000:100:100:111:1; upstreams: none)',
  );
  assert.equal(
    formatDnsResources({ ...NO_DNS_RESOURCES, patterns: ['app.corp.example'] }),
    'app.corp.example (DNS stub not running)',
  );
});

void test("DNS resources: the stub's non-zero counters, compactly", () => {
  const refused = Object.fromEntries(DNS_STUB_REFUSALS.map((reason) => [reason, 0])) as Record<
    (typeof DNS_STUB_REFUSALS)[number],
    number
  >;
  const running = {
    patterns: ['*.corp.example'],
    stubRunning: true,
    stubAddresses: ['100.100.111.1'],
    upstreams: ['10.9.0.1'],
    stubCounters: { assignments: 0, quarantined: 0, reclaimed: 0, refused },
  };
  assert.equal(
    formatDnsResources(running),
    '*.corp.example (DNS stub on 100.100.111.1; upstreams: 10.9.0.1)',
  );
  assert.equal(
    formatDnsResources({
      ...running,
      stubCounters: {
        assignments: 12,
        quarantined: 0,
        reclaimed: 3,
        refused: { ...refused, 'not-local': 2, 'rate-limited': 5 },
      },
    }),
    '*.corp.example (DNS stub on 100.100.111.1; upstreams: 10.9.0.1; ' +
      'proxy addresses for 12 names, 3 reclaimed; refused: not-local 2, rate-limited 5)',
  );
});

void test('a portal tunnel: the portal connection, who is signed in, the resources and their sites', () => {
  const counters = {
    controlSocket: {
      refusedConnections: 0,
      idleClosed: 0,
      slowClosed: 0,
      badRequests: 0,
      refusedRequests: 0,
      handlerErrors: 0,
      internalErrors: 0,
    },
    logLinesLost: 0,
  };
  const portal: PortalStatus = {
    url: 'https://portal.example',
    connection: 'connected',
    identity: { accountSlug: 'acme', actorName: 'Alice' },
    resources: [
      {
        id: 'r1',
        name: 'lab-web',
        type: 'cidr',
        address: '10.50.0.0/24',
        siteName: 'hq',
        siteStatus: 'online',
        authorized: true,
      },
      {
        id: 'r2',
        name: 'app\u001b[31m',
        type: 'dns',
        address: '*.app.corp',
        siteName: 'hq',
        siteStatus: 'offline',
        authorized: false,
      },
      {
        id: 'r3',
        name: 'Internet',
        type: 'internet',
        address: null,
        siteName: null,
        siteStatus: 'unknown',
        authorized: false,
      },
    ],
    counters: { 'session.messages.init': 1, 'session.malformed': 2, pushesLost: 1 },
  };
  assert.deepEqual(
    formatStatus(
      { state: 'connecting', interfaceName: 'gatehouse0', ...counters, portal },
      NOW,
    ).split('\n'),
    [
      'interface: gatehouse0 (connecting)',
      '  portal: https://portal.example (connected)',
      '  signed in as Alice (account acme)',
      '  portal drops: malformed pushes 2, pushes unanswered 1',
      '',
      'RESOURCE  TYPE      ADDRESS       SITE  SITE STATUS  ACCESS',
      'lab-web   cidr      10.50.0.0/24  hq    online       authorized',
      'app?[31m  dns       *.app.corp    hq    offline      -',
      'Internet  internet  -             -     unknown      -',
    ],
  );

  const signedOut = formatStatus(
    {
      state: 'disconnected',
      failure: {
        reason: 'sign-in-required',
        message: 'sign-in required: the portal refused the token',
      },
      ...counters,
      portal: {
        url: 'https://portal.example',
        connection: 'signed-out',
        resources: [],
        lastError: 'the portal refused the token (HTTP 401 invalid_token)',
        counters: {},
      },
    },
    NOW,
  );
  assert.deepEqual(signedOut.split('\n'), [
    'no tunnel (disconnected)',
    '  last failure (sign-in-required): sign-in required: the portal refused the token',
    '  portal: https://portal.example (signed-out: the portal refused the token (HTTP 401 invalid_token))',
    '',
    'no resources',
  ]);
});
