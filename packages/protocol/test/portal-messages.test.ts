import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { test } from 'node:test';
import {
  type ClientToPortalEvent,
  type ClientToPortalMessage,
  type GatewayToPortalEvent,
  type GatewayToPortalMessage,
  MAX_PORTAL_FRAME_CHARS,
  type PortalParseResult,
  type PortalToClientEvent,
  type PortalToClientMessage,
  type PortalToGatewayEvent,
  type PortalToGatewayMessage,
  clientToPortalSchemas,
  encodeClientToPortal,
  encodeGatewayToPortal,
  encodePhoenixFrame,
  encodePortalToClient,
  encodePortalToGateway,
  gatewayToPortalSchemas,
  parseClientJoin,
  parseClientToPortal,
  parseGatewayJoin,
  parseGatewayToPortal,
  parsePhoenixFrame,
  parsePhoenixReply,
  parsePortalToClient,
  parsePortalToGateway,
  portalToClientSchemas,
  portalToGatewaySchemas,
  portalFiltersFromRanges,
  rangesFromPortalFilters,
} from '../src/index.ts';

type Direction =
  | 'portal_to_client'
  | 'client_to_portal'
  | 'portal_to_gateway'
  | 'gateway_to_portal'
  | 'client_join'
  | 'gateway_join'
  | 'phoenix';

interface Sample {
  name: string;
  description: string;
  direction: Direction;
  expect: { ignoredResources?: number; invalidResources?: number; reason?: string };
  frame: {
    topic: string;
    event: string;
    payload: unknown;
    ref: string | number | null;
    join_ref?: string;
  };
}

const SAMPLES_DIR = new URL('./portal-samples/', import.meta.url);
const samples: Sample[] = readdirSync(SAMPLES_DIR)
  .filter((file) => file.endsWith('.json'))
  .sort()
  .map((file) => ({
    name: file,
    ...(JSON.parse(readFileSync(new URL(file, SAMPLES_DIR), 'utf8')) as Omit<Sample, 'name'>),
  }));

const parsers = {
  portal_to_client: parsePortalToClient,
  client_to_portal: parseClientToPortal,
  portal_to_gateway: parsePortalToGateway,
  gateway_to_portal: parseGatewayToPortal,
} as const;

function parseJoin(
  direction: 'client_join' | 'gateway_join',
  payload: unknown,
): PortalParseResult<unknown> {
  const result = direction === 'client_join' ? parseClientJoin(payload) : parseGatewayJoin(payload);
  return result.ok
    ? {
        ok: true,
        message: { event: 'phx_join', payload: result.payload },
        ignoredResources: 0,
        invalidResources: [],
      }
    : { ok: false, kind: 'malformed', problem: result.problem };
}

function parseBy(
  direction: Exclude<Direction, 'phoenix'>,
  event: string,
  payload: unknown,
): PortalParseResult<unknown> {
  if (direction === 'client_join' || direction === 'gateway_join')
    return parseJoin(direction, payload);
  return parsers[direction](event, payload);
}

function encodeBy(
  direction: keyof typeof parsers,
  message: unknown,
): { event: string; payload: unknown } {
  switch (direction) {
    case 'portal_to_client':
      return encodePortalToClient(message as PortalToClientMessage);
    case 'client_to_portal':
      return encodeClientToPortal(message as ClientToPortalMessage);
    case 'portal_to_gateway':
      return encodePortalToGateway(message as PortalToGatewayMessage);
    case 'gateway_to_portal':
      return encodeGatewayToPortal(message as GatewayToPortalMessage);
  }
}

/** encode → frame text → parse frame → parse message: the same message again. */
function roundTrip(
  direction: keyof typeof parsers,
  message: { event: string; payload: unknown },
  topic: string,
): void {
  const encoded = encodeBy(direction, message);
  const text = encodePhoenixFrame({
    topic,
    event: encoded.event,
    payload: encoded.payload,
    ref: null,
  });
  const frame = parsePhoenixFrame(text);
  assert.ok(frame.ok, 'the frame parses');
  const again = parsers[direction](frame.frame.event, frame.frame.payload);
  assert.ok(again.ok, `${message.event} parses again: ${again.ok ? '' : again.problem}`);
  assert.deepEqual(again.message, message);
  assert.equal(again.ignoredResources, 0);
}

void test('portal samples: there are samples, each names its direction', () => {
  assert.ok(samples.length >= 30, `${samples.length} samples`);
  for (const sample of samples)
    assert.ok(
      sample.direction in { ...parsers, client_join: 1, gateway_join: 1, phoenix: 1 },
      sample.name,
    );
});

void test('portal samples: each parses as a frame and as its message, with the expected counts, and round-trips', async (t) => {
  for (const sample of samples) {
    await t.test(sample.name, () => {
      const frame = parsePhoenixFrame(JSON.stringify(sample.frame));
      assert.ok(frame.ok, frame.ok ? '' : frame.problem);
      assert.equal(frame.frame.topic, sample.frame.topic);
      assert.equal(frame.frame.ref, sample.frame.ref === null ? null : String(sample.frame.ref));
      if (sample.direction === 'phoenix') {
        if (frame.frame.event === 'phx_reply') assert.ok(parsePhoenixReply(frame.frame.payload).ok);
        return;
      }
      const result = parseBy(sample.direction, frame.frame.event, frame.frame.payload);
      assert.ok(result.ok, result.ok ? '' : result.problem);
      assert.equal(
        result.ignoredResources,
        sample.expect.ignoredResources ?? 0,
        'ignored resources',
      );
      assert.equal(
        result.invalidResources.length,
        sample.expect.invalidResources ?? 0,
        result.invalidResources.join(' | '),
      );
      if (sample.expect.reason !== undefined) {
        assert.equal(
          (result.message as { payload: { reason: string } }).payload.reason,
          sample.expect.reason,
        );
      }
      // Unknown fields are stripped: the parsed payload has none of Firezone's extras.
      const text = JSON.stringify(result.message);
      for (const extra of [
        'flow_logs',
        'account_slug',
        'can_be_disabled',
        'ip_stack',
        'device_serial',
        'flow_id',
        'use_iceless',
      ]) {
        assert.ok(!text.includes(`"${extra}"`), `${extra} stripped`);
      }
      if (sample.direction in parsers) {
        roundTrip(
          sample.direction as keyof typeof parsers,
          result.message as { event: string; payload: unknown },
          sample.frame.topic,
        );
      }
    });
  }
});

void test('portal samples: every event of every direction has a sample', () => {
  const tables = {
    portal_to_client: portalToClientSchemas,
    client_to_portal: clientToPortalSchemas,
    portal_to_gateway: portalToGatewaySchemas,
    gateway_to_portal: gatewayToPortalSchemas,
  };
  for (const [direction, table] of Object.entries(tables)) {
    for (const event of Object.keys(table)) {
      assert.ok(
        samples.some((sample) => sample.direction === direction && sample.frame.event === event),
        `a ${direction} sample for ${event}`,
      );
    }
  }
  assert.ok(samples.some((sample) => sample.direction === 'client_join'));
  assert.ok(samples.some((sample) => sample.direction === 'gateway_join'));
});

// ---------------------------------------------------------------------------------------------
// Every message built as a typed value (the records make the compiler ask for every event).

const ID = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
const KEY = 'fiAjSBWDgQfD1CFJkTwOf4zg+1QhH0eTT+oLaVIMpH8=';
const RANGES = {
  tunnel_ipv4: '10.200.0.0/16',
  tunnel_ipv6: 'fd00:1::/64',
  proxy_ipv4: '10.201.0.0/16',
  proxy_ipv6: 'fd00:2::/64',
};
const SITE = { id: ID(90), name: 'site' };
const CIDR = {
  type: 'cidr' as const,
  id: ID(1),
  name: 'net',
  sites: [SITE],
  filters: [{ protocol: 'udp' as const, port_range_start: 53, port_range_end: 53 }],
  status: 'online' as const,
  address: '10.0.0.0/8',
  address_description: null,
};
const DNS = {
  type: 'dns' as const,
  id: ID(2),
  name: 'app',
  sites: [SITE],
  filters: [],
  status: 'offline' as const,
  address: '*.app.example',
  address_description: 'the app',
};
const INTERNET = {
  type: 'internet' as const,
  id: ID(3),
  name: 'Internet',
  sites: [SITE],
  filters: [],
  status: 'unknown' as const,
};
const TURN = {
  type: 'turn' as const,
  id: ID(80),
  addr: '192.0.2.9:3478',
  username: 'u',
  password: 'p',
  expires_at: 1_700_000_000_000,
};
const CLIENT_INTERFACE = {
  ipv4: '10.200.0.2',
  ipv6: 'fd00:1::2',
  upstream_dns: [],
  search_domain: null,
};
const FLOW = {
  ref: 'r1',
  client: {
    id: ID(10),
    public_key: KEY,
    preshared_key: KEY,
    ipv4: '10.200.0.2',
    ipv6: 'fd00:1::2',
  },
  resource: DNS,
  domain: { name: 'x.app.example', proxy_ips: ['10.201.0.1'] },
  expires_at: 1_700_000_000_000,
};

const portalToClient: { [E in PortalToClientEvent]: Extract<PortalToClientMessage, { event: E }> } =
  {
    init: {
      event: 'init',
      payload: {
        interface: CLIENT_INTERFACE,
        address_ranges: RANGES,
        resources: [CIDR, DNS, INTERNET],
        relays: [TURN],
      },
    },
    config_changed: {
      event: 'config_changed',
      payload: { interface: CLIENT_INTERFACE, address_ranges: RANGES },
    },
    resource_created_or_updated: { event: 'resource_created_or_updated', payload: CIDR },
    resource_deleted: { event: 'resource_deleted', payload: { id: ID(1) } },
    relays_presence: {
      event: 'relays_presence',
      payload: { disconnected_ids: [ID(81)], connected: [TURN] },
    },
    authorization_created: {
      event: 'authorization_created',
      payload: {
        resource_id: ID(1),
        gateway_id: ID(20),
        site_id: SITE.id,
        gateway_public_key: KEY,
        gateway_endpoints: ['192.0.2.1:51820'],
        gateway_ipv4: '10.200.0.1',
        gateway_ipv6: 'fd00:1::1',
        preshared_key: KEY,
        expires_at: null,
      },
    },
    authorization_creation_failed: {
      event: 'authorization_creation_failed',
      payload: { resource_id: ID(1), reason: 'forbidden' },
    },
    disconnect: { event: 'disconnect', payload: { reason: 'token_expired' } },
    ice_candidates: {
      event: 'ice_candidates',
      payload: { gateway_id: ID(20), candidates: ['candidate:1 1 udp 1 192.0.2.1 1 typ host'] },
    },
    invalidate_ice_candidates: {
      event: 'invalidate_ice_candidates',
      payload: { gateway_id: ID(20), candidates: [] },
    },
  };

const clientToPortal: { [E in ClientToPortalEvent]: Extract<ClientToPortalMessage, { event: E }> } =
  {
    request_authorization: {
      event: 'request_authorization',
      payload: {
        resource_id: ID(2),
        connected_gateway_ids: [],
        domain: { name: 'x.app.example', proxy_ips: ['10.201.0.1', 'fd00:2::1'] },
      },
    },
    broadcast_ice_candidates: {
      event: 'broadcast_ice_candidates',
      payload: { gateway_ids: [ID(20)], candidates: ['c'] },
    },
    broadcast_invalidated_ice_candidates: {
      event: 'broadcast_invalidated_ice_candidates',
      payload: { gateway_ids: [ID(20)], candidates: ['c'] },
    },
  };

const portalToGateway: {
  [E in PortalToGatewayEvent]: Extract<PortalToGatewayMessage, { event: E }>;
} = {
  init: {
    event: 'init',
    payload: {
      interface: { ipv4: '10.200.0.1', ipv6: 'fd00:1::1' },
      address_ranges: RANGES,
      relays: [],
      authorizations: [FLOW],
    },
  },
  authorize_flow: { event: 'authorize_flow', payload: FLOW },
  reject_access: { event: 'reject_access', payload: { client_id: ID(10), resource_id: ID(2) } },
  resource_updated: { event: 'resource_updated', payload: INTERNET },
  relays_presence: { event: 'relays_presence', payload: { disconnected_ids: [], connected: [] } },
  disconnect: { event: 'disconnect', payload: { reason: 'token_expired' } },
  ice_candidates: { event: 'ice_candidates', payload: { client_id: ID(10), candidates: ['c'] } },
  invalidate_ice_candidates: {
    event: 'invalidate_ice_candidates',
    payload: { client_id: ID(10), candidates: ['c'] },
  },
};

const gatewayToPortal: {
  [E in GatewayToPortalEvent]: Extract<GatewayToPortalMessage, { event: E }>;
} = {
  flow_authorized: { event: 'flow_authorized', payload: { ref: 'r1' } },
  broadcast_ice_candidates: {
    event: 'broadcast_ice_candidates',
    payload: { client_ids: [ID(10)], candidates: ['c'] },
  },
  broadcast_invalidated_ice_candidates: {
    event: 'broadcast_invalidated_ice_candidates',
    payload: { client_ids: [ID(10)], candidates: ['c'] },
  },
};

const built = {
  portal_to_client: { topic: 'client', messages: Object.values(portalToClient) },
  client_to_portal: { topic: 'client', messages: Object.values(clientToPortal) },
  portal_to_gateway: { topic: 'gateway', messages: Object.values(portalToGateway) },
  gateway_to_portal: { topic: 'gateway', messages: Object.values(gatewayToPortal) },
} as const;

void test('every message of every direction round-trips its schema (encode → frame → parse → equal)', async (t) => {
  for (const [direction, { topic, messages }] of Object.entries(built)) {
    for (const message of messages) {
      await t.test(`${direction} ${message.event}`, () =>
        roundTrip(direction as keyof typeof parsers, message, topic),
      );
    }
  }
});

void test('join payloads: parsed, unknown fields stripped, the required ones required', () => {
  const client = parseClientJoin({
    public_key: KEY,
    device_id: 'dev-1',
    name: 'laptop',
    os_name: 'Debian',
    os_version: '13',
    extra: 1,
  });
  assert.deepEqual(client, {
    ok: true,
    payload: {
      public_key: KEY,
      device_id: 'dev-1',
      name: 'laptop',
      os_name: 'Debian',
      os_version: '13',
    },
  });
  const gateway = parseGatewayJoin({ public_key: KEY, endpoints: ['gw.example.com:51820'] });
  assert.deepEqual(gateway, {
    ok: true,
    payload: { public_key: KEY, endpoints: ['gw.example.com:51820'] },
  });
  const refusals: [string, unknown, RegExp][] = [
    ['client: no key', { device_id: 'd', name: 'n', os_name: 'o', os_version: 'v' }, /public_key/],
    [
      'client: a short key',
      { public_key: 'abc=', device_id: 'd', name: 'n', os_name: 'o', os_version: 'v' },
      /WireGuard key/,
    ],
    [
      'client: a device id with a space',
      { public_key: KEY, device_id: 'a b', name: 'n', os_name: 'o', os_version: 'v' },
      /device_id/,
    ],
    ['client: not an object', 'hello', /not an object/],
    ['gateway: no endpoints', { public_key: KEY, endpoints: [] }, /endpoints/],
    ['gateway: a bad endpoint', { public_key: KEY, endpoints: ['1.2.3.4'] }, /host:port/],
    ['gateway: port 0', { public_key: KEY, endpoints: ['1.2.3.4:0'] }, /outside 1-65535/],
    [
      'gateway: an unbracketed IPv6',
      { public_key: KEY, endpoints: ['2001:db8::1:51820'] },
      /host:port/,
    ],
  ];
  for (const [name, payload, problem] of refusals) {
    const result = name.startsWith('client') ? parseClientJoin(payload) : parseGatewayJoin(payload);
    assert.equal(result.ok, false, name);
    if (!result.ok) assert.match(result.problem, problem, name);
  }
});

// ---------------------------------------------------------------------------------------------
// Tolerance and refusal

void test('unknown fields are tolerated at every level and stripped', () => {
  const payload = structuredClone(portalToClient.init.payload) as unknown as Record<
    string,
    unknown
  >;
  payload.future = { nested: true };
  (payload.interface as Record<string, unknown>).future = 1;
  ((payload.resources as Record<string, unknown>[])[0] as Record<string, unknown>).future = 'x';
  (
    (
      (payload.resources as Record<string, unknown>[])[0]?.filters as Record<string, unknown>[]
    )[0] as Record<string, unknown>
  ).future = [];
  const result = parsePortalToClient('init', payload);
  assert.ok(result.ok, result.ok ? '' : result.problem);
  assert.deepEqual(result.message, portalToClient.init);
});

void test('unknown resource types are ignored and counted, never refused', () => {
  const init = parsePortalToClient('init', {
    ...portalToClient.init.payload,
    resources: [
      { type: 'static_device_pool', id: ID(5) },
      CIDR,
      { type: 'dynamic_device_pool' },
      { type: 'future', anything: [1] },
    ],
  });
  assert.ok(init.ok);
  assert.equal(init.ignoredResources, 3);
  assert.deepEqual(init.invalidResources, []);
  assert.deepEqual(init.message.event === 'init' && init.message.payload.resources, [CIDR]);

  const single = parsePortalToClient('resource_created_or_updated', {
    type: 'static_device_pool',
    id: ID(5),
  });
  assert.deepEqual(single.ok ? undefined : single.kind, 'ignored');
  const updated = parsePortalToGateway('resource_updated', { type: 'future' });
  assert.deepEqual(updated.ok ? undefined : updated.kind, 'ignored');
  const flow = parsePortalToGateway('authorize_flow', { ...FLOW, resource: { type: 'future' } });
  assert.deepEqual(flow.ok ? undefined : flow.kind, 'ignored');
  const gatewayInit = parsePortalToGateway('init', {
    ...portalToGateway.init.payload,
    authorizations: [FLOW, { ...FLOW, resource: { type: 'future' } }],
  });
  assert.ok(gatewayInit.ok);
  assert.equal(gatewayInit.ignoredResources, 1);
  assert.equal(
    gatewayInit.message.event === 'init' && gatewayInit.message.payload.authorizations.length,
    1,
  );
});

void test('a resource of a known type that does not parse is dropped from a list and described', () => {
  const init = parsePortalToClient('init', {
    ...portalToClient.init.payload,
    resources: [CIDR, { ...DNS, address: 'has space.example' }, { ...CIDR, id: 'nope' }],
  });
  assert.ok(init.ok);
  assert.equal(init.ignoredResources, 0);
  assert.equal(init.invalidResources.length, 2);
  assert.match(init.invalidResources[0] ?? '', /^resources\.1: address: DNS resource pattern/);
  assert.match(init.invalidResources[1] ?? '', /^resources\.2: id: a UUID/);
});

void test('an unknown event is reported as such', () => {
  for (const parse of Object.values(parsers)) {
    const result = parse('future_event', {});
    assert.deepEqual(result.ok ? undefined : result.kind, 'unknown_event');
    assert.equal(parse('__proto__', {}).ok, false);
    assert.equal(parse('constructor', {}).ok, false);
  }
});

void test('malformed messages give a problem, never a throw', async (t) => {
  const long = 'x'.repeat(100_000);
  const cases: [string, keyof typeof parsers, string, unknown, RegExp][] = [
    ['init: no interface', 'portal_to_client', 'init', { address_ranges: RANGES }, /interface/],
    [
      'init: resources not a list',
      'portal_to_client',
      'init',
      { ...portalToClient.init.payload, resources: {} },
      /resources/,
    ],
    [
      'init: a bad IPv4',
      'portal_to_client',
      'init',
      { ...portalToClient.init.payload, interface: { ...CLIENT_INTERFACE, ipv4: '10.0.0.256' } },
      /ipv4/,
    ],
    [
      'init: a bad range',
      'portal_to_client',
      'init',
      { ...portalToClient.init.payload, address_ranges: { ...RANGES, proxy_ipv6: '10.0.0.0/8' } },
      /proxy_ipv6/,
    ],
    [
      'init: too many resources',
      'portal_to_client',
      'init',
      { ...portalToClient.init.payload, resources: Array.from({ length: 10_001 }, () => CIDR) },
      /resources/,
    ],
    [
      'a bad CIDR',
      'portal_to_client',
      'resource_created_or_updated',
      { ...CIDR, address: '10.0.0.0/33' },
      /address/,
    ],
    [
      'a DNS pattern of only wildcards',
      'portal_to_client',
      'resource_created_or_updated',
      { ...DNS, address: '**' },
      /wildcards/,
    ],
    [
      'an oversized name',
      'portal_to_client',
      'resource_created_or_updated',
      { ...CIDR, name: long },
      /name/,
    ],
    [
      'a reversed port range',
      'portal_to_client',
      'resource_created_or_updated',
      { ...CIDR, filters: [{ protocol: 'tcp', port_range_start: 9, port_range_end: 1 }] },
      /port_range_start is after/,
    ],
    [
      'an unknown protocol',
      'portal_to_client',
      'resource_created_or_updated',
      { ...CIDR, filters: [{ protocol: 'sctp' }] },
      /filter/,
    ],
    [
      'a port of 70000',
      'portal_to_client',
      'resource_created_or_updated',
      { ...CIDR, filters: [{ protocol: 'udp', port_range_end: 70_000 }] },
      /port_range_end/,
    ],
    [
      'a resource without a type',
      'portal_to_client',
      'resource_created_or_updated',
      { id: ID(1) },
      /type/,
    ],
    ['resource_deleted: a number id', 'portal_to_client', 'resource_deleted', { id: 5 }, /id/],
    [
      'authorization_created: a bad key',
      'portal_to_client',
      'authorization_created',
      { ...portalToClient.authorization_created.payload, gateway_public_key: 'x'.repeat(44) },
      /gateway_public_key/,
    ],
    [
      'authorization_created: a float expiry',
      'portal_to_client',
      'authorization_created',
      { ...portalToClient.authorization_created.payload, expires_at: 1.5 },
      /expires_at/,
    ],
    [
      'disconnect: an oversized reason',
      'portal_to_client',
      'disconnect',
      { reason: long },
      /reason/,
    ],
    ['disconnect: no reason', 'portal_to_client', 'disconnect', {}, /reason/],
    [
      'ice: too many candidates',
      'portal_to_client',
      'ice_candidates',
      { gateway_id: ID(1), candidates: Array.from({ length: 65 }, () => 'c') },
      /candidates/,
    ],
    [
      'request_authorization: no resource id',
      'client_to_portal',
      'request_authorization',
      {},
      /resource_id/,
    ],
    [
      'request_authorization: SQL in the id',
      'client_to_portal',
      'request_authorization',
      { resource_id: "1' OR '1'='1" },
      /resource_id/,
    ],
    [
      'request_authorization: a wildcard name',
      'client_to_portal',
      'request_authorization',
      { resource_id: ID(1), domain: { name: '*.app', proxy_ips: ['10.0.0.1'] } },
      /domain\.name/,
    ],
    [
      'request_authorization: no proxy ips',
      'client_to_portal',
      'request_authorization',
      { resource_id: ID(1), domain: { name: 'a.app', proxy_ips: [] } },
      /proxy_ips/,
    ],
    [
      'authorize_flow: no client',
      'portal_to_gateway',
      'authorize_flow',
      { ...FLOW, client: undefined },
      /client/,
    ],
    [
      'authorize_flow: a string expiry',
      'portal_to_gateway',
      'authorize_flow',
      { ...FLOW, expires_at: '2030-01-01' },
      /expires_at/,
    ],
    [
      'reject_access: an array',
      'portal_to_gateway',
      'reject_access',
      [ID(1), ID(2)],
      /not an object/,
    ],
    ['flow_authorized: an empty ref', 'gateway_to_portal', 'flow_authorized', { ref: '' }, /ref/],
    [
      'broadcast: no clients',
      'gateway_to_portal',
      'broadcast_ice_candidates',
      { client_ids: [], candidates: [] },
      /client_ids/,
    ],
  ];
  for (const [name, direction, event, payload, problem] of cases) {
    await t.test(name, () => {
      const result = parsers[direction](event, payload);
      assert.equal(result.ok, false);
      if (!result.ok) {
        assert.equal(result.kind, 'malformed');
        assert.match(result.problem, problem);
        assert.ok(result.problem.length < 2_000, 'a problem stays short');
      }
    });
  }
  await t.test('non-objects for every event of every direction', () => {
    const tables = {
      portal_to_client: portalToClientSchemas,
      client_to_portal: clientToPortalSchemas,
      portal_to_gateway: portalToGatewaySchemas,
      gateway_to_portal: gatewayToPortalSchemas,
    };
    for (const [direction, table] of Object.entries(tables)) {
      for (const event of Object.keys(table)) {
        for (const payload of [null, undefined, [], 'text', 42, true, {}]) {
          const result = parsers[direction as keyof typeof parsers](event, payload);
          assert.equal(result.ok, false, `${direction} ${event} ${JSON.stringify(payload)}`);
          if (!result.ok) assert.equal(result.kind, 'malformed');
        }
      }
    }
  });
});

void test('mutated samples never make a parse throw (bounded fuzz)', () => {
  let seed = 0x2545f491;
  const random = (): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x1_0000_0000;
  };
  const junk = [
    null,
    0,
    -1,
    1e308,
    '',
    'x'.repeat(300),
    [],
    {},
    true,
    '__proto__',
    { type: 'dns' },
    [null],
  ];
  const mutate = (value: unknown, depth: number): unknown => {
    if (random() < 0.15 || depth > 6) return junk[Math.floor(random() * junk.length)];
    if (Array.isArray(value)) return value.map((item) => mutate(item, depth + 1));
    if (value !== null && typeof value === 'object') {
      const out: Record<string, unknown> = {};
      for (const [key, item] of Object.entries(value))
        if (random() > 0.1) out[key] = mutate(item, depth + 1);
      return out;
    }
    return value;
  };
  let refused = 0;
  const messageSamples = samples.filter((sample) => sample.direction in parsers);
  for (let i = 0; i < 3_000; i += 1) {
    const sample = messageSamples[i % messageSamples.length];
    assert.ok(sample !== undefined);
    const payload = mutate(sample.frame.payload, 0);
    const result = parsers[sample.direction as keyof typeof parsers](sample.frame.event, payload);
    if (!result.ok) {
      refused += 1;
      assert.ok(result.problem.length > 0);
    }
  }
  assert.ok(refused > 0, 'some mutations are refused');
});

// ---------------------------------------------------------------------------------------------
// Framing

void test('Phoenix frames: parsed, refs read as text, refused with a problem', () => {
  assert.deepEqual(
    parsePhoenixFrame(
      '{"topic":"client","event":"phx_join","payload":{"a":1},"ref":1,"join_ref":"1","x":2}',
    ),
    {
      ok: true,
      frame: { topic: 'client', event: 'phx_join', payload: { a: 1 }, ref: '1', join_ref: '1' },
    },
  );
  assert.deepEqual(parsePhoenixFrame('{"topic":"client","event":"init"}'), {
    ok: true,
    frame: { topic: 'client', event: 'init', payload: {}, ref: null, join_ref: null },
  });
  const text = encodePhoenixFrame({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: '9' });
  assert.equal(text, '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"9"}');
  const refused: [string, string, RegExp][] = [
    ['not JSON', '{', /not JSON/],
    ['an array (the V2 serializer)', '["1","1","client","phx_join",{}]', /not a JSON object/],
    ['null', 'null', /not a JSON object/],
    ['no event', '{"topic":"client","payload":{}}', /event/],
    ['an empty topic', '{"topic":"","event":"x"}', /topic/],
    ['a negative ref', '{"topic":"c","event":"x","ref":-1}', /ref/],
    [
      'a huge frame',
      JSON.stringify({ topic: 'c', event: 'x', payload: 'y'.repeat(MAX_PORTAL_FRAME_CHARS) }),
      /characters; at most/,
    ],
  ];
  for (const [name, frame, problem] of refused) {
    const result = parsePhoenixFrame(frame);
    assert.equal(result.ok, false, name);
    if (!result.ok) assert.match(result.problem, problem, name);
  }
  assert.deepEqual(parsePhoenixReply({ status: 'ok' }), {
    ok: true,
    reply: { status: 'ok', response: {} },
  });
  assert.equal(parsePhoenixReply({ status: 'maybe', response: {} }).ok, false);
  assert.equal(parsePhoenixReply('ok').ok, false);
});

void test('filters: the storage form and the wire form convert both ways', () => {
  const table: [
    string,
    Parameters<typeof portalFiltersFromRanges>[0],
    ReturnType<typeof portalFiltersFromRanges>,
  ][] = [
    ['none', [], []],
    ['every TCP port', [{ protocol: 'tcp' }], [{ protocol: 'tcp' }]],
    ['icmp', [{ protocol: 'icmp' }], [{ protocol: 'icmp' }]],
    [
      'two UDP ranges and a TCP port',
      [
        {
          protocol: 'udp',
          ports: [
            { from: 53, to: 53 },
            { from: 1000, to: 2000 },
          ],
        },
        { protocol: 'tcp', ports: [{ from: 443, to: 443 }] },
      ],
      [
        { protocol: 'udp', port_range_start: 53, port_range_end: 53 },
        { protocol: 'udp', port_range_start: 1000, port_range_end: 2000 },
        { protocol: 'tcp', port_range_start: 443, port_range_end: 443 },
      ],
    ],
  ];
  for (const [name, storage, wire] of table) {
    assert.deepEqual(portalFiltersFromRanges(storage), wire, name);
    assert.deepEqual(rangesFromPortalFilters(wire), storage, name);
  }
  // An entry without a range widens its protocol to every port; a half range is filled in.
  assert.deepEqual(
    rangesFromPortalFilters([
      { protocol: 'tcp', port_range_start: 22, port_range_end: 22 },
      { protocol: 'tcp' },
      { protocol: 'udp', port_range_start: 100 },
    ]),
    [{ protocol: 'tcp' }, { protocol: 'udp', ports: [{ from: 100, to: 65535 }] }],
  );
});
