/**
 * gatehouse-tunnel: the tunnel service as a daemon (`serve`), a WireGuard
 * tunnel from a wg-quick file or from a portal (`up`: handed to the daemon,
 * else run in the foreground), and the running service's control socket
 * (`down`, `status`, `dns-resources`). Exit codes: 0 done, 1 runtime error,
 * 2 usage or configuration error (a token file refused too), 4 sign-in
 * required (the portal refused the token).
 */

import { existsSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { resolveDnsControlSetting, type DnsControlSetting } from '@gatehouse/netconfig';
import { createServiceLogger, LogFile, type Logger, type ServiceLogger } from '@gatehouse/logging';
import { CaFileError, readCaFile, resolvePortalCa } from '@gatehouse/phoenix-channel';
import {
  DEFAULT_SOCKET_PATH,
  dnsResourcePatternProblem,
  MAX_WG_QUICK_CONFIG_CHARS,
  requestSchemas,
  type DnsResource,
  type RequestParams,
  type TunnelStatus,
} from '@gatehouse/protocol';
import { ServiceClient, ServiceClientError } from '@gatehouse/service-ipc/client';
import packageJson from '../package.json' with { type: 'json' };
import { readConfigFile } from './config-file.ts';
import { DryRunTunnel } from './dry-run-tunnel.ts';
import { clientSocketUrl, PortalUrlError } from './portal-url.ts';
import { EXIT_SIGN_IN_REQUIRED, runTunnelService } from './service.ts';
import { createSystemTunnel, repairSystem } from './system-tunnel.ts';
import { formatDnsResources, formatStatus } from './status-format.ts';
import { DEFAULT_TOKEN_FILE, readPortalToken, TokenError } from './token-file.ts';
import type { Tunnel } from './tunnel.ts';
import {
  formatConfigProblems,
  parseWgQuickConfig,
  tunnelSpecFromWgQuick,
  type WgQuickConfig,
} from './wg-quick-config.ts';

const DOWN_WAIT_MS = 15_000;
/** Endpoint lookups, the DNS probe and the engine's start; well beyond what they take. */
const START_WAIT_MS = 60_000;
const VERSION: string = packageJson.version;
const PORTAL_URL_ENV = 'GATEHOUSE_PORTAL_URL';
const DEFAULT_PORTAL_INTERFACE = 'gatehouse0';

const USAGE = `usage:
  gatehouse-tunnel serve [--socket PATH] [--verbose] [--log-file PATH]
  gatehouse-tunnel up --config FILE [--socket PATH] [--dns-control MODE] [--foreground]
                     [--dry-run] [--verbose] [--log-file PATH]
  gatehouse-tunnel up --portal URL [--token-file PATH] [--ca-file PATH] [--interface NAME]
                     [--no-internet-resource] [--no-lan-bypass] [--device-name NAME]
                     [--socket PATH] [--dns-control MODE] [--foreground] [--dry-run]
                     [--verbose] [--log-file PATH]
  gatehouse-tunnel apply --config FILE [--socket PATH]
  gatehouse-tunnel down [--socket PATH]
  gatehouse-tunnel status [--json] [--socket PATH]
  gatehouse-tunnel dns-resources [--json] [--socket PATH] [PATTERN ...]
  gatehouse-tunnel --help | --version

serve     the tunnel service (root): repairs what a crashed run left, then
          serves the control socket with no tunnel up, and starts and stops
          tunnels on request until SIGINT or SIGTERM (which stop the tunnel)
up        start the tunnel described by FILE (wg-quick format): when a
          service answers on the socket it runs the tunnel and up returns once
          the tunnel is configured; otherwise up runs it in the foreground
          until SIGINT, SIGTERM or \`gatehouse-tunnel down\`. The interface is
          named after FILE (wg0.conf -> wg0), as wg-quick does
          --foreground  run in the foreground even when a service answers
          --dns-control MODE  how DNS= reaches the system: auto (default),
                        systemd-resolved, etc-resolv-conf or disabled; beats
                        $GATEHOUSE_DNS_CONTROL
          --dry-run     check FILE and serve the control socket in the foreground,
                        configure nothing
          --log-file PATH  also log JSON lines to PATH (default: $GATEHOUSE_LOG_FILE,
                        else none), mode 0640, renamed to PATH.1 at 16 MiB
up --portal URL
          the same with the tunnel the portal configures (default URL:
          $GATEHOUSE_PORTAL_URL): the service joins the portal with the token
          and a new WireGuard key, sets the routes and DNS names of the
          resources it may reach, asks for access at the first packet to one,
          and follows the portal's changes, reconnecting until the portal
          refuses the token (exit 4 in the foreground: sign-in required).
          SIGHUP reconnects to the portal, keeping the tunnel up
          --token-file PATH  the token when $GATEHOUSE_TOKEN is not set (default
                        ${DEFAULT_TOKEN_FILE}); it must be a regular file owned by root
                        with mode 0400 or 0600 (chown root:root PATH && chmod 600 PATH)
          --ca-file PATH  a PEM file of CAs trusted for the portal besides the
                        system's (default: $GATEHOUSE_CA_FILE)
          --interface NAME  the tunnel's interface (default ${DEFAULT_PORTAL_INTERFACE})
          --no-internet-resource  leave the Internet resource alone even when
                        the portal offers it (no default route into the tunnel)
          --no-lan-bypass  with the Internet resource, send the LAN through the
                        tunnel too (by default the LAN's own routes stay outside)
          --device-name NAME  the device's name in the portal (default: the host name)
          The device id is made once and kept in $STATE_DIRECTORY/device-id
          (default /var/lib/gatehouse/device-id)
apply     change the running tunnel into FILE's configuration, applying only
          what differs (peers left alone keep their sessions); its interface
          name, PrivateKey, ListenPort and FwMark cannot change
down      stop the running tunnel and wait until it is gone (a service keeps running)
status    show the running tunnel's peers, counters, DNS and DNS resources;
          for a portal tunnel also the portal connection, who is signed in
          and the resources with their sites' status (--json: machine-readable)
dns-resources
          replace the running tunnel's DNS resources: names and patterns
          (app.example.com, us-east?.example.com, *.example.com, **.example.com)
          that the DNS stub answers with proxy addresses, whose packets go to
          the peer whose AllowedIPs cover 100.96.0.0/11 and
          fd00:2021:1111:8000::/107; other names go to the upstream resolvers
          (DNS=, else the system's). No PATTERN clears them and stops the stub.
          Prints the DNS resources and where the stub answers (--json:
          machine-readable)

--socket PATH   control socket (default: $GATEHOUSE_SOCKET, else ${DEFAULT_SOCKET_PATH})

exit codes: 0 done, 1 runtime error, 2 usage or configuration error (a token
file refused too), ${EXIT_SIGN_IN_REQUIRED} sign-in required (the portal refused the token)`;

class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return serve(rest);
    case 'up':
      return up(rest);
    case 'apply':
      return apply(rest);
    case 'down':
      return down(rest);
    case 'status':
      return status(rest);
    case 'dns-resources':
      return dnsResources(rest);
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(`${USAGE}\n`);
      return 0;
    case '--version':
    case '-V':
      process.stdout.write(`gatehouse-tunnel ${VERSION}\n`);
      return 0;
    case undefined:
      throw new UsageError('a command is required');
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

async function up(args: string[]): Promise<number> {
  const { values } = parseOptions(args, {
    config: { type: 'string' },
    portal: { type: 'string' },
    'token-file': { type: 'string' },
    'ca-file': { type: 'string' },
    interface: { type: 'string' },
    'no-internet-resource': { type: 'boolean' },
    'no-lan-bypass': { type: 'boolean' },
    'device-name': { type: 'string' },
    socket: { type: 'string' },
    foreground: { type: 'boolean' },
    'dns-control': { type: 'string' },
    'dry-run': { type: 'boolean' },
    verbose: { type: 'boolean' },
    'log-file': { type: 'string' },
  });
  const portalOnly = [
    'token-file',
    'ca-file',
    'interface',
    'no-internet-resource',
    'no-lan-bypass',
    'device-name',
  ] as const;
  if (values.config !== undefined && values.portal !== undefined)
    throw new UsageError('up takes --config FILE or --portal URL, not both');
  if (values.config !== undefined) {
    const misplaced = portalOnly.find((name) => values[name] !== undefined);
    if (misplaced !== undefined) throw new UsageError(`--${misplaced} goes with --portal URL`);
    return upFromFile(values.config, values);
  }
  const portalUrl = values.portal ?? (process.env[PORTAL_URL_ENV] || undefined);
  if (portalUrl === undefined)
    throw new UsageError(`up needs --config FILE or --portal URL (or ${PORTAL_URL_ENV})`);
  return upFromPortal(portalUrl, values);
}

interface UpOptions {
  socket?: string | undefined;
  foreground?: boolean | undefined;
  'dns-control'?: string | undefined;
  'dry-run'?: boolean | undefined;
  verbose?: boolean | undefined;
  'log-file'?: string | undefined;
}

async function upFromFile(file: string, values: UpOptions): Promise<number> {
  const interfaceName = interfaceNameFor(file);
  const dnsControl = dnsControlFrom(values['dns-control']);
  const config = readConfig(file);
  if (config === undefined) return 2;
  const socketPath = socketPathFrom(values.socket);
  const dryRun = values['dry-run'] === true;
  if (values.foreground !== true && !dryRun) {
    const handed = await handToDaemon(socketPath, async (client) => {
      if (!fitsRequest(config.text)) return false;
      await client.request(
        'start-tunnel',
        { wgQuickConfig: config.text, interfaceName, dnsControl },
        { timeoutMs: START_WAIT_MS },
      );
      return true;
    });
    if (handed === false) return 2;
    if (handed === true) {
      process.stdout.write(`tunnel ${interfaceName} is up (run by the service on ${socketPath})\n`);
      return 0;
    }
  }
  return withServiceLogger(values, (logger) =>
    runTunnelService({
      foreground: { spec: tunnelSpecFromWgQuick(config.parsed, interfaceName), dnsControl },
      socketPath,
      createTunnel: (options) => createTunnel(dryRun, options.dnsControl, logger),
      serviceVersion: VERSION,
      logger,
      logLinesLost: () => logger.linesLost,
    }),
  );
}

async function upFromPortal(
  portalUrl: string,
  values: UpOptions & {
    'token-file'?: string | undefined;
    'ca-file'?: string | undefined;
    interface?: string | undefined;
    'no-internet-resource'?: boolean | undefined;
    'no-lan-bypass'?: boolean | undefined;
    'device-name'?: string | undefined;
  },
): Promise<number> {
  try {
    clientSocketUrl(portalUrl);
  } catch (error) {
    if (error instanceof PortalUrlError) throw new UsageError(error.message);
    throw error;
  }
  const interfaceName = values.interface ?? DEFAULT_PORTAL_INTERFACE;
  if (!/^[A-Za-z0-9_=+.-]{1,15}$/.test(interfaceName)) {
    throw new UsageError(
      `--interface ${JSON.stringify(interfaceName)}: 1 to 15 of the characters A-Z a-z 0-9 _ = + . -`,
    );
  }
  const deviceName = values['device-name'];
  if (deviceName !== undefined && (deviceName === '' || deviceName.length > 255))
    throw new UsageError('--device-name: 1 to 255 characters');
  const dnsControl = dnsControlFrom(values['dns-control']);
  const given = resolvePortalCa({ caFile: values['ca-file'], env: process.env }).caFile;
  // The daemon reads it from its own working directory.
  const caFile = given === undefined ? undefined : resolve(given);
  if (caFile !== undefined) {
    try {
      readCaFile(caFile);
    } catch (error) {
      if (!(error instanceof CaFileError)) throw error;
      process.stderr.write(`gatehouse-tunnel: ${error.message}\n`);
      return 2;
    }
  }
  let token: string;
  try {
    ({ token } = readPortalToken(process.env, values['token-file'] ?? DEFAULT_TOKEN_FILE));
  } catch (error) {
    if (!(error instanceof TokenError)) throw error;
    process.stderr.write(`gatehouse-tunnel: ${error.message}\n`);
    return 2;
  }
  const request: RequestParams<'start-portal-tunnel'> = {
    portalUrl,
    token,
    ...(caFile === undefined ? {} : { caFile }),
    interfaceName,
    dnsControl,
    internetResource: values['no-internet-resource'] !== true,
    lanBypass: values['no-lan-bypass'] !== true,
    ...(deviceName === undefined ? {} : { deviceName }),
  };
  const socketPath = socketPathFrom(values.socket);
  const dryRun = values['dry-run'] === true;
  if (values.foreground !== true && !dryRun) {
    let status: TunnelStatus | undefined;
    try {
      status = await handToDaemon(socketPath, (client) =>
        client.request('start-portal-tunnel', request, { timeoutMs: START_WAIT_MS }),
      );
    } catch (error) {
      if (error instanceof ServiceClientError && error.code === 'sign-in-required') {
        process.stderr.write(`gatehouse-tunnel: ${error.message}\n`);
        return EXIT_SIGN_IN_REQUIRED;
      }
      throw error;
    }
    if (status !== undefined) {
      process.stdout.write(`${portalOutcome(interfaceName, socketPath, status)}\n`);
      return 0;
    }
  }
  return withServiceLogger(values, (logger) =>
    runTunnelService({
      foreground: { portal: request },
      socketPath,
      createTunnel: (options) => createTunnel(dryRun, options.dnsControl, logger),
      serviceVersion: VERSION,
      logger,
      logLinesLost: () => logger.linesLost,
    }),
  );
}

/** What `up --portal` says once the service answered. */
function portalOutcome(interfaceName: string, socketPath: string, status: TunnelStatus): string {
  const who = status.portal?.identity;
  const signedIn =
    who === undefined ? '' : `, signed in as ${who.actorName} (account ${who.accountSlug})`;
  if (status.state === 'connected')
    return `tunnel ${interfaceName} is up (run by the service on ${socketPath})${signedIn}`;
  const why = status.portal?.lastError === undefined ? '' : ` (${status.portal.lastError})`;
  return (
    `tunnel ${interfaceName}: connecting to the portal${why}; the service keeps trying ` +
    '(gatehouse-tunnel status shows how it goes)'
  );
}

/** The service's logger while `run` runs; 2 when the log file cannot be opened. */
async function withServiceLogger(
  values: { verbose?: boolean | undefined; 'log-file'?: string | undefined },
  run: (logger: ServiceLogger) => Promise<number>,
): Promise<number> {
  const logFile = openLogFile(
    values['log-file'] ?? (process.env['GATEHOUSE_LOG_FILE'] || undefined),
  );
  if (logFile === null) return 2;
  const logger = createServiceLogger({
    name: 'gatehouse-tunnel',
    debug: values.verbose === true,
    file: logFile,
  });
  try {
    return await run(logger);
  } finally {
    logger.close();
  }
}

/**
 * `up` with a daemon on the socket: `send` hands it the tunnel, which it answers once the
 * tunnel is configured. Undefined when no daemon answers (then up runs in the foreground).
 */
async function handToDaemon<T>(
  socketPath: string,
  send: (client: ServiceClient) => Promise<T>,
): Promise<T | undefined> {
  let client: ServiceClient;
  try {
    client = await ServiceClient.connect({ socketPath });
  } catch (error) {
    if (error instanceof ServiceClientError && error.code === 'not-running') return undefined;
    throw error;
  }
  try {
    return await send(client);
  } finally {
    client.close();
  }
}

/** False after saying so when the file is too long to send. */
function fitsRequest(wgQuickConfig: string): boolean {
  if (wgQuickConfig.length <= MAX_WG_QUICK_CONFIG_CHARS) return true;
  process.stderr.write(
    `gatehouse-tunnel: the file is longer than the service accepts (${MAX_WG_QUICK_CONFIG_CHARS} characters)\n`,
  );
  return false;
}

async function serve(args: string[]): Promise<number> {
  const { values } = parseOptions(args, {
    socket: { type: 'string' },
    verbose: { type: 'boolean' },
    'log-file': { type: 'string' },
  });
  return withServiceLogger(values, (logger) =>
    runTunnelService({
      socketPath: socketPathFrom(values.socket),
      createTunnel: (options) => createSystemTunnel({ dnsControl: options.dnsControl, logger }),
      repair: repairSystem,
      serviceVersion: VERSION,
      logger,
      logLinesLost: () => logger.linesLost,
    }),
  );
}

/** Undefined when no log file is wanted; null after printing why it cannot be opened. */
function openLogFile(path: string | undefined): LogFile | undefined | null {
  if (path === undefined) return undefined;
  try {
    return new LogFile(path);
  } catch (error) {
    process.stderr.write(
      `gatehouse-tunnel: cannot open the log file ${path}: ${(error as Error).message}\n`,
    );
    return null;
  }
}

function createTunnel(dryRun: boolean, dnsControl: DnsControlSetting, logger: Logger): Tunnel {
  return dryRun ? new DryRunTunnel() : createSystemTunnel({ dnsControl, logger });
}

function dnsControlFrom(flag: string | undefined): DnsControlSetting {
  try {
    return resolveDnsControlSetting(flag, process.env['GATEHOUSE_DNS_CONTROL']);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

async function apply(args: string[]): Promise<number> {
  const { values } = parseOptions(args, { config: { type: 'string' }, socket: { type: 'string' } });
  if (values.config === undefined) throw new UsageError('apply needs --config FILE');
  const interfaceName = interfaceNameFor(values.config);
  const config = readConfig(values.config);
  if (config === undefined) return 2;
  if (!fitsRequest(config.text)) return 2;
  const client = await ServiceClient.connect({ socketPath: socketPathFrom(values.socket) });
  try {
    await client.request('apply-tunnel', { wgQuickConfig: config.text, interfaceName });
    process.stdout.write(`tunnel ${interfaceName}: the changes are applied\n`);
    return 0;
  } finally {
    client.close();
  }
}

async function down(args: string[]): Promise<number> {
  const { values } = parseOptions(args, { socket: { type: 'string' } });
  const socketPath = socketPathFrom(values.socket);
  const client = await ServiceClient.connect({ socketPath });
  let serviceExits: boolean;
  try {
    ({ serviceExits } = await client.request('down', {}, { timeoutMs: DOWN_WAIT_MS }));
  } finally {
    client.close();
  }
  if (!serviceExits) {
    process.stdout.write('the tunnel is down (the service keeps running)\n');
    return 0;
  }
  const deadline = Date.now() + DOWN_WAIT_MS;
  while (existsSync(socketPath)) {
    if (Date.now() > deadline) {
      process.stderr.write(
        `gatehouse-tunnel: the tunnel accepted down but ${socketPath} is still there\n`,
      );
      return 1;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  process.stdout.write('the tunnel is down\n');
  return 0;
}

async function status(args: string[]): Promise<number> {
  const { values } = parseOptions(args, { json: { type: 'boolean' }, socket: { type: 'string' } });
  const client = await ServiceClient.connect({ socketPath: socketPathFrom(values.socket) });
  try {
    const result = await client.request('status', {});
    const text =
      values.json === true ? JSON.stringify(result, null, 2) : formatStatus(result, Date.now());
    process.stdout.write(`${text}\n`);
    return 0;
  } finally {
    client.close();
  }
}

async function dnsResources(args: string[]): Promise<number> {
  const { values, positionals } = parseOptions(
    args,
    { json: { type: 'boolean' }, socket: { type: 'string' } },
    true,
  );
  const resources = dnsResourcesFrom(positionals);
  const client = await ServiceClient.connect({ socketPath: socketPathFrom(values.socket) });
  try {
    const result = await client.request('set-dns-resources', { resources });
    const text =
      values.json === true
        ? JSON.stringify(result, null, 2)
        : `dns resources: ${formatDnsResources(result)}`;
    process.stdout.write(`${text}\n`);
    return 0;
  } finally {
    client.close();
  }
}

/** The request's resources, checked as the service will check them. */
function dnsResourcesFrom(patterns: string[]): DnsResource[] {
  const problem = dnsResourcePatternProblem(patterns);
  if (problem !== undefined) throw new UsageError(problem);
  const resources = patterns.map((address) => ({ address }));
  const parsed = requestSchemas['set-dns-resources'].params.safeParse({ resources });
  if (!parsed.success) {
    const [issue] = parsed.error.issues;
    const index = issue?.path[1];
    const which =
      typeof index === 'number'
        ? `DNS resource ${JSON.stringify(patterns[index])}`
        : 'DNS resources';
    throw new UsageError(`${which}: ${issue?.message ?? 'refused'}`);
  }
  return parsed.data.resources;
}

function parseOptions<T extends NonNullable<ParseArgsConfig['options']>>(
  args: string[],
  options: T,
  allowPositionals = false,
) {
  try {
    return parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: boolean }>({
      args,
      options,
      strict: true,
      allowPositionals,
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function socketPathFrom(option: string | undefined): string {
  return option ?? (process.env['GATEHOUSE_SOCKET'] || DEFAULT_SOCKET_PATH);
}

/** As wg-quick: the file wg0.conf brings up the interface wg0. */
function interfaceNameFor(file: string): string {
  const name = basename(file).replace(/\.conf$/, '');
  if (!/^[A-Za-z0-9_=+.-]{1,15}$/.test(name)) {
    throw new UsageError(
      `cannot name the interface after "${basename(file)}": name the file IFNAME.conf, ` +
        'IFNAME being 1 to 15 of the characters A-Z a-z 0-9 _ = + . -',
    );
  }
  return name;
}

/** Undefined after printing the problems. */
function readConfig(file: string): { text: string; parsed: WgQuickConfig } | undefined {
  let text: string;
  try {
    const read = readConfigFile(file);
    for (const warning of read.warnings)
      process.stderr.write(`gatehouse-tunnel: warning: ${warning}\n`);
    text = read.text;
  } catch (error) {
    process.stderr.write(`gatehouse-tunnel: cannot read ${file}: ${(error as Error).message}\n`);
    return undefined;
  }
  const parsed = parseWgQuickConfig(text);
  if (parsed.ok) return { text, parsed: parsed.config };
  process.stderr.write(`${formatConfigProblems(file, parsed.problems)}\n`);
  return undefined;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof UsageError) {
      process.stderr.write(`gatehouse-tunnel: ${error.message}\n${USAGE}\n`);
      process.exit(2);
    }
    const message =
      error instanceof ServiceClientError
        ? error.message
        : ((error as Error)?.stack ?? String(error));
    process.stderr.write(`gatehouse-tunnel: ${message}\n`);
    process.exit(1);
  },
);
