/**
 * A certificate authority made for one run, with openssl: a CA key and
 * certificate and a server certificate it signs for the given addresses and
 * names, valid for a day. The private keys never leave `directory` (mode
 * 0600 files; the caller removes the directory).
 */
import { createHash, X509Certificate } from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { runCommand } from '../lib/netns.ts';

export interface RunCertificates {
  /** The CA certificate (PEM): what clients are told to trust. */
  caFile: string;
  /** The server's certificate (PEM) and key (PEM, 0600). */
  certFile: string;
  keyFile: string;
  /** base64 SHA-256 of the server certificate's SubjectPublicKeyInfo (Chromium's SPKI pin). */
  serverSpkiSha256: string;
  /** The CA certificate's SHA-256 fingerprint, as openssl prints it (AA:BB:…). */
  caFingerprint: string;
}

export interface ServerIdentity {
  /** Subject alternative names: IP addresses and DNS names. */
  names: readonly string[];
  commonName: string;
}

const VALID_DAYS = '1';
const OPENSSL_TIMEOUT_MS = 20_000;

/** The subjectAltName value for `names`: `IP:` for addresses, `DNS:` for the rest. */
export function subjectAltName(names: readonly string[]): string {
  if (names.length === 0) throw new Error('a server certificate needs at least one name');
  return names
    .map((name) => {
      if (isIP(name) !== 0) return `IP:${name}`;
      if (
        !/^[A-Za-z0-9*]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(
          name,
        )
      ) {
        throw new Error(`not an IP address or DNS name: ${JSON.stringify(name)}`);
      }
      return `DNS:${name}`;
    })
    .join(',');
}

/** base64 SHA-256 of a certificate's public key (DER SubjectPublicKeyInfo). */
export function spkiSha256(certificatePem: string): string {
  const der = new X509Certificate(certificatePem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('base64');
}

export async function makeRunCertificates(
  directory: string,
  server: ServerIdentity,
): Promise<RunCertificates> {
  const caKey = join(directory, 'ca.key');
  const caFile = join(directory, 'ca.pem');
  const keyFile = join(directory, 'server.key');
  const csrFile = join(directory, 'server.csr');
  const certFile = join(directory, 'server.pem');
  const extFile = join(directory, 'server.ext');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const openssl = (args: string[]) =>
    runCommand(['openssl', ...args], { timeoutMs: OPENSSL_TIMEOUT_MS });

  await openssl([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    caKey,
    '-out',
    caFile,
    '-days',
    VALID_DAYS,
    '-subj',
    '/CN=Gatehouse npm start CA (this run only)',
    '-addext',
    'basicConstraints=critical,CA:TRUE,pathlen:0',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await openssl([
    'req',
    ...ec,
    '-keyout',
    keyFile,
    '-out',
    csrFile,
    '-subj',
    `/CN=${server.commonName}`,
  ]);
  writeFileSync(
    extFile,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
      `subjectAltName=${subjectAltName(server.names)}`,
      '',
    ].join('\n'),
  );
  await openssl([
    'x509',
    '-req',
    '-in',
    csrFile,
    '-CA',
    caFile,
    '-CAkey',
    caKey,
    '-set_serial',
    `0x${createHash('sha256').update(`${process.pid}-${Date.now()}`).digest('hex').slice(0, 16)}`,
    '-days',
    VALID_DAYS,
    '-extfile',
    extFile,
    '-out',
    certFile,
  ]);
  for (const key of [caKey, keyFile]) chmodSync(key, 0o600);
  const caPem = readFileSync(caFile, 'utf8');
  return {
    caFile,
    certFile,
    keyFile,
    serverSpkiSha256: spkiSha256(readFileSync(certFile, 'utf8')),
    caFingerprint: new X509Certificate(caPem).fingerprint256,
  };
}
