/**
 * Hostile HTTP against the sign-in side: CSRF, brute force, SQL metacharacters, fuzzed and
 * oversized bodies, oversized headers, wrong methods. Each gets its documented status, changes
 * nothing stored, is counted, and the server keeps serving.
 *
 * Documented statuses: 400 malformed or invalid input; 403 CSRF token missing or wrong, or a
 * foreign Origin; 404 no such account; 405 wrong method (with Allow); 413 body over 16 KiB;
 * 415 a body that is not application/x-www-form-urlencoded; 429 rate-limited (with
 * Retry-After); 431 request line and headers over 16 KiB; 401 wrong username or password.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import type { PortalHttpOptions } from '../src/http/handler.ts';
import {
  createFixture,
  form,
  ManualClock,
  openSignInPage,
  postSignIn,
  request,
  startHarness,
  type FormSession,
} from './http-support.ts';

const NONCE = 'abcdefghijklmnopqrstuvwxyz012345';
const STATE = 'st4te';
const T0 = Date.UTC(2026, 11, 3, 12, 0, 0);
const PASSWORD = 'the right password';

async function setup(t: TestContext, options: PortalHttpOptions = {}) {
  const fixture = createFixture();
  fixture.addUser('alice@example.com', 'Alice', PASSWORD);
  const clock = new ManualClock(T0);
  const harness = await startHarness({ backend: fixture.backend, now: clock.now, options });
  t.after(async () => {
    await harness.close();
    fixture.close();
  });
  const open = (): Promise<FormSession> =>
    openSignInPage(harness.port, `/acme?as=gui-client&nonce=${NONCE}&state=${STATE}`);
  const fields = (session: FormSession, extra: Record<string, string> = {}) => ({
    csrf_token: session.csrfToken,
    as: 'gui-client',
    nonce: NONCE,
    state: STATE,
    username: 'alice@example.com',
    password: PASSWORD,
    ...extra,
  });
  const stillServing = async (): Promise<void> => {
    const session = await open();
    const reply = await postSignIn(harness.port, 'acme', fields(session), {
      Cookie: session.cookie,
    });
    assert.equal(reply.status, 303, `still serving sign-ins: ${reply.status} ${reply.body}`);
  };
  return { fixture, clock, harness, port: harness.port, open, fields, stillServing };
}

void test('CSRF: a missing, wrong, swapped or foreign token is 403 and issues no token', async (t) => {
  const { fixture, port, open, fields, harness } = await setup(t);
  const session = await open();
  const other = await open();
  const snapshot = fixture.snapshot();
  const attempts: {
    name: string;
    fields: Record<string, string>;
    headers: Record<string, string>;
  }[] = [
    { name: 'no cookie', fields: fields(session), headers: {} },
    {
      name: 'no field',
      fields: (({ csrf_token: _, ...rest }) => rest)(fields(session)),
      headers: { Cookie: session.cookie },
    },
    {
      name: 'empty field',
      fields: fields(session, { csrf_token: '' }),
      headers: { Cookie: session.cookie },
    },
    {
      name: 'wrong field',
      fields: fields(session, { csrf_token: randomBytes(32).toString('base64url') }),
      headers: { Cookie: session.cookie },
    },
    {
      name: "another form's field with this cookie",
      fields: fields(other),
      headers: { Cookie: session.cookie },
    },
    {
      name: 'cookie value as the field (plain double submit is not enough)',
      fields: fields(session, { csrf_token: session.cookie.split('=')[1]! }),
      headers: { Cookie: session.cookie },
    },
    {
      name: 'foreign Origin',
      fields: fields(session),
      headers: { Cookie: session.cookie, Origin: 'https://evil.example' },
    },
    {
      name: 'Sec-Fetch-Site cross-site',
      fields: fields(session),
      headers: { Cookie: session.cookie, 'Sec-Fetch-Site': 'cross-site' },
    },
  ];
  for (const attempt of attempts) {
    const reply = await postSignIn(port, 'acme', attempt.fields, attempt.headers);
    const expected =
      attempt.name === 'no field' || attempt.name === 'empty field' ? [400, 403] : [403];
    assert.ok(expected.includes(reply.status), `${attempt.name}: ${reply.status}`);
    assert.match(reply.body, /CSRF|another site/, attempt.name);
    assert.ok(!('location' in reply.headers), attempt.name);
  }
  assert.equal(fixture.snapshot(), snapshot, 'no token created');
  const refused = harness.portal.counters().refused;
  assert.equal(refused.csrf + refused.forbidden_origin + refused.bad_request, attempts.length);
  assert.equal(refused.forbidden_origin, 2);
  assert.equal(harness.portal.counters().signInAttempts, 0, 'refused before the password check');

  // Origin "null" (what a browser sends under Referrer-Policy: no-referrer) with a good token is
  // a normal sign-in.
  const nullOrigin = await postSignIn(port, 'acme', fields(session), {
    Cookie: session.cookie,
    Origin: 'null',
    'Sec-Fetch-Site': 'same-origin',
  });
  assert.equal(nullOrigin.status, 303);

  // A token made for one account does not sign in to another.
  fixture.addAccount('globex', 'Globex');
  const forGlobex = await postSignIn(
    port,
    'globex',
    { ...fields(session), username: 'alice@example.com' },
    {
      Cookie: session.cookie,
    },
  );
  assert.equal(forGlobex.status, 403);
});

void test('brute force: 429 with Retry-After after the per-account limit; the right password too', async (t) => {
  const { fixture, clock, port, open, fields, harness, stillServing } = await setup(t, {
    accountRateLimit: { burst: 5, refillMs: 60_000 },
    addressRateLimit: { burst: 1000, refillMs: 1_000 },
  });
  const session = await open();
  for (let i = 0; i < 5; i += 1) {
    const reply = await postSignIn(port, 'acme', fields(session, { password: `guess-${i}` }), {
      Cookie: session.cookie,
    });
    assert.equal(reply.status, 401, `guess ${i}`);
  }
  const snapshot = fixture.snapshot();
  for (let i = 0; i < 3; i += 1) {
    const limited = await postSignIn(port, 'acme', fields(session, { password: `guess-x${i}` }), {
      Cookie: session.cookie,
    });
    assert.equal(limited.status, 429);
    assert.equal(limited.headers['retry-after'], '60');
    assert.match(limited.body, /Too many sign-in attempts/);
  }
  const right = await postSignIn(port, 'acme', fields(session), { Cookie: session.cookie });
  assert.equal(right.status, 429, 'the right password is refused while limited');
  assert.equal(fixture.snapshot(), snapshot);
  // As problem details for a program.
  const json = await postSignIn(port, 'acme', fields(session), {
    Cookie: session.cookie,
    Accept: 'application/json',
  });
  assert.equal(json.status, 429);
  assert.equal(JSON.parse(json.body).code, 'rate_limited');
  assert.equal(harness.portal.counters().refused.rate_limited, 5);

  clock.advance(30_000);
  const half = await postSignIn(port, 'acme', fields(session), { Cookie: session.cookie });
  assert.equal(half.status, 429);
  assert.equal(half.headers['retry-after'], '30');
  clock.advance(30_000);
  await stillServing();
});

void test('brute force from one address across accounts: the per-address limit', async (t) => {
  const { fixture, port, open, fields } = await setup(t, {
    accountRateLimit: { burst: 1000, refillMs: 1_000 },
    addressRateLimit: { burst: 3, refillMs: 20_000 },
  });
  fixture.addAccount('globex', 'Globex');
  const session = await open();
  const globex = await openSignInPage(port, `/globex?as=gui-client&nonce=${NONCE}&state=${STATE}`);
  const statuses: number[] = [];
  for (let i = 0; i < 5; i += 1) {
    const target = i % 2 === 0 ? { slug: 'acme', s: session } : { slug: 'globex', s: globex };
    const reply = await postSignIn(port, target.slug, fields(target.s, { password: `g${i}` }), {
      Cookie: target.s.cookie,
    });
    statuses.push(reply.status);
  }
  assert.deepEqual(statuses, [401, 401, 401, 429, 429]);
});

void test('X-Forwarded-For counts only with trustProxy (else a client would pick its address)', async (t) => {
  for (const trustProxy of [false, true]) {
    const { port, open, fields } = await setup(t, {
      trustProxy,
      accountRateLimit: { burst: 1000, refillMs: 1_000 },
      addressRateLimit: { burst: 2, refillMs: 60_000 },
    });
    const session = await open();
    const statuses: number[] = [];
    for (let i = 0; i < 4; i += 1) {
      const reply = await postSignIn(port, 'acme', fields(session, { password: `g${i}` }), {
        Cookie: session.cookie,
        'X-Forwarded-For': `198.51.100.7, 203.0.113.${i}`,
      });
      statuses.push(reply.status);
    }
    assert.deepEqual(
      statuses,
      trustProxy ? [401, 401, 401, 401] : [401, 401, 429, 429],
      `trustProxy ${trustProxy}`,
    );
  }
});

void test('SQL metacharacters in every field: documented status, nothing changed', async (t) => {
  const { fixture, port, open, fields, stillServing } = await setup(t, {
    accountRateLimit: { burst: 1000, refillMs: 1_000 },
    addressRateLimit: { burst: 1000, refillMs: 1_000 },
  });
  const session = await open();
  const snapshot = fixture.snapshot();
  const evil = [
    "'",
    "' OR '1'='1",
    "'; DROP TABLE accounts; --",
    '" OR ""="',
    '\\',
    '%',
    '_',
    '`',
    ';',
    '\u0000',
  ];
  const tried: string[] = [];
  for (const value of evil) {
    const enc = encodeURIComponent(value);
    // The account in the path: not a slug → not a portal route → 404.
    const page = await request(port, {
      path: `/acme${enc}?as=gui-client&nonce=${NONCE}&state=${STATE}`,
    });
    assert.equal(page.status, 404, `path ${JSON.stringify(value)}`);
    const post = await request(port, {
      method: 'POST',
      path: `/${enc}/sign_in`,
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: session.cookie },
      body: form(fields(session)),
    });
    assert.equal(post.status, 404, `post path ${JSON.stringify(value)}`);
    // Query parameters of the page: as/nonce/state refused by their patterns → 400.
    for (const name of ['as', 'nonce', 'state']) {
      const query = new URLSearchParams({ as: 'gui-client', nonce: NONCE, state: STATE });
      query.set(name, value);
      const reply = await request(port, { path: `/acme?${query}` });
      const expected = name === 'state' && /^[\x21-\x7e]+$/.test(value) ? 200 : 400;
      assert.equal(reply.status, expected, `${name}=${JSON.stringify(value)}`);
    }
    // The account form at /.
    const root = await request(port, { path: `/?account=${enc}` });
    assert.equal(root.status, 400, `account=${JSON.stringify(value)}`);
    // Form fields: username and password → 401 (no such user / wrong password); CSRF → 403;
    // as/nonce → 400; state is opaque printable ASCII → the sign-in succeeds with it.
    const byField: Record<string, number[]> = {
      username: [401],
      password: [401],
      csrf_token: [403],
      as: [400],
      nonce: [400],
    };
    for (const [name, statuses] of Object.entries(byField)) {
      const reply = await postSignIn(port, 'acme', fields(session, { [name]: value }), {
        Cookie: session.cookie,
      });
      assert.ok(
        statuses.includes(reply.status),
        `${name}=${JSON.stringify(value)}: ${reply.status}`,
      );
      tried.push(name);
    }
    // The cookie itself.
    const cookieReply = await postSignIn(port, 'acme', fields(session), {
      Cookie: `${session.cookie.split('=')[0]}=${enc}`,
    });
    assert.equal(cookieReply.status, 403);
  }
  assert.equal(fixture.snapshot(), snapshot, 'nothing stored changed');
  assert.ok(tried.length >= evil.length * 5);
  // The one field that is opaque: state goes into the deep link encoded, and a token is made.
  const withState = await postSignIn(
    port,
    'acme',
    fields(session, { state: "'; DROP TABLE tokens; --" }),
    {
      Cookie: session.cookie,
    },
  );
  assert.equal(withState.status, 400, 'a state with spaces is refused');
  const quoted = await postSignIn(
    port,
    'acme',
    fields(session, { state: "';DROP/**/TABLE/**/tokens;--" }),
    {
      Cookie: session.cookie,
    },
  );
  assert.equal(quoted.status, 303);
  assert.equal(
    new URL(quoted.headers.location!).searchParams.get('state'),
    "';DROP/**/TABLE/**/tokens;--",
  );
  await stillServing();
});

void test('fuzzed bodies: random bytes, huge, chunked, wrong content type → 4xx; still serving', async (t) => {
  const { fixture, port, open, harness, stillServing } = await setup(t);
  const session = await open();
  const snapshot = fixture.snapshot();
  const post = (body: Buffer | string, headers: Record<string, string> = {}) =>
    request(port, {
      method: 'POST',
      path: '/acme/sign_in',
      headers: {
        'Content-Type': 'application/x-www-form-urlencoded',
        Cookie: session.cookie,
        ...headers,
      },
      body,
    });
  let seed = 1;
  const statuses = new Map<number, number>();
  for (let i = 0; i < 60; i += 1) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const length = seed % 4096;
    const body = randomBytes(length);
    if (i % 3 === 0) body.write(`csrf_token=${session.csrfToken}&as=gui-client&`, 0);
    const reply = await post(body);
    assert.ok(reply.status >= 400 && reply.status < 500, `random body ${i}: ${reply.status}`);
    statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1);
  }
  assert.ok(
    [...statuses.keys()].every((s) => [400, 403].includes(s)),
    JSON.stringify([...statuses]),
  );

  const huge = await post('a='.padEnd(17 * 1024, 'x'));
  assert.equal(huge.status, 413);
  const declaredHuge = await request(port, {
    method: 'POST',
    path: '/acme/sign_in',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'Content-Length': '999999999' },
  }).catch((error: Error) => ({ status: -1, body: error.message, headers: {} }));
  assert.ok(
    declaredHuge.status === 413 || declaredHuge.status === -1,
    `declared: ${declaredHuge.status}`,
  );

  // Chunked, past the limit: refused while it streams.
  const chunked = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(
        'POST /acme/sign_in HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n' +
          'Transfer-Encoding: chunked\r\n\r\n',
      );
      const chunk = 'x'.repeat(4096);
      for (let i = 0; i < 8; i += 1) socket.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
    });
    let text = '';
    socket.on('data', (data) => {
      text += data.toString();
    });
    socket.on('close', () => resolve(text));
    socket.on('error', (error: NodeJS.ErrnoException) =>
      error.code === 'ECONNRESET' || error.code === 'EPIPE' ? resolve(text) : reject(error),
    );
  });
  assert.match(chunked, /^HTTP\/1\.1 413 /);

  for (const type of ['application/json', 'text/plain', 'multipart/form-data; boundary=x', '']) {
    const reply = await post(
      JSON.stringify({ username: 'alice@example.com', password: PASSWORD }),
      {
        'Content-Type': type,
      },
    );
    assert.equal(reply.status, 415, `content type ${JSON.stringify(type)}`);
  }
  const notUtf8 = await post(Buffer.from([0x75, 0x3d, 0xff, 0xfe, 0x26]));
  assert.equal(notUtf8.status, 400);
  const repeated = await post(`${form({ csrf_token: session.csrfToken })}&username=a&username=b`);
  assert.equal(repeated.status, 400);
  assert.match(repeated.body, /username is given more than once/);

  // Exactly at the limit is read (and refused for what it says, not for its size).
  const atLimit = await post(
    `${form({ csrf_token: session.csrfToken })}&pad=`.padEnd(16 * 1024, 'p'),
  );
  assert.equal(atLimit.status, 400);
  // A client that goes away half way through its body: nothing happens, nothing hangs.
  await new Promise<void>((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(
        'POST /acme/sign_in HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n' +
          'Content-Length: 100\r\n\r\ncsrf_token',
        () => socket.destroy(),
      );
    });
    socket.on('close', () => resolve());
    socket.on('error', () => resolve());
  });

  assert.equal(fixture.snapshot(), snapshot);
  const refused = harness.portal.counters().refused;
  assert.ok(refused.payload_too_large >= 2, JSON.stringify(refused));
  assert.equal(refused.unsupported_media_type, 4);
  await stillServing();
});

void test('oversized headers → 431 from the server; the request line counts too', async (t) => {
  const { port, harness, stillServing } = await setup(t);
  const big = await request(port, {
    path: '/acme?as=headless-client',
    headers: { 'X-Big': 'y'.repeat(20_000) },
  });
  assert.equal(big.status, 431);
  assert.equal(big.headers['content-type'], 'application/problem+json');
  assert.equal(JSON.parse(big.body).code, 'headers_too_large');
  const many: Record<string, string> = {};
  for (let i = 0; i < 400; i += 1) many[`X-H${i}`] = 'z'.repeat(50);
  assert.equal((await request(port, { path: '/', headers: many })).status, 431);
  const longUrl = await request(port, {
    path: `/acme?as=headless-client&pad=${'p'.repeat(20_000)}`,
  });
  assert.equal(longUrl.status, 431);
  assert.equal(harness.server.clientErrors()['431'], 3);
  // Garbage that is not HTTP at all: 400, and the server goes on.
  const garbage = await new Promise<string>((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () =>
      socket.write('\x16\x03\x01 not http\r\n\r\n'),
    );
    let text = '';
    socket.on('data', (data) => (text += data.toString()));
    socket.on('close', () => resolve(text));
    socket.on('error', () => resolve(text));
  });
  assert.match(garbage, /^HTTP\/1\.1 400 /);
  await stillServing();
});

void test('only the methods each route takes: 405 with Allow', async (t) => {
  const { fixture, port, harness } = await setup(t);
  const snapshot = fixture.snapshot();
  const cases: [string, string, string][] = [
    ['POST', '/', 'GET, HEAD'],
    ['PUT', '/acme?as=headless-client', 'GET, HEAD'],
    ['DELETE', '/acme', 'GET, HEAD'],
    ['GET', '/acme/sign_in', 'POST'],
    ['PUT', '/acme/sign_in', 'POST'],
    ['GET', '/acme/sign_out', 'DELETE, POST'],
    ['PATCH', '/acme/sign_out', 'DELETE, POST'],
  ];
  for (const [method, path, allow] of cases) {
    const reply = await request(port, { method, path, headers: { Accept: 'text/html' } });
    assert.equal(reply.status, 405, `${method} ${path}`);
    assert.equal(reply.headers.allow, allow, `${method} ${path}`);
    assert.match(reply.body, /is not accepted here/);
  }
  const head = await request(port, { method: 'HEAD', path: '/acme?as=headless-client' });
  assert.equal(head.status, 200);
  assert.equal(head.body, '');
  assert.equal(harness.portal.counters().refused.method_not_allowed, cases.length);
  assert.equal(fixture.snapshot(), snapshot);
});

void test('bad sign-in page requests: clear 4xx pages', async (t) => {
  const { port } = await setup(t);
  const cases: [string, number, RegExp][] = [
    ['/acme', 400, /opened by a Gatehouse client/],
    ['/acme?as=browser', 400, /as: must be gui-client or headless-client/],
    ['/acme?as=gui-client&state=s', 400, /nonce/],
    [`/acme?as=gui-client&nonce=short&state=s`, 400, /nonce/],
    [`/acme?as=gui-client&nonce=${NONCE}`, 400, /state/],
    [
      `/acme?as=gui-client&nonce=${NONCE}&nonce=${NONCE}&state=s`,
      400,
      /nonce is given more than once/,
    ],
    ['/acme?as=headless-client&nonce=x', 400, /only for gui-client/],
    ['/nosuch?as=headless-client', 404, /There is no account (&quot;|")nosuch/],
    ['/acme/nothing', 404, /Nothing is served/],
    ['/acme/sign_in/x', 404, /Nothing is served/],
  ];
  for (const [path, status, body] of cases) {
    const reply = await request(port, { path, headers: { Accept: 'text/html' } });
    assert.equal(reply.status, status, path);
    assert.match(reply.body, body, path);
    const json = await request(port, { path });
    assert.equal(json.status, status, path);
    assert.equal(json.headers['content-type'], 'application/problem+json', path);
  }
});
