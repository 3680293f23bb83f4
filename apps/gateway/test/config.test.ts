import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import {
  DEFAULT_INTERFACE,
  DEFAULT_LISTEN_PORT,
  DEFAULT_STATE_DIR,
  gatewaySocketUrl,
  parseInvocation,
  UsageError,
  type GatewayConfig,
} from '../src/config.ts';

const TOKEN = 'gh-gateway-token-7f3a9c';
const BASE_ARGS = ['--portal', 'https://portal.example.com', '--endpoint', '203.0.113.7:51820'];

function run(argv: string[], env: NodeJS.ProcessEnv = {}): GatewayConfig {
  const invocation = parseInvocation(argv, { GATEHOUSE_TOKEN: TOKEN, ...env });
  assert.equal(invocation.kind, 'run');
  return (invocation as { config: GatewayConfig }).config;
}

void test('the defaults, with the token, the portal and one endpoint', () => {
  assert.deepEqual(run(BASE_ARGS), {
    token: TOKEN,
    deviceId: undefined,
    portalUrl: 'https://portal.example.com',
    socketUrl: 'wss://portal.example.com/gateway/websocket',
    endpoints: ['203.0.113.7:51820'],
    listenPort: DEFAULT_LISTEN_PORT,
    interfaceName: DEFAULT_INTERFACE,
    stateDir: DEFAULT_STATE_DIR,
    caFile: undefined,
    verbose: false,
    logFile: undefined,
  });
});

void test('every flag', () => {
  const config = run(
    [
      ...BASE_ARGS,
      '--endpoint',
      '[2001:db8::7]:51820',
      '--listen-port',
      '51999',
      '--interface',
      'gw0',
      '--state-dir',
      '/tmp/gw-state',
      '--verbose',
      '--log-file',
      '/tmp/gw.log',
    ],
    { GATEHOUSE_ID: 'gw-office-1' },
  );
  assert.deepEqual(config.endpoints, ['203.0.113.7:51820', '[2001:db8::7]:51820']);
  assert.equal(config.listenPort, 51999);
  assert.equal(config.interfaceName, 'gw0');
  assert.equal(config.stateDir, '/tmp/gw-state');
  assert.equal(config.verbose, true);
  assert.equal(config.logFile, '/tmp/gw.log');
  assert.equal(config.deviceId, 'gw-office-1');
});

void test('the portal and the endpoints from the environment; flags win', () => {
  const fromEnv = run([], {
    GATEHOUSE_PORTAL_URL: 'http://127.0.0.1:8080',
    GATEHOUSE_ENDPOINTS: ' 192.0.2.1:51820, gw.example.com:51820 ,',
  });
  assert.equal(fromEnv.socketUrl, 'ws://127.0.0.1:8080/gateway/websocket');
  assert.deepEqual(fromEnv.endpoints, ['192.0.2.1:51820', 'gw.example.com:51820']);

  const flags = run(BASE_ARGS, {
    GATEHOUSE_PORTAL_URL: 'http://127.0.0.1:8080',
    GATEHOUSE_ENDPOINTS: '192.0.2.1:51820',
  });
  assert.equal(flags.portalUrl, 'https://portal.example.com');
  assert.deepEqual(flags.endpoints, ['203.0.113.7:51820']);
});

void test('the token is taken out of the environment object at once, even on a usage error', () => {
  const env: NodeJS.ProcessEnv = { GATEHOUSE_TOKEN: TOKEN };
  assert.throws(() => parseInvocation([], env), UsageError);
  assert.equal(Object.hasOwn(env, 'GATEHOUSE_TOKEN'), false);

  const helpEnv: NodeJS.ProcessEnv = { GATEHOUSE_TOKEN: TOKEN };
  assert.deepEqual(parseInvocation(['--help'], helpEnv), { kind: 'help' });
  assert.equal(Object.hasOwn(helpEnv, 'GATEHOUSE_TOKEN'), false);
});

void test('the CA file: --ca-file, else GATEHOUSE_CA_FILE; one without a certificate is a usage error', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-gw-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const ca = join(dir, 'ca.pem');
  writeFileSync(
    ca,
    '-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ==\n-----END CERTIFICATE-----\n',
  );
  const empty = join(dir, 'empty.pem');
  writeFileSync(empty, 'nothing here\n');

  assert.equal(run([...BASE_ARGS, '--ca-file', ca]).caFile, ca);
  assert.equal(run(BASE_ARGS, { GATEHOUSE_CA_FILE: ca }).caFile, ca);
  assert.throws(
    () => run([...BASE_ARGS, '--ca-file', empty]),
    (error: Error) => error instanceof UsageError && /holds no PEM certificate/.test(error.message),
  );
  assert.throws(
    () => run([...BASE_ARGS, '--ca-file', join(dir, 'missing.pem')]),
    (error: Error) => error instanceof UsageError && /no such file/.test(error.message),
  );
});

const usageErrors: { name: string; argv: string[]; env?: NodeJS.ProcessEnv; message: RegExp }[] = [
  {
    name: 'no token',
    argv: BASE_ARGS,
    env: { GATEHOUSE_TOKEN: undefined },
    message:
      /GATEHOUSE_TOKEN is not set: create a gateway token with `gatehouse-portal token create --gateway SITE`/,
  },
  {
    name: 'an empty token',
    argv: BASE_ARGS,
    env: { GATEHOUSE_TOKEN: '' },
    message: /GATEHOUSE_TOKEN is not set/,
  },
  {
    name: 'a token with a space',
    argv: BASE_ARGS,
    env: { GATEHOUSE_TOKEN: 'two words' },
    message: /GATEHOUSE_TOKEN is not a token/,
  },
  {
    name: 'no portal',
    argv: ['--endpoint', '203.0.113.7:51820'],
    message: /the portal is needed: --portal URL \(or GATEHOUSE_PORTAL_URL\)/,
  },
  {
    name: 'no endpoint',
    argv: ['--portal', 'https://portal.example.com'],
    message: /--endpoint HOST:PORT \(or GATEHOUSE_ENDPOINTS, comma-separated\)/,
  },
  {
    name: 'an endpoint without a port',
    argv: ['--portal', 'https://portal.example.com', '--endpoint', '203.0.113.7'],
    message: /endpoint "203\.0\.113\.7": an endpoint is host:port/,
  },
  {
    name: 'a portal URL of another scheme',
    argv: ['--portal', 'ftp://portal.example.com', '--endpoint', '203.0.113.7:51820'],
    message: /must start with https:\/\//,
  },
  {
    name: 'a portal URL with a password',
    argv: ['--portal', 'https://u:p@portal.example.com', '--endpoint', '203.0.113.7:51820'],
    message: /may not hold a user name or password/,
  },
  {
    name: 'a listen port out of range',
    argv: [...BASE_ARGS, '--listen-port', '70000'],
    message: /--listen-port must be a port, 1 to 65535/,
  },
  {
    name: 'an interface name too long',
    argv: [...BASE_ARGS, '--interface', 'a-very-long-interface'],
    message: /--interface: "a-very-long-interface" is not an interface name/,
  },
  {
    name: 'a GATEHOUSE_ID with a space',
    argv: BASE_ARGS,
    env: { GATEHOUSE_ID: 'office gateway' },
    message: /GATEHOUSE_ID must be 1 to 128 printable ASCII characters/,
  },
  {
    name: 'an unknown option',
    argv: [...BASE_ARGS, '--listen', '1'],
    message: /Unknown option '--listen'/,
  },
  {
    name: 'a positional argument (not repeated: it may be a token)',
    argv: [...BASE_ARGS, TOKEN],
    message: /arguments other than options are not taken/,
  },
];

for (const { name, argv, env, message } of usageErrors) {
  void test(`usage error: ${name}`, () => {
    assert.throws(
      () => parseInvocation(argv, { GATEHOUSE_TOKEN: TOKEN, ...env }),
      (error: Error) => {
        assert.ok(error instanceof UsageError, String(error));
        assert.match(error.message, message);
        assert.doesNotMatch(error.message, new RegExp(TOKEN));
        return true;
      },
    );
  });
}

const socketUrls: [string, string][] = [
  ['https://portal.example.com', 'wss://portal.example.com/gateway/websocket'],
  ['https://portal.example.com:8443/', 'wss://portal.example.com:8443/gateway/websocket'],
  ['http://10.0.0.1:8080', 'ws://10.0.0.1:8080/gateway/websocket'],
  ['https://example.com/gatehouse/', 'wss://example.com/gatehouse/gateway/websocket'],
  ['wss://portal.example.com/gateway/websocket', 'wss://portal.example.com/gateway/websocket'],
  ['https://[2001:db8::1]:8443', 'wss://[2001:db8::1]:8443/gateway/websocket'],
];

for (const [portal, socket] of socketUrls) {
  void test(`gatewaySocketUrl(${portal})`, () => {
    assert.equal(gatewaySocketUrl(portal), socket);
  });
}
