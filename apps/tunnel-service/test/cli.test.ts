import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DnsResourcesStatusSchema,
  TunnelStatusSchema,
  type ConnectedTunnelStatus,
} from '@gatehouse/protocol';
import { skipLoudly } from '@gatehouse/test-support';

const LAUNCHER = new URL('../bin/gatehouse-tunnel', import.meta.url).pathname;
const key = (fill: number) => Buffer.alloc(32, fill).toString('base64');

const GOOD_CONFIG = `[Interface]
PrivateKey = ${key(1)}
Address = 10.9.0.2/24
ListenPort = 51999
DNS = 10.9.0.1, corp.example

[Peer]
PublicKey = ${key(2)}
Endpoint = 192.0.2.1:51820
AllowedIPs = 10.9.0.0/24
PersistentKeepalive = 25
`;

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: Record<string, string> = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = spawn(LAUNCHER, args, { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

interface Workspace {
  dir: string;
  socketPath: string;
  configFile: string;
  cleanup(): void;
}

function workspace(config = GOOD_CONFIG, fileName = 'gh-test0.conf'): Workspace {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-cli-'));
  const configFile = join(dir, fileName);
  writeFileSync(configFile, config, { mode: 0o600 });
  return {
    dir,
    configFile,
    socketPath: join(dir, 'run', 'tunnel.sock'),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Starts `up --dry-run` and resolves once it serves its socket. */
async function startUp(
  ws: Workspace,
  extraArgs: string[] = [],
  env: Record<string, string> = {},
): Promise<{ child: ChildProcess; exited: Promise<Outcome> }> {
  const child = spawn(
    LAUNCHER,
    ['up', '--config', ws.configFile, '--socket', ws.socketPath, '--dry-run', ...extraArgs],
    { env: { ...process.env, ...env } },
  );
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<Outcome>((resolve) =>
    child.on('close', (code) => resolve({ code, stdout: '', stderr })),
  );
  const deadline = Date.now() + 10_000;
  while (!stderr.includes('is up')) {
    if (Date.now() > deadline || child.exitCode !== null)
      throw new Error(`up did not start:\n${stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { child, exited };
}

/** `status --json` output that must be a connected status. */
function connected(json: string): ConnectedTunnelStatus {
  const status = TunnelStatusSchema.parse(JSON.parse(json));
  assert.equal(status.state, 'connected', json);
  return status as ConnectedTunnelStatus;
}

function skipUnlessRoot(t: TestContext): boolean {
  if (process.getuid?.() === 0) return false;
  skipLoudly(t, 'needs root: the control socket only admits root (SO_PEERCRED uid 0)');
  return true;
}

void test('usage errors exit 2 with the usage text', async (t) => {
  const cases: { args: string[]; message: RegExp }[] = [
    { args: [], message: /a command is required/ },
    { args: ['launch'], message: /unknown command "launch"/ },
    { args: ['up'], message: /up needs --config FILE/ },
    { args: ['up', '--config'], message: /--config/ },
    { args: ['status', '--jsn'], message: /Unknown option '--jsn'/ },
    { args: ['down', 'now'], message: /positional argument/ },
    {
      args: ['up', '--config', '/tmp/this name is far too long.conf'],
      message: /cannot name the interface/,
    },
    { args: ['dns-resources', '--jsn'], message: /Unknown option '--jsn'/ },
    {
      args: ['dns-resources', 'app.corp.example', 'app..corp.example'],
      message: /DNS resource pattern "app\.\.corp\.example": label 2 is empty/,
    },
    { args: ['dns-resources', ''], message: /DNS resource pattern "": it is empty/ },
    {
      args: ['dns-resources', 'http://app.corp.example'],
      message:
        /DNS resource pattern "http:\/\/app\.corp\.example": it has ":": a DNS resource is a bare name/,
    },
    {
      args: ['dns-resources', '--', '**'],
      message:
        /DNS resource pattern "\*\*": it is only wildcards and would match nearly every name/,
    },
    {
      args: ['dns-resources', `${'a'.repeat(70)}.example`],
      message:
        /DNS resource pattern "a{70}\.example": label 1 "a{70}" is 70 characters long; a label has at most 63/,
    },
    {
      args: ['dns-resources', 'app.corp.example,'],
      message:
        /DNS resource pattern "app\.corp\.example,": label 3 "example," has ","; labels hold/,
    },
  ];
  for (const c of cases) {
    await t.test(c.args.join(' ') || '(nothing)', async () => {
      const outcome = await run(c.args);
      assert.equal(outcome.code, 2, outcome.stderr);
      assert.match(outcome.stderr, c.message);
      assert.match(outcome.stderr, /usage:/);
    });
  }
});

void test('up --portal usage errors exit 2 with the usage text, before any token is read', async (t) => {
  const portal = ['up', '--portal', 'https://portal.example.com'];
  const cases: { args: string[]; env?: Record<string, string>; message: RegExp }[] = [
    { args: ['up'], message: /up needs --config FILE or --portal URL \(or GATEHOUSE_PORTAL_URL\)/ },
    {
      args: ['up', '--config', 'wg0.conf', '--portal', 'https://portal.example.com'],
      message: /up takes --config FILE or --portal URL, not both/,
    },
    {
      args: ['up', '--config', 'wg0.conf', '--token-file', '/etc/gatehouse/client-token'],
      message: /--token-file goes with --portal URL/,
    },
    {
      args: ['up', '--config', 'wg0.conf', '--no-lan-bypass'],
      message: /--no-lan-bypass goes with --portal URL/,
    },
    {
      args: ['up', '--portal', 'ftp://portal.example.com'],
      message:
        /the portal URL must start with https:\/\/ \(or http:\/\/, wss:\/\/, ws:\/\/\), not ftp:/,
    },
    {
      args: ['up', '--portal', 'portal.example.com'],
      message: /the portal URL is not a URL \(e\.g\. https:\/\/portal\.example\.com\)/,
    },
    {
      args: ['up', '--portal', 'https://alice:s3cret@portal.example.com'],
      message: /the portal URL may not hold a user name or password/,
    },
    {
      args: ['up'],
      env: { GATEHOUSE_PORTAL_URL: 'gopher://portal.example.com' },
      message: /the portal URL must start with https:\/\//,
    },
    {
      args: [...portal, '--interface', 'far-too-long-a-name'],
      message: /--interface "far-too-long-a-name": 1 to 15 of the characters/,
    },
    { args: [...portal, '--device-name', ''], message: /--device-name: 1 to 255 characters/ },
    {
      args: [...portal, '--dns-control', 'resolvconf'],
      message: /--dns-control=resolvconf is not one of/,
    },
    { args: [...portal, '--internet'], message: /Unknown option '--internet'/ },
  ];
  for (const c of cases) {
    await t.test(`${c.args.join(' ')} ${JSON.stringify(c.env ?? {})}`, async () => {
      const outcome = await run(c.args, { GATEHOUSE_TOKEN: '', ...c.env });
      assert.equal(outcome.code, 2, outcome.stderr);
      assert.match(outcome.stderr, c.message);
      assert.match(outcome.stderr, /usage:/);
      assert.ok(!outcome.stderr.includes('s3cret'), outcome.stderr);
    });
  }
});

void test('up --portal refuses a token file that is not root 0400/0600, saying how to fix it, and never prints the token', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-cli-token-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const secret = 'gh.dG9rZW4taWQ.c2VjcmV0LXBhcnQtb2YtdGhlLXRva2Vu';
  const file = (name: string, text: string, mode: number): string => {
    const path = join(dir, name);
    writeFileSync(path, text, { mode });
    chmodSync(path, mode);
    return path;
  };
  const isRoot = process.getuid?.() === 0;
  const cases: {
    name: string;
    path: () => string;
    env?: Record<string, string>;
    message: RegExp;
  }[] = [
    {
      name: 'mode 0644',
      path: () => file('open', `${secret}\n`, 0o644),
      message: isRoot
        ? /the token file .*open must be owned by root and readable by it alone \(owner uid 0, mode 0644; allowed 0400 or 0600\): chown root:root .*open && chmod 600 .*open/
        : /the token file .*open must be owned by root .*chown root:root .*open && chmod 600 .*open/,
    },
    {
      name: 'missing',
      path: () => join(dir, 'none'),
      message:
        /no token: GATEHOUSE_TOKEN is not set and there is no token file .*none \(write the token there, then: chown root:root .*none && chmod 600 .*none; or give another with --token-file\)/,
    },
    {
      name: 'a symbolic link',
      path: () => {
        symlinkSync(file('real', `${secret}\n`, 0o600), join(dir, 'link'));
        return join(dir, 'link');
      },
      message: /the token file .*link is a symbolic link: give the file's own path/,
    },
    {
      name: 'two tokens',
      path: () => file('two', `${secret}\n${secret}\n`, 0o600),
      message: /does not hold a token \(one line of at most 4096 printable ASCII characters/,
    },
    {
      name: 'GATEHOUSE_TOKEN with a space',
      path: () => join(dir, 'none'),
      env: { GATEHOUSE_TOKEN: `${secret} x` },
      message: /GATEHOUSE_TOKEN does not hold a token/,
    },
  ];
  if (isRoot) {
    cases.push({
      name: 'owned by another user',
      path: () => {
        const path = file('theirs', `${secret}\n`, 0o600);
        chownSync(path, 1234, 1234);
        return path;
      },
      message:
        /owner uid 1234, mode 0600; allowed 0400 or 0600\): chown root:root .*theirs && chmod 600/,
    });
  }
  for (const c of cases) {
    await t.test(c.name, async () => {
      const outcome = await run(
        [
          'up',
          '--portal',
          'https://portal.example.com',
          '--token-file',
          c.path(),
          '--socket',
          join(dir, 'tunnel.sock'),
        ],
        { GATEHOUSE_TOKEN: '', ...c.env },
      );
      assert.equal(outcome.code, 2, outcome.stderr);
      assert.match(outcome.stderr, c.message);
      assert.doesNotMatch(outcome.stderr, /usage:/);
      assert.ok(!`${outcome.stdout}${outcome.stderr}`.includes('c2VjcmV0'), outcome.stderr);
      assert.equal(existsSync(join(dir, 'tunnel.sock')), false, 'nothing started');
    });
  }
});

void test('up --portal refuses a CA file without a certificate (exit 2)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-cli-ca-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'ca.pem'), 'not a certificate\n');
  for (const [args, env] of [
    [['--ca-file', join(dir, 'ca.pem')], {}],
    [[], { GATEHOUSE_CA_FILE: join(dir, 'missing.pem') }],
  ] as const) {
    const outcome = await run(
      ['up', '--portal', 'https://portal.example.com', '--token-file', join(dir, 'none'), ...args],
      { GATEHOUSE_TOKEN: '', ...env },
    );
    assert.equal(outcome.code, 2, outcome.stderr);
    assert.match(
      outcome.stderr,
      /gatehouse-tunnel: CA file .*(holds no PEM certificate|no such file)/,
    );
  }
});

void test('--help and --version exit 0 on stdout', async () => {
  const help = await run(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /gatehouse-tunnel up --config FILE/);
  assert.match(
    help.stdout,
    /gatehouse-tunnel up --portal URL \[--token-file PATH\] \[--ca-file PATH\]/,
  );
  assert.match(help.stdout, /default URL:\s+\$GATEHOUSE_PORTAL_URL/);
  assert.match(
    help.stdout,
    /\/etc\/gatehouse\/client-token\); it must be a regular file owned by root\s+with mode 0400 or 0600 \(chown root:root PATH && chmod 600 PATH\)/,
  );
  assert.match(help.stdout, /SIGHUP reconnects to the portal, keeping the tunnel up/);
  assert.match(help.stdout, /4 sign-in required \(the portal refused the token\)/);
  assert.match(
    help.stdout,
    /gatehouse-tunnel dns-resources \[--json\] \[--socket PATH\] \[PATTERN \.\.\.\]/,
  );
  const version = await run(['--version']);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^gatehouse-tunnel \d+\.\d+\.\d+\n$/);
});

void test('npx gatehouse-tunnel works from the repository root (a workspace bin)', async () => {
  const repositoryRoot = new URL('../../..', import.meta.url).pathname;
  const outcome = await new Promise<Outcome>((resolve) => {
    const child = spawn('npx', ['--no-install', 'gatehouse-tunnel', '--version'], {
      cwd: repositoryRoot,
    });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr: '' }));
  });
  assert.equal(outcome.code, 0);
  assert.match(outcome.stdout, /^gatehouse-tunnel \d+\.\d+\.\d+\n$/);
});

void test('the launcher drops environment that changes how Node runs code as root', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-env-'));
  try {
    const marker = join(dir, 'ran');
    const evil = join(dir, 'evil.cjs');
    writeFileSync(evil, `require('node:fs').writeFileSync(${JSON.stringify(marker)}, 'x');\n`);
    const coverage = join(dir, 'coverage');
    mkdirSync(coverage);
    const outcome = await run(['--version'], {
      NODE_OPTIONS: `--require=${evil}`,
      NODE_V8_COVERAGE: coverage,
    });
    assert.equal(outcome.code, 0, outcome.stderr);
    assert.match(outcome.stdout, /^gatehouse-tunnel \d+\.\d+\.\d+\n$/);
    assert.equal(existsSync(marker), false, 'NODE_OPTIONS --require ran its module');
    assert.deepEqual(readdirSync(coverage), [], 'NODE_V8_COVERAGE wrote coverage');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

void test('configuration errors are printed with file and line numbers and exit 2', async () => {
  const ws = workspace(
    `[Interface]\nPrivateKey = ${key(1)}\nPostUp = iptables -F\nMTU = huge\n[Peer]\nPublicKey = ${key(2)}\nFoo = bar\n`,
  );
  try {
    const outcome = await run([
      'up',
      '--config',
      ws.configFile,
      '--socket',
      ws.socketPath,
      '--dry-run',
    ]);
    assert.equal(outcome.code, 2);
    const lines = outcome.stderr.trim().split('\n');
    assert.equal(lines.length, 3, outcome.stderr);
    assert.match(lines[0] ?? '', /gh-test0\.conf:3: PostUp is not supported/);
    assert.match(lines[1] ?? '', /gh-test0\.conf:4: MTU: "huge" is not a whole number/);
    assert.match(lines[2] ?? '', /gh-test0\.conf:7: unknown key in \[Peer\]/);
    assert.equal(existsSync(ws.socketPath), false, 'nothing is started for a bad file');
  } finally {
    ws.cleanup();
  }
});

void test('up warns about a configuration file others may read and refuses a symbolic link', async () => {
  const ws = workspace(`${GOOD_CONFIG}Bogus = 1\n`);
  try {
    chmodSync(ws.configFile, 0o644);
    const args = ['up', '--socket', ws.socketPath, '--dry-run', '--config'];
    const open = await run([...args, ws.configFile]);
    assert.equal(open.code, 2);
    assert.match(
      open.stderr,
      /^gatehouse-tunnel: warning: .*gh-test0\.conf holds the private key but its group or others may access it \(mode 0644\): chmod 600 .*gh-test0\.conf\n.*gh-test0\.conf:\d+: unknown key/,
    );
    const link = join(ws.dir, 'gh-test1.conf');
    symlinkSync(ws.configFile, link);
    const linked = await run([...args, link]);
    assert.equal(linked.code, 2);
    assert.match(linked.stderr, /cannot read .*gh-test1\.conf: it is a symbolic link/);
  } finally {
    ws.cleanup();
  }
});

void test('a missing configuration file exits 2', async () => {
  const outcome = await run(['up', '--config', '/nonexistent/wg0.conf', '--dry-run']);
  assert.equal(outcome.code, 2);
  assert.match(outcome.stderr, /cannot read \/nonexistent\/wg0\.conf: .*no such file/i);
});

void test('a bad DNS control setting is a usage error naming where it came from', async (t) => {
  const ws = workspace();
  try {
    const cases: { name: string; args: string[]; env: Record<string, string>; message: RegExp }[] =
      [
        {
          name: 'flag',
          args: ['--dns-control', 'resolvconf'],
          env: {},
          message: /--dns-control=resolvconf is not one of auto, systemd-resolved/,
        },
        {
          name: 'environment',
          args: [],
          env: { GATEHOUSE_DNS_CONTROL: 'bogus' },
          message: /GATEHOUSE_DNS_CONTROL=bogus is not one of/,
        },
      ];
    for (const c of cases) {
      await t.test(c.name, async () => {
        // --dry-run: should the check ever regress, nothing touches the host.
        const outcome = await run(['up', '--config', ws.configFile, '--dry-run', ...c.args], c.env);
        assert.equal(outcome.code, 2, outcome.stderr);
        assert.match(outcome.stderr, c.message);
      });
    }
  } finally {
    ws.cleanup();
  }
});

void test('--dns-control beats GATEHOUSE_DNS_CONTROL', async (t) => {
  if (skipUnlessRoot(t)) return;
  const ws = workspace();
  try {
    const { child, exited } = await startUp(ws, ['--dns-control', 'disabled'], {
      GATEHOUSE_DNS_CONTROL: 'bogus',
    });
    child.kill('SIGTERM');
    assert.equal((await exited).code, 0);
  } finally {
    ws.cleanup();
  }
});

void test('status and down without a running tunnel explain it and exit 1', async () => {
  const ws = workspace();
  try {
    for (const command of [['status'], ['down'], ['dns-resources', 'app.corp.example']]) {
      const outcome = await run(command, { GATEHOUSE_SOCKET: ws.socketPath });
      assert.equal(outcome.code, 1);
      assert.match(
        outcome.stderr,
        /the tunnel service is not running \(no socket at .*tunnel\.sock\)/,
      );
    }
  } finally {
    ws.cleanup();
  }
});

void test('up --dry-run serves status (table and JSON) and stops on down', async (t) => {
  if (skipUnlessRoot(t)) return;
  const ws = workspace();
  try {
    const { exited } = await startUp(ws);

    const json = await run(['status', '--json', '--socket', ws.socketPath]);
    assert.equal(json.code, 0, json.stderr);
    const status = connected(json.stdout);
    assert.equal(status.interfaceName, 'gh-test0');
    assert.equal(status.listenPort, 51999);
    assert.deepEqual(status.dns, {
      servers: ['10.9.0.1'],
      searchDomains: ['corp.example'],
      reapplied: 0,
      checkFailures: 0,
      applied: false,
      reason: 'dry run: nothing is applied',
    });
    assert.deepEqual(
      status.peers.map((p) => [
        p.publicKey,
        p.endpoint,
        p.allowedIps,
        p.persistentKeepalive,
        p.rxBytes,
      ]),
      [[key(2), '192.0.2.1:51820', ['10.9.0.0/24'], 25, 0]],
    );

    const table = await run(['status'], { GATEHOUSE_SOCKET: ws.socketPath });
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /interface: gh-test0 \(connected\)/);
    assert.match(
      table.stdout,
      new RegExp(`${key(2).replace(/[+/=]/g, '\\$&')}\\s+192\\.0\\.2\\.1:51820\\s+never`),
    );

    const down = await run(['down', '--socket', ws.socketPath]);
    assert.equal(down.code, 0, down.stderr);
    const up = await exited;
    assert.equal(up.code, 0, up.stderr);
    assert.equal(existsSync(ws.socketPath), false);
  } finally {
    ws.cleanup();
  }
});

void test('apply changes the running tunnel into the file and refuses a new ListenPort', async (t) => {
  if (skipUnlessRoot(t)) return;
  const ws = workspace();
  try {
    const { child, exited } = await startUp(ws);
    const socket = ['--socket', ws.socketPath];
    writeFileSync(
      ws.configFile,
      `${GOOD_CONFIG}\n[Peer]\nPublicKey = ${key(3)}\nAllowedIPs = 10.9.9.0/24\n`,
      { mode: 0o600 },
    );
    const applied = await run(['apply', '--config', ws.configFile, ...socket]);
    assert.equal(applied.code, 0, applied.stderr);
    assert.equal(applied.stdout, 'tunnel gh-test0: the changes are applied\n');
    const status = connected((await run(['status', '--json', ...socket])).stdout);
    assert.deepEqual(
      status.peers.map((peer) => peer.publicKey),
      [key(2), key(3)],
    );

    writeFileSync(ws.configFile, GOOD_CONFIG.replace('51999', '51998'), { mode: 0o600 });
    const refused = await run(['apply', '--config', ws.configFile, ...socket]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /listenPort cannot change while the tunnel runs/);
    assert.equal(connected((await run(['status', '--json', ...socket])).stdout).peers.length, 2);

    child.kill('SIGTERM');
    assert.equal((await exited).code, 0);
  } finally {
    ws.cleanup();
  }
});

void test('dns-resources sets and clears the DNS resources; status shows them', async (t) => {
  if (skipUnlessRoot(t)) return;
  const ws = workspace();
  try {
    const { child, exited } = await startUp(ws);
    const socket = ['--socket', ws.socketPath];

    const set = await run(['dns-resources', ...socket, 'app.corp.example', '*.svc.corp.example']);
    assert.equal(set.code, 0, set.stderr);
    assert.equal(
      set.stdout,
      'dns resources: app.corp.example, *.svc.corp.example (DNS stub not running)\n',
      'a dry run runs no stub',
    );
    const table = await run(['status', ...socket]);
    assert.match(
      table.stdout,
      /^ {2}dns resources: app\.corp\.example, \*\.svc\.corp\.example \(DNS stub not running\)$/m,
    );

    const json = await run(['dns-resources', '--json', ...socket, '--', '**.lab.example']);
    assert.equal(json.code, 0, json.stderr);
    const expected = {
      patterns: ['**.lab.example'],
      stubRunning: false,
      stubAddresses: [],
      upstreams: [],
    };
    assert.deepEqual(DnsResourcesStatusSchema.parse(JSON.parse(json.stdout)), expected);
    const status = await run(['status', '--json', ...socket]);
    assert.deepEqual(connected(status.stdout).dnsResources, expected);

    const cleared = await run(['dns-resources', ...socket]);
    assert.equal(cleared.code, 0, cleared.stderr);
    assert.equal(cleared.stdout, 'dns resources: none (DNS stub not running)\n');

    child.kill('SIGTERM');
    assert.equal((await exited).code, 0);
  } finally {
    ws.cleanup();
  }
});

void test('SIGTERM and SIGINT stop up cleanly: exit 0, socket removed', async (t) => {
  if (skipUnlessRoot(t)) return;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    const ws = workspace();
    try {
      const { child, exited } = await startUp(ws);
      assert.equal(existsSync(ws.socketPath), true);
      child.kill(signal);
      const outcome = await exited;
      assert.equal(outcome.code, 0, outcome.stderr);
      assert.match(outcome.stderr, new RegExp(`received ${signal}`));
      assert.equal(existsSync(ws.socketPath), false);
    } finally {
      ws.cleanup();
    }
  }
});

void test('up keeps serving after the reader of its log goes away, and counts the lines lost', async (t) => {
  if (skipUnlessRoot(t)) return;
  const ws = workspace();
  const child = spawn(LAUNCHER, [
    'up',
    '--config',
    ws.configFile,
    '--socket',
    ws.socketPath,
    '--dry-run',
  ]);
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  try {
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const deadline = Date.now() + 10_000;
    while (!stderr.includes('is up')) {
      assert.ok(Date.now() < deadline && child.exitCode === null, `up did not start:\n${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    child.stderr.destroy();
    // A connection that never sends a request is closed with a warning: the first lost line.
    const idle = connect({ path: ws.socketPath }).on('error', () => {});
    idle.resume();
    await new Promise((resolve) => idle.once('close', resolve));
    const json = await run(['status', '--json', '--socket', ws.socketPath]);
    assert.equal(json.code, 0, json.stderr);
    const status = connected(json.stdout);
    assert.equal(status.controlSocket.idleClosed, 1);
    assert.ok(status.logLinesLost >= 1, `logLinesLost ${status.logLinesLost}`);
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
    ws.cleanup();
  }
});

void test('up --log-file appends JSON lines to a file mode 0640; GATEHOUSE_LOG_FILE names it too', async (t) => {
  if (skipUnlessRoot(t)) return;
  const ws = workspace();
  try {
    const fromFlag = join(ws.dir, 'flag.log');
    const fromEnv = join(ws.dir, 'env.log');
    for (const [extraArgs, env, logFile] of [
      [['--log-file', fromFlag], { GATEHOUSE_LOG_FILE: join(ws.dir, 'unused.log') }, fromFlag],
      [[], { GATEHOUSE_LOG_FILE: fromEnv }, fromEnv],
    ] as const) {
      const { child, exited } = await startUp(ws, [...extraArgs], env);
      child.kill('SIGTERM');
      const outcome = await exited;
      assert.equal(outcome.code, 0, outcome.stderr);
      assert.match(outcome.stderr, /gatehouse-tunnel: info: tunnel gh-test0 is up/);
      const records = readFileSync(logFile, 'utf8')
        .trimEnd()
        .split('\n')
        .map((line) => JSON.parse(line) as { level: string; msg: string; pid: number });
      assert.ok(
        records.some((r) => r.level === 'info' && /tunnel gh-test0 is up/.test(r.msg)),
        JSON.stringify(records),
      );
      assert.ok(
        records.some((r) => /received SIGTERM/.test(r.msg)),
        JSON.stringify(records),
      );
      assert.equal(records[0]?.pid, child.pid);
      assert.equal(statSync(logFile).mode & 0o777, 0o640);
      // The private key's text never reaches the log.
      assert.doesNotMatch(readFileSync(logFile, 'utf8'), new RegExp(key(1).slice(0, 16)));
    }
    assert.equal(existsSync(join(ws.dir, 'unused.log')), false);
  } finally {
    ws.cleanup();
  }
});

void test('up refuses a log file that is a symbolic link, exits 2 and leaves the target alone', async (t) => {
  if (skipUnlessRoot(t)) return;
  const ws = workspace();
  try {
    const target = join(ws.dir, 'precious');
    writeFileSync(target, 'keep\n', { mode: 0o600 });
    const link = join(ws.dir, 'tunnel.log');
    symlinkSync(target, link);
    const outcome = await run([
      'up',
      '--config',
      ws.configFile,
      '--socket',
      ws.socketPath,
      '--dry-run',
      '--log-file',
      link,
    ]);
    assert.equal(outcome.code, 2, outcome.stderr);
    assert.match(outcome.stderr, /cannot open the log file .*tunnel\.log: it is a symbolic link/);
    assert.equal(readFileSync(target, 'utf8'), 'keep\n');
    assert.equal(existsSync(ws.socketPath), false);
  } finally {
    ws.cleanup();
  }
});

void test('a second up on the same socket refuses and leaves the first running', async (t) => {
  if (skipUnlessRoot(t)) return;
  const ws = workspace();
  try {
    const { child, exited } = await startUp(ws);
    const second = await run([
      'up',
      '--config',
      ws.configFile,
      '--socket',
      ws.socketPath,
      '--dry-run',
    ]);
    assert.equal(second.code, 1);
    assert.match(second.stderr, /another gatehouse-tunnel is running on .*tunnel\.sock/);
    const status = await run(['status', '--socket', ws.socketPath]);
    assert.equal(status.code, 0, status.stderr);
    child.kill('SIGTERM');
    assert.equal((await exited).code, 0);
  } finally {
    ws.cleanup();
  }
});
