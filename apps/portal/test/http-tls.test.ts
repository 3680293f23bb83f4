/**
 * TLS: --tls-cert/--tls-key give an HTTPS server (a self-signed certificate made by openssl in
 * a temp dir); cookies become Secure and __Host- prefixed; the sign-in flow works over it.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { skipLoudly } from '@gatehouse/test-support';
import { loadTlsFiles } from '../src/http/server.ts';
import {
  createFixture,
  decodeEntities,
  form,
  hiddenField,
  request,
  startHarness,
} from './http-support.ts';

function makeCertificate(t: TestContext): { dir: string; cert: string; key: string } | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-portal-tls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '2',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
      ],
      { stdio: 'pipe' },
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      skipLoudly(t, 'no openssl binary to make a test certificate');
      return undefined;
    }
    throw error;
  }
  return { dir, cert, key };
}

void test('loadTlsFiles: neither → plain HTTP; one alone, a missing file, or not PEM → a clear error', (t) => {
  const made = makeCertificate(t);
  if (made === undefined) return;
  assert.equal(loadTlsFiles({}), undefined);
  assert.throws(() => loadTlsFiles({ tlsCert: made.cert }), /--tls-cert and --tls-key go together/);
  assert.throws(() => loadTlsFiles({ tlsKey: made.key }), /go together/);
  assert.throws(
    () => loadTlsFiles({ tlsCert: join(made.dir, 'nope.pem'), tlsKey: made.key }),
    /--tls-cert .*nope\.pem: ENOENT/,
  );
  const junk = join(made.dir, 'junk.pem');
  writeFileSync(junk, 'not a certificate\n');
  assert.throws(() => loadTlsFiles({ tlsCert: junk, tlsKey: made.key }), /no PEM certificate/);
  assert.throws(() => loadTlsFiles({ tlsCert: made.cert, tlsKey: junk }), /no PEM private key/);
  const material = loadTlsFiles({ tlsCert: made.cert, tlsKey: made.key });
  assert.ok(material !== undefined);
});

void test('HTTPS: the sign-in flow over TLS, with Secure __Host- cookies and HSTS', async (t) => {
  const made = makeCertificate(t);
  if (made === undefined) return;
  const fixture = createFixture();
  fixture.addUser('alice@example.com', 'Alice', 'tls password');
  const tls = loadTlsFiles({ tlsCert: made.cert, tlsKey: made.key })!;
  const harness = await startHarness({ backend: fixture.backend }, { tls });
  t.after(async () => {
    await harness.close();
    fixture.close();
  });
  assert.equal(harness.server.tls, true);
  const ca = readFileSync(made.cert);

  // Without the CA the client refuses the self-signed certificate: it is real TLS.
  await assert.rejects(
    request(harness.port, { path: '/', https: true }),
    /self.signed|certificate|unable to verify/i,
  );

  const page = await request(harness.port, { path: '/acme?as=headless-client', ca });
  assert.equal(page.status, 200);
  const setCookie = page.headers['set-cookie']![0]!;
  assert.match(setCookie, /^__Host-gatehouse_csrf=/);
  assert.match(setCookie, /; Secure/);
  assert.match(setCookie, /Path=\//);
  assert.doesNotMatch(setCookie, /Domain=/i);
  assert.match(String(page.headers['strict-transport-security']), /max-age=/);

  const reply = await request(harness.port, {
    method: 'POST',
    path: '/acme/sign_in',
    ca,
    headers: {
      'Content-Type': 'application/x-www-form-urlencoded',
      Cookie: setCookie.split(';')[0]!,
      Origin: `https://localhost:${harness.port}`,
      Host: `localhost:${harness.port}`,
    },
    body: form({
      csrf_token: hiddenField(page.body, 'csrf_token')!,
      as: 'headless-client',
      username: 'alice@example.com',
      password: 'tls password',
    }),
  });
  assert.equal(reply.status, 200, reply.body);
  const token = decodeEntities(
    /<textarea id="token"[^>]*>([^<]+)<\/textarea>/.exec(reply.body)![1]!,
  );
  assert.equal(fixture.verify(token, Date.now()).ok, true);

  // The plain-HTTP cookie name is not accepted over TLS (it could have been set insecurely).
  const plainName = await request(harness.port, {
    method: 'POST',
    path: '/acme/sign_in',
    ca,
    headers: {
      'Content-Type': 'application/x-www-form-urlencoded',
      Cookie: setCookie.split(';')[0]!.replace('__Host-', ''),
    },
    body: form({
      csrf_token: hiddenField(page.body, 'csrf_token')!,
      as: 'headless-client',
      username: 'alice@example.com',
      password: 'tls password',
    }),
  });
  assert.equal(plainName.status, 403);
});
