import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openSqliteStorage } from '../src/db/sqlite-storage.ts';
import { parseToken, verifyToken } from '../src/tokens.ts';

const LAUNCHER = fileURLToPath(new URL('../bin/gatehouse-portal', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function baseEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...extra };
  return env;
}

function cli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Run {
  const result = spawnSync(LAUNCHER, args, {
    cwd: options.cwd ?? tmpdir(),
    env: options.env ?? baseEnv(),
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (result.error) throw result.error;
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function workdir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-portal-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const FILE = `
accounts:
  - slug: acme
    name: Acme
    users:
      - name: alice
        email: alice@example.com
        password: a long initial password
    serviceAccounts:
      - name: ci
    sites:
      - name: office
    resources:
      - name: lan
        type: cidr
        address: 10.0.0.0/24
        site: office
    groups:
      - name: staff
        members: [alice, ci]
    policies:
      - group: staff
        resource: lan
`;

void test('cli: --help and --version; usage errors exit 2 and say what is wrong', () => {
  const help = cli(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage:\n {2}gatehouse-portal \[--db PATH\] serve/);
  assert.match(help.stdout, /token create --service-account NAME/);
  const version = cli(['--version']);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^gatehouse-portal \d+\.\d+\.\d+\n$/);

  const cases: [string[], RegExp][] = [
    [[], /missing command/],
    [['frobnicate'], /unknown command frobnicate/],
    [['--bogus'], /unknown option --bogus/],
    [['--db'], /--db needs a PATH/],
    [['apply'], /missing FILE/],
    [['apply', 'a.yaml', 'b.yaml'], /unexpected b\.yaml/],
    [['users', '--nope'], /Unknown option '--nope'/],
    [['token'], /token: missing create or revoke/],
    [['token', 'mint'], /token: unknown subcommand mint/],
    [['token', 'create'], /give one of --service-account NAME or --gateway SITE/],
    [['token', 'create', '--service-account', 'a', '--gateway', 'b'], /give one of/],
    [
      ['token', 'create', '--service-account', 'ci', '--expires-in', 'soon'],
      /--expires-in soon: expected/,
    ],
    [['token', 'revoke'], /missing the token ID/],
    [['serve', '--tls-cert', 'x.pem'], /--tls-cert and --tls-key go together/],
    [['serve', '--public-url', 'not a url'], /--public-url not a url: not a URL/],
    [['serve', '--client-token-lifetime', '7 days'], /--client-token-lifetime 7 days: expected/],
  ];
  for (const [args, pattern] of cases) {
    const run = cli(['--db', join(tmpdir(), 'gatehouse-portal-never-created.sqlite'), ...args]);
    assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
    assert.match(run.stderr, pattern, args.join(' '));
    assert.match(run.stderr, /--help shows the usage/);
    assert.equal(run.stdout, '');
  }
  assert.ok(
    !readdirSync(tmpdir()).includes('gatehouse-portal-never-created.sqlite'),
    'a usage error opens no database',
  );
});

void test('cli: apply prints its changes, twice changes nothing; a bad file changes nothing', (t) => {
  const dir = workdir(t);
  const db = join(dir, 'portal.sqlite');
  const file = join(dir, 'portal.yaml');
  writeFileSync(file, FILE);
  const first = cli(['--db', db, 'apply', file]);
  assert.equal(first.code, 0, first.stderr);
  assert.deepEqual(first.stdout.trim().split('\n'), [
    'created account acme',
    'created user acme/alice (with a password)',
    'created service account acme/ci',
    'created site acme/office',
    'created resource acme/lan',
    'created group acme/staff',
    'created member acme/staff: alice',
    'created member acme/staff: ci',
    'created policy acme/staff → lan',
  ]);
  assert.ok(!(first.stdout + first.stderr).includes('initial password'));
  const second = cli(['apply', file, '--db', db]);
  assert.equal(second.code, 0, second.stderr);
  assert.equal(second.stdout, 'no changes\n');

  const dry = cli(['--db', db, 'apply', '--dry-run', file.replace('portal.yaml', 'dry.yaml')]);
  assert.equal(dry.code, 2, 'a missing file');
  assert.match(dry.stderr, /dry\.yaml: an error:\n {2}\(file\): cannot read/);

  const bad = join(dir, 'bad.yaml');
  writeFileSync(
    bad,
    FILE.replace('address: 10.0.0.0/24', 'address: 10.0.0.7/24').replace(
      '[alice, ci]',
      '[alice, ghost]',
    ),
  );
  const before = readFileSync(db);
  const refused = cli(['--db', db, 'apply', bad]);
  assert.equal(refused.code, 2);
  assert.match(
    refused.stderr,
    /accounts\[0\]\.resources\[0\]\.address: 10\.0\.0\.7\/24 has bits set/,
  );
  assert.equal(refused.stdout, '');
  const refused2 = cli([
    '--db',
    db,
    'apply',
    (writeFileSync(bad, FILE.replace('[alice, ci]', '[alice, ghost]')), bad),
  ]);
  assert.equal(refused2.code, 2);
  assert.match(
    refused2.stderr,
    /accounts\[0\]\.groups\[0\]\.members\[1\]: no user or service account named ghost/,
  );
  assert.match(refused2.stderr, /nothing was changed/);
  assert.deepEqual(readFileSync(db), before, 'the database file is as it was');
  assert.equal(cli(['--db', db, 'apply', file]).stdout, 'no changes\n');
});

void test('cli: token create prints the token once; revoke; listings; the secret nowhere else', (t) => {
  const dir = workdir(t);
  const db = join(dir, 'portal.sqlite');
  const file = join(dir, 'portal.yaml');
  writeFileSync(file, FILE);
  assert.equal(cli(['--db', db, 'apply', file]).code, 0);

  const created = cli(['--db', db, 'token', 'create', '--service-account', 'ci']);
  assert.equal(created.code, 0, created.stderr);
  const lines = created.stdout.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, 'stdout is the token alone');
  const text = lines[0]!;
  const parsed = parseToken(text);
  assert.ok(parsed, text);
  assert.equal(parsed.prefix, 'gh');
  assert.match(
    created.stderr,
    new RegExp(`created token ${parsed.id} for service account acme/ci \\(does not expire\\)`),
  );
  assert.ok(!created.stderr.includes(parsed.secret), 'stderr never has the secret');

  const gateway = cli([
    '--db',
    db,
    'token',
    'create',
    '--gateway',
    'office',
    '--account',
    'acme',
    '--expires-in',
    '30d',
  ]);
  assert.equal(gateway.code, 0, gateway.stderr);
  const gatewayText = gateway.stdout.trim();
  const gatewayId = parseToken(gatewayText)!.id;
  assert.match(gateway.stderr, /for the gateways of site acme\/office \(expires 20\d\d-/);

  // Both verify against the database, as the portal will.
  const storage = openSqliteStorage(db);
  const now = Date.now();
  const verdict = verifyToken(storage, text, now);
  assert.equal(verdict.ok && verdict.token.kind, 'service_account');
  const gatewayVerdict = verifyToken(storage, gatewayText, now);
  assert.equal(gatewayVerdict.ok && gatewayVerdict.token.kind, 'gateway');
  assert.ok(gatewayVerdict.ok && gatewayVerdict.token.expiresAt! > now + 29 * 86_400_000);
  storage.close();

  const refusals: [string[], number, RegExp][] = [
    [
      ['token', 'create', '--service-account', 'alice'],
      1,
      /no service account "alice" in account acme/,
    ],
    [['token', 'create', '--gateway', 'nowhere'], 1, /no site "nowhere" in account acme/],
    [['token', 'create', '--gateway', 'office', '--account', 'nope'], 1, /no account "nope"/],
    [['token', 'revoke', 'no-such-id'], 1, /no token "no-such-id"/],
  ];
  for (const [args, code, pattern] of refusals) {
    const run = cli(['--db', db, ...args]);
    assert.equal(run.code, code, args.join(' '));
    assert.match(run.stderr, pattern);
    assert.equal(run.stdout, '');
  }

  const tokens = cli(['--db', db, 'tokens']);
  assert.equal(tokens.code, 0);
  assert.match(tokens.stdout, new RegExp(`acme +${parsed.id} +service_account +ci `));
  assert.match(tokens.stdout, new RegExp(`acme +${gatewayId} +gateway +site office `));

  const revoked = cli(['--db', db, 'token', 'revoke', parsed.id]);
  assert.equal(revoked.code, 0);
  assert.equal(revoked.stdout, `revoked token ${parsed.id}\n`);
  assert.equal(
    cli(['--db', db, 'token', 'revoke', parsed.id]).stdout,
    `token ${parsed.id} was already revoked\n`,
  );
  const after = openSqliteStorage(db);
  assert.deepEqual(verifyToken(after, text, Date.now()), { ok: false, reason: 'revoked' });
  const acme = after.findAccountBySlug('acme')!;
  after.upsertDevice({
    accountId: acme.id,
    actorId: after.findActorByName(acme.id, 'alice')!.id,
    externalId: 'laptop-1',
    name: 'laptop',
    publicKey: 'k'.repeat(43) + '=',
    now: Date.now(),
  });
  after.close();

  const users = cli(['--db', db, 'users', '--json']);
  assert.equal(users.code, 0);
  assert.deepEqual(JSON.parse(users.stdout), [
    {
      account: 'acme',
      kind: 'user',
      name: 'alice',
      email: 'alice@example.com',
      password: 'yes',
      disabled: 'no',
      groups: 'staff',
    },
    {
      account: 'acme',
      kind: 'service',
      name: 'ci',
      email: null,
      password: 'no',
      disabled: 'no',
      groups: 'staff',
    },
  ]);
  const devices = cli(['--db', db, 'devices']);
  assert.equal(devices.code, 0);
  assert.match(
    devices.stdout,
    /^ACCOUNT +ACTOR +NAME +ID +IPV4 +IPV6 +PUBLIC KEY +LAST SEEN\nacme +alice +laptop +\S+ +100\.64\.0\.1 +fd00:2021:1111::1 /,
  );
  const devicesJson = JSON.parse(cli(['--db', db, 'devices', '--json']).stdout) as {
    ipv4: string;
  }[];
  assert.equal(devicesJson[0]?.ipv4, '100.64.0.1');

  // The secrets are in no listing and not in the database files (main, WAL) either.
  const everything = [
    cli(['--db', db, 'tokens', '--json']).stdout,
    cli(['--db', db, 'tokens']).stdout,
    users.stdout,
    devices.stdout,
    ...readdirSync(dir)
      .filter((name) => name.startsWith('portal.sqlite'))
      .map((name) => readFileSync(join(dir, name)).toString('latin1')),
  ].join('\n');
  for (const secret of [parsed.secret, parseToken(gatewayText)!.secret]) {
    assert.ok(!everything.includes(secret), 'a secret leaked');
  }
});

void test('cli: several accounts need --account; the database path from the environment', (t) => {
  const dir = workdir(t);
  const file = join(dir, 'two.yaml');
  writeFileSync(
    file,
    `accounts:
  - { slug: one, name: One, serviceAccounts: [{ name: ci }] }
  - { slug: two, name: Two, serviceAccounts: [{ name: ci }] }
`,
  );
  // GATEHOUSE_PORTAL_DB names the database.
  const env = baseEnv({ GATEHOUSE_PORTAL_DB: join(dir, 'env.sqlite') });
  assert.equal(cli(['apply', file], { env }).code, 0);
  const ambiguous = cli(['token', 'create', '--service-account', 'ci'], { env });
  assert.equal(ambiguous.code, 2);
  assert.match(ambiguous.stderr, /there are 2 accounts \(one, two\): name one with --account SLUG/);
  assert.equal(ambiguous.stdout, '');
  const two = cli(['token', 'create', '--service-account', 'ci', '--account', 'two'], { env });
  assert.equal(two.code, 0);
  assert.match(two.stderr, /service account two\/ci/);
  assert.match(cli(['users', '--account', 'one'], { env }).stdout, /^ACCOUNT.*\none +service +ci/);

  // --db beats the environment; STATE_DIRECTORY is next; else ./gatehouse-portal.sqlite.
  const flag = cli(['--db', join(dir, 'flag.sqlite'), 'users'], { env });
  assert.equal(flag.code, 0);
  assert.equal(flag.stderr, '(none)\n');
  const stateDir = join(dir, 'state');
  const state = cli(['apply', file], {
    env: baseEnv({ STATE_DIRECTORY: `${stateDir}:/elsewhere` }),
    cwd: dir,
  });
  assert.equal(state.code, 1, 'the state directory does not exist yet');
  assert.match(state.stderr, /cannot open the database .*state\/portal\.sqlite/);
  const cwd = cli(['apply', file], { cwd: dir });
  assert.equal(cwd.code, 0, cwd.stderr);
  assert.ok(readdirSync(dir).includes('gatehouse-portal.sqlite'));
});

void test('cli: the launcher scrubs NODE_OPTIONS and NODE_DEBUG', (t) => {
  const dir = workdir(t);
  const hook = join(dir, 'hook.cjs');
  writeFileSync(hook, "process.stderr.write('HOOK RAN\\n');");
  const run = cli(['--version'], {
    env: baseEnv({ NODE_OPTIONS: `--require ${hook}`, NODE_DEBUG: 'net,http' }),
  });
  assert.equal(run.code, 0);
  assert.equal(run.stderr, '');
  assert.match(run.stdout, /^gatehouse-portal /);
});

void test('cli: serve listens and answers while the CLI makes and revokes a token in its database, and stops on SIGTERM', async (t) => {
  const dir = workdir(t);
  const db = join(dir, 'portal.sqlite');
  const file = join(dir, 'portal.yaml');
  writeFileSync(file, FILE);
  assert.equal(cli(['--db', db, 'apply', file]).code, 0);
  const child = spawn(LAUNCHER, ['--db', db, 'serve', '--listen', '127.0.0.1:0'], {
    env: baseEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let url: string | undefined;
  for (let i = 0; i < 200 && url === undefined; i++) {
    url = /listening on (http:\/\/[0-9.]+:\d+)/.exec(stderr)?.[1];
    if (url === undefined) await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.ok(url, `serve did not say where it listens: ${stderr}`);
  const page = await fetch(`${url}/acme?as=headless-client`);
  assert.equal(page.status, 200);
  await page.arrayBuffer();

  const created = cli(['--db', db, 'token', 'create', '--service-account', 'ci']);
  const token = created.stdout.trim();
  assert.ok(parseToken(token));
  assert.equal(cli(['--db', db, 'token', 'revoke', parseToken(token)!.id]).code, 0);

  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([
    exited,
    new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), 20_000))),
  ]);
  clearTimeout(timer);
  assert.equal(code, 0, stderr);
  assert.match(stderr, /SIGTERM, stopping/);
  assert.ok(!stderr.includes(parseToken(token)!.secret), 'the serve log never has a secret');
});

void test('cli: serve --trust-proxy reaches the HTTP options (off without it); usage lists it', async (t) => {
  const { main, USAGE } = await import('../src/cli.ts');
  assert.match(USAGE, /\[--trust-proxy\]/);
  assert.match(USAGE, /--trust-proxy {2}behind a reverse proxy/);
  const dir = workdir(t);
  const seen: { http?: { trustProxy?: boolean } }[] = [];
  const io = {
    stdout: () => {},
    stderr: (text: string) => {
      throw new Error(`unexpected stderr: ${text}`);
    },
    env: {},
    now: () => Date.now(),
  };
  const deps = {
    runServe: (options: { http?: { trustProxy?: boolean } }) => {
      seen.push(options);
      return Promise.resolve({ stopped: Promise.resolve() });
    },
  };
  const db = join(dir, 'p.sqlite');
  assert.equal(await main(['--db', db, 'serve', '--trust-proxy'], io, deps), 0);
  assert.equal(await main(['--db', db, 'serve'], io, deps), 0);
  assert.equal(seen.length, 2);
  assert.equal(seen[0]!.http?.trustProxy, true);
  assert.equal(seen[1]!.http?.trustProxy, undefined);
});
