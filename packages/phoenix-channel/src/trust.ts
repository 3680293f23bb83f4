/**
 * Which certificates a client trusts for the portal's wss:// URL: the system's CA store
 * (Node 22's `tls.getCACertificates('system')`; else the PEM bundle at
 * /etc/ssl/certs/ca-certificates.crt; else Node's bundled roots), plus a CA file given with
 * `--ca-file` or `GATEHOUSE_CA_FILE`. A CA file adds to the system roots, never replaces them.
 * The headless client and the gateway both resolve the file with `resolvePortalCa`, so one rule
 * holds for both.
 */
import { readFileSync } from 'node:fs';
import tls from 'node:tls';

/** The environment variable naming a CA file when no `--ca-file` is given. */
export const CA_FILE_ENV = 'GATEHOUSE_CA_FILE';
/** Where Debian-like systems keep the system store as one PEM bundle. */
export const SYSTEM_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

const PEM_CERTIFICATE =
  /-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----/g;

/** A CA file that cannot be used: missing, unreadable, or holding no PEM certificate. */
export class CaFileError extends Error {
  override name = 'CaFileError';
}

let systemRoots: readonly string[] | undefined;

/** The system's trusted CA certificates (PEM), read once. */
export function systemCaCertificates(): readonly string[] {
  if (systemRoots !== undefined) return systemRoots;
  const getCACertificates = (
    tls as { getCACertificates?: (type: 'system' | 'bundled') => string[] }
  ).getCACertificates;
  let roots: readonly string[] = [];
  if (typeof getCACertificates === 'function') {
    try {
      roots = getCACertificates('system');
    } catch {
      roots = [];
    }
  }
  if (roots.length === 0) {
    try {
      roots = pemCertificates(readFileSync(SYSTEM_CA_BUNDLE, 'utf8'));
    } catch {
      roots = [];
    }
  }
  if (roots.length === 0) roots = tls.rootCertificates;
  systemRoots = roots;
  return roots;
}

/** The PEM certificates in `text` (possibly none). */
export function pemCertificates(text: string): string[] {
  return text.match(PEM_CERTIFICATE) ?? [];
}

/** The PEM certificates of CA file `path`; a CaFileError saying why when it cannot be used. */
export function readCaFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new CaFileError(
      `CA file ${path}: cannot be read (${code === 'ENOENT' ? 'no such file' : (code ?? (error as Error).message)})`,
    );
  }
  const certificates = pemCertificates(text);
  if (certificates.length === 0) {
    throw new CaFileError(
      `CA file ${path}: holds no PEM certificate (expected "-----BEGIN CERTIFICATE-----" blocks)`,
    );
  }
  return certificates;
}

export interface PortalCaInput {
  /** The `--ca-file` flag, if given. */
  caFile?: string | undefined;
  /** The environment (process.env); `GATEHOUSE_CA_FILE` applies when no flag is given. */
  env?: Record<string, string | undefined>;
}

export interface PortalCa {
  /** The CA file to add to the system roots, if any. */
  caFile: string | undefined;
  /** Where it came from. */
  source: 'flag' | 'env' | 'system';
}

/**
 * The rule clients follow: the `--ca-file` flag if given, else `GATEHOUSE_CA_FILE` if set and
 * not empty, else the system store alone. Pass the result's caFile to PhoenixSocket.
 */
export function resolvePortalCa(input: PortalCaInput = {}): PortalCa {
  if (input.caFile !== undefined && input.caFile !== '') {
    return { caFile: input.caFile, source: 'flag' };
  }
  const fromEnv = input.env?.[CA_FILE_ENV];
  if (fromEnv !== undefined && fromEnv.trim() !== '') return { caFile: fromEnv, source: 'env' };
  return { caFile: undefined, source: 'system' };
}

/**
 * The `ca` option for a TLS connection to the portal: the system roots plus `extra` and the
 * certificates of `caFile` (read now; CaFileError when unusable).
 */
export function portalTrustedCas(
  options: { caFile?: string | undefined; extra?: string | Buffer | (string | Buffer)[] } = {},
): (string | Buffer)[] {
  const extra =
    options.extra === undefined
      ? []
      : Array.isArray(options.extra)
        ? options.extra
        : [options.extra];
  const fromFile = options.caFile === undefined ? [] : readCaFile(options.caFile);
  return [...systemCaCertificates(), ...extra, ...fromFile];
}
