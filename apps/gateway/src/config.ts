/**
 * The gateway's command line and environment, checked before anything is
 * touched: every problem is a UsageError (exit 2) whose message never holds
 * the token. The token is taken out of the environment object given at
 * once, whatever else is wrong, so no child process ever inherits it.
 */
import { parseArgs } from 'node:util';

import { CaFileError, readCaFile, resolvePortalCa } from '@gatehouse/phoenix-channel';
import {
  GATEWAY_WEBSOCKET_PATH,
  MAX_GATEWAY_ENDPOINTS,
  endpointProblem,
} from '@gatehouse/protocol';

import { interfaceNameProblem } from './tun-interface.ts';

export const TOKEN_ENV = 'GATEHOUSE_TOKEN';
export const ID_ENV = 'GATEHOUSE_ID';
export const PORTAL_URL_ENV = 'GATEHOUSE_PORTAL_URL';
export const ENDPOINTS_ENV = 'GATEHOUSE_ENDPOINTS';

export const DEFAULT_LISTEN_PORT = 51820;
export const DEFAULT_INTERFACE = 'gatehouse-gw';
export const DEFAULT_STATE_DIR = '/var/lib/gatehouse-gateway';

const MAX_TOKEN_CHARS = 4096;

export const USAGE = `usage:
  GATEHOUSE_TOKEN=... [GATEHOUSE_ID=...] gatehouse-gateway --portal URL --endpoint HOST:PORT
      [--endpoint HOST:PORT ...] [--listen-port PORT] [--interface NAME] [--state-dir DIR]
      [--ca-file FILE] [--verbose] [--log-file PATH]
  gatehouse-gateway --help | --version

The gateway (root): joins the portal's gateway channel, brings up its TUN
device and lets in exactly the clients the portal authorized, until SIGINT or
SIGTERM (SIGUSR1 logs a status line).

--portal URL        the portal (https://portal.example.com; wss:// also taken);
                    default $GATEHOUSE_PORTAL_URL
--endpoint HOST:PORT  where clients reach this gateway (203.0.113.7:51820,
                    [2001:db8::7]:51820, gw.example.com:51820); repeat for more;
                    default $GATEHOUSE_ENDPOINTS (comma-separated)
--listen-port PORT  the WireGuard UDP port (default ${DEFAULT_LISTEN_PORT})
--interface NAME    the TUN device (default ${DEFAULT_INTERFACE})
--state-dir DIR     where the WireGuard private key is kept (default ${DEFAULT_STATE_DIR})
--ca-file FILE      PEM CA certificates trusted for the portal besides the
                    system's (default $GATEHOUSE_CA_FILE)
--verbose           debug lines too
--log-file PATH     also log JSON lines to PATH (mode 0640, renamed to PATH.1 at 16 MiB)

Environment: GATEHOUSE_TOKEN, the site's gateway token (gatehouse-portal token
create --gateway SITE), removed from the environment once read; GATEHOUSE_ID,
a stable id for this gateway (else the portal knows it by its public key).

Exit codes: 0 stopped by a signal, 1 runtime failure, 2 usage or configuration
error, 3 the portal refused the token.`;

export class UsageError extends Error {
  override name = 'UsageError';
}

export interface GatewayConfig {
  /** Never logged. */
  token: string;
  deviceId: string | undefined;
  /** The portal as given (no credentials in it), for logs. */
  portalUrl: string;
  /** The gateway channel's WebSocket URL. */
  socketUrl: string;
  endpoints: string[];
  listenPort: number;
  interfaceName: string;
  stateDir: string;
  caFile: string | undefined;
  verbose: boolean;
  logFile: string | undefined;
}

export type Invocation =
  { kind: 'run'; config: GatewayConfig } | { kind: 'help' } | { kind: 'version' };

/** What the command line and `env` ask for; takes GATEHOUSE_TOKEN out of `env` first. */
export function parseInvocation(argv: readonly string[], env: NodeJS.ProcessEnv): Invocation {
  const token = env[TOKEN_ENV];
  delete env[TOKEN_ENV];

  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        portal: { type: 'string' },
        endpoint: { type: 'string', multiple: true },
        'listen-port': { type: 'string' },
        interface: { type: 'string' },
        'state-dir': { type: 'string' },
        'ca-file': { type: 'string' },
        verbose: { type: 'boolean' },
        'log-file': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'V' },
      },
    }));
  } catch (error) {
    // An argument that is not an option is not repeated: it may be a token pasted in the wrong place.
    const code = (error as { code?: string }).code;
    if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      throw new UsageError(
        'arguments other than options are not taken (the token comes from GATEHOUSE_TOKEN)',
      );
    }
    throw new UsageError((error as Error).message);
  }
  if (values.help === true) return { kind: 'help' };
  if (values.version === true) return { kind: 'version' };

  if (token === undefined || token === '') {
    throw new UsageError(
      `${TOKEN_ENV} is not set: create a gateway token with \`gatehouse-portal token create --gateway SITE\` ` +
        `and pass it in the environment`,
    );
  }
  if (token.length > MAX_TOKEN_CHARS || !/^[\x21-\x7e]+$/.test(token)) {
    throw new UsageError(
      `${TOKEN_ENV} is not a token (printable ASCII without spaces, at most ${MAX_TOKEN_CHARS} characters)`,
    );
  }

  const deviceId = env[ID_ENV] === undefined || env[ID_ENV] === '' ? undefined : env[ID_ENV];
  if (deviceId !== undefined && !/^[\x21-\x7e]{1,128}$/.test(deviceId)) {
    throw new UsageError(`${ID_ENV} must be 1 to 128 printable ASCII characters without spaces`);
  }

  const portalUrl = values.portal ?? (env[PORTAL_URL_ENV] || undefined);
  if (portalUrl === undefined) {
    throw new UsageError(`the portal is needed: --portal URL (or ${PORTAL_URL_ENV})`);
  }
  const socketUrl = gatewaySocketUrl(portalUrl);

  const endpoints = endpointsFrom(values.endpoint, env[ENDPOINTS_ENV]);

  const interfaceName = values.interface ?? DEFAULT_INTERFACE;
  const nameProblem = interfaceNameProblem(interfaceName);
  if (nameProblem !== undefined) throw new UsageError(`--interface: ${nameProblem}`);

  const caFile = resolvePortalCa({ caFile: values['ca-file'], env }).caFile;
  if (caFile !== undefined) {
    try {
      readCaFile(caFile);
    } catch (error) {
      if (error instanceof CaFileError) throw new UsageError(error.message);
      throw error;
    }
  }

  const stateDir = values['state-dir'] ?? DEFAULT_STATE_DIR;
  if (stateDir === '') throw new UsageError('--state-dir is empty');

  return {
    kind: 'run',
    config: {
      token,
      deviceId,
      portalUrl,
      socketUrl,
      endpoints,
      listenPort: listenPortFrom(values['listen-port']),
      interfaceName,
      stateDir,
      caFile,
      verbose: values.verbose === true,
      logFile: values['log-file'],
    },
  };
}

/**
 * The gateway channel's WebSocket URL for a portal URL: https → wss, http → ws, the
 * portal's path (if any) followed by /gateway/websocket unless it already ends so.
 */
export function gatewaySocketUrl(portal: string): string {
  let url: URL;
  try {
    url = new URL(portal);
  } catch {
    throw new UsageError(
      `the portal URL ${JSON.stringify(portal)} is not a URL (https://portal.example.com)`,
    );
  }
  const schemes: Record<string, string> = {
    'https:': 'wss:',
    'wss:': 'wss:',
    'http:': 'ws:',
    'ws:': 'ws:',
  };
  const scheme = schemes[url.protocol];
  if (scheme === undefined) {
    throw new UsageError(
      `the portal URL must start with https:// (or http://, wss://, ws://), not ${url.protocol}//`,
    );
  }
  if (url.username !== '' || url.password !== '') {
    throw new UsageError(
      'the portal URL may not hold a user name or password (the token comes from GATEHOUSE_TOKEN)',
    );
  }
  if (url.search !== '' || url.hash !== '') {
    throw new UsageError('the portal URL may not have a query or a fragment');
  }
  const path = url.pathname.replace(/\/+$/, '');
  const socketPath = path.endsWith(GATEWAY_WEBSOCKET_PATH)
    ? path
    : `${path}${GATEWAY_WEBSOCKET_PATH}`;
  return `${scheme}//${url.host}${socketPath}`;
}

function endpointsFrom(flags: string[] | undefined, fromEnv: string | undefined): string[] {
  const given =
    flags !== undefined && flags.length > 0
      ? flags
      : (fromEnv ?? '')
          .split(',')
          .map((text) => text.trim())
          .filter((text) => text !== '');
  if (given.length === 0) {
    throw new UsageError(
      `where clients reach this gateway is needed: --endpoint HOST:PORT (or ${ENDPOINTS_ENV}, comma-separated)`,
    );
  }
  const endpoints = [...new Set(given)];
  for (const endpoint of endpoints) {
    const problem = endpointProblem(endpoint);
    if (problem !== undefined)
      throw new UsageError(`endpoint ${JSON.stringify(endpoint)}: ${problem}`);
  }
  if (endpoints.length > MAX_GATEWAY_ENDPOINTS) {
    throw new UsageError(`at most ${MAX_GATEWAY_ENDPOINTS} endpoints, not ${endpoints.length}`);
  }
  return endpoints;
}

function listenPortFrom(text: string | undefined): number {
  if (text === undefined) return DEFAULT_LISTEN_PORT;
  const port = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(port >= 1 && port <= 65535)) {
    throw new UsageError(`--listen-port must be a port, 1 to 65535, not ${JSON.stringify(text)}`);
  }
  return port;
}
