/**
 * gatehouse-portal: the portal (`serve`) and its operator commands over the same SQLite
 * database. Exit codes: 0 done, 1 refused or failed, 2 usage or configuration error.
 *
 * A token's text is printed once, alone on stdout, by `token create`; nothing else prints or
 * logs it (the notes about it go to stderr and name only its id).
 */
import { realpathSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createServiceLogger, type Logger } from '@gatehouse/logging';
import packageJson from '../package.json' with { type: 'json' };
import { ApplyError, applyFile, readApplyFile } from './apply/index.ts';
import { openSqliteStorage } from './db/sqlite-storage.ts';
import type { PortalStorage } from './db/storage.ts';
import {
  createGatewayToken,
  createServiceAccountToken,
  devicesTable,
  formatTable,
  OperatorError,
  parseDuration,
  revokeTokenById,
  tableJson,
  tokensTable,
  usersTable,
  type CreatedToken,
  type Table,
} from './operator-commands.ts';
import { DEFAULT_CLIENT_TOKEN_LIFETIME_MS } from './tokens.ts';

const VERSION: string = packageJson.version;
export const DEFAULT_DB_FILE = 'gatehouse-portal.sqlite';

export const USAGE = `usage:
  gatehouse-portal [--db PATH] serve [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE]
                   [--public-url URL] [--client-token-lifetime DURATION] [--trust-proxy]
                   [--upstream-dns ADDR ...] [--search-domain NAME] [--verbose]
  gatehouse-portal [--db PATH] apply FILE [--dry-run]
  gatehouse-portal [--db PATH] token create --service-account NAME [--account SLUG] [--expires-in DURATION]
  gatehouse-portal [--db PATH] token create --gateway SITE [--account SLUG] [--expires-in DURATION]
  gatehouse-portal [--db PATH] token revoke ID
  gatehouse-portal [--db PATH] tokens [--account SLUG] [--json]
  gatehouse-portal [--db PATH] users [--account SLUG] [--json]
  gatehouse-portal [--db PATH] devices [--account SLUG] [--json]
  gatehouse-portal --help | --version

--db PATH   the SQLite database (created with its migrations when missing); default
            $GATEHOUSE_PORTAL_DB, else $STATE_DIRECTORY/portal.sqlite (systemd's
            StateDirectory=), else ./${DEFAULT_DB_FILE}

serve       the sign-in pages and the client and gateway WebSocket endpoints
            --listen HOST:PORT  default 127.0.0.1:8080; [::]:443 for every IPv6 address
            --tls-cert/--tls-key  PEM files: HTTPS and WSS
            --public-url URL  where people reach the portal (its origin is checked on sign-in)
            --client-token-lifetime DURATION  tokens made by signing in (default 7d)
            --trust-proxy  behind a reverse proxy: sign-in limits per source address
                           take it from the last X-Forwarded-For entry (only if the proxy
                           sets it; otherwise a client could pick its own address)
            --upstream-dns ADDR  resolvers told to clients (repeat, or comma-separated)
            --search-domain NAME  the search domain told to clients
apply       make the database match FILE (YAML or JSON: accounts, users, service
            accounts, sites, resources, groups, policies); prints each change, or
            "no changes". Each kind listed under an account is made to match
            exactly, kinds not listed are left alone; accounts, devices and tokens
            are never deleted by it. A user's password is used only when the user
            is created. --dry-run: check and print, change nothing
token create
            a token for a service account or for the gateways of a site: the
            token is printed once, on stdout, and stored only as its hash.
            --account may be left out when there is one account.
            --expires-in DURATION  e.g. 90d, 12h (default: does not expire)
token revoke ID
            revoke a token (its live sessions are closed by serve)
tokens, users, devices
            list them (--json: one JSON array)

DURATION is a number and s, m, h or d: 90d, 12h, 30m.`;

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  now: () => number;
}

/** What `serve` passes to serve.ts's runServe (a subset of its ServeOptions). */
export interface CliServeOptions {
  database: string;
  listen?: string;
  tlsCert?: string;
  tlsKey?: string;
  upstreamDns?: string[];
  searchDomain?: string;
  http?: { publicUrl?: string; clientTokenLifetimeMs?: number; trustProxy?: boolean };
  logger?: Logger;
}

export interface CliDeps {
  /** serve.ts's runServe (tests may pass another). */
  runServe: (options: CliServeOptions) => Promise<{ stopped: Promise<void> }>;
}

// serve.ts (and with it ws, the channels, the HTTP side) is loaded only by `serve`, so the
// operator commands start quickly.
const DEFAULT_DEPS: CliDeps = {
  runServe: async (options) => (await import('./serve.ts')).runServe(options),
};

class UsageError extends Error {}

/** The database path: --db, else $GATEHOUSE_PORTAL_DB, else $STATE_DIRECTORY, else ./. */
export function databasePath(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  if (flag !== undefined && flag !== '') return flag;
  const fromEnv = env.GATEHOUSE_PORTAL_DB;
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  // systemd may list several directories, colon-separated: the first is ours.
  const state = env.STATE_DIRECTORY?.split(':')[0];
  if (state !== undefined && state !== '') return join(state, 'portal.sqlite');
  return DEFAULT_DB_FILE;
}

type OptionSpec = Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>;

function parse(
  args: string[],
  options: OptionSpec,
  positionals: { min: number; max: number; what: string },
) {
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const count = parsed.positionals.length;
  if (count < positionals.min || count > positionals.max) {
    throw new UsageError(
      count < positionals.min
        ? `missing ${positionals.what}`
        : `unexpected ${parsed.positionals.slice(positionals.max).join(' ')}`,
    );
  }
  return parsed as {
    values: Record<string, string | boolean | string[] | undefined>;
    positionals: string[];
  };
}

function str(values: Record<string, unknown>, key: string): string | undefined {
  const value = values[key];
  return typeof value === 'string' ? value : undefined;
}

/** Leading global options (before the command): --db, --help, --version. */
function splitGlobal(argv: string[]): {
  db?: string;
  help: boolean;
  version: boolean;
  rest: string[];
} {
  let db: string | undefined;
  let help = false;
  let version = false;
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--help' || arg === '-h') help = true;
    else if (arg === '--version') version = true;
    else if (arg === '--db') {
      const value = argv[i + 1];
      if (value === undefined || value.startsWith('--')) throw new UsageError('--db needs a PATH');
      db = value;
      i++;
    } else if (arg.startsWith('--db=')) db = arg.slice('--db='.length);
    else if (arg.startsWith('-')) throw new UsageError(`unknown option ${arg}`);
    else break;
  }
  return { ...(db !== undefined ? { db } : {}), help, version, rest: argv.slice(i) };
}

function printTable(io: CliIo, table: Table, json: boolean): void {
  if (json) io.stdout(`${JSON.stringify(tableJson(table), null, 2)}\n`);
  else if (table.rows.length === 0) io.stderr('(none)\n');
  else io.stdout(`${formatTable(table)}\n`);
}

function withStorage<T>(path: string, fn: (storage: PortalStorage) => T): T {
  let storage: PortalStorage;
  try {
    storage = openSqliteStorage(path);
  } catch (error) {
    throw new OperatorError(`cannot open the database ${path}: ${(error as Error).message}`);
  }
  try {
    return fn(storage);
  } finally {
    storage.close();
  }
}

function expiresAt(io: CliIo, values: Record<string, unknown>): number | null {
  const text = str(values, 'expires-in');
  return text === undefined ? null : io.now() + parseDuration('--expires-in', text);
}

function reportToken(io: CliIo, created: CreatedToken, what: string): void {
  // The token alone on stdout (TOKEN=$(gatehouse-portal token create …)); the rest on stderr.
  io.stdout(`${created.text}\n`);
  const expiry =
    created.token.expiresAt === null
      ? 'does not expire'
      : `expires ${new Date(created.token.expiresAt).toISOString()}`;
  io.stderr(
    `created token ${created.token.id} for ${what} (${expiry}); it is shown only this once and stored only as its hash\n`,
  );
}

async function run(argv: string[], io: CliIo, deps: CliDeps): Promise<number> {
  const global = splitGlobal(argv);
  if (global.help) {
    io.stdout(`${USAGE}\n`);
    return 0;
  }
  if (global.version) {
    io.stdout(`gatehouse-portal ${VERSION}\n`);
    return 0;
  }
  const [command, ...args] = global.rest;
  // --db may also come after the command.
  const dbOption = { db: { type: 'string' as const } };
  const db = (values: Record<string, unknown>) =>
    databasePath(str(values, 'db') ?? global.db, io.env);

  switch (command) {
    case undefined:
      throw new UsageError('missing command');
    case 'help':
      io.stdout(`${USAGE}\n`);
      return 0;
    case 'apply': {
      const { values, positionals } = parse(
        args,
        { ...dbOption, 'dry-run': { type: 'boolean' } },
        { min: 1, max: 1, what: 'FILE' },
      );
      const path = positionals[0] as string;
      let file;
      try {
        file = readApplyFile(path);
      } catch (error) {
        if (error instanceof ApplyError) {
          io.stderr(`gatehouse-portal: apply: ${error.message}\n`);
          return 2;
        }
        throw error;
      }
      const dryRun = values['dry-run'] === true;
      return withStorage(db(values), (storage) => {
        try {
          const result = applyFile(storage, file, { now: io.now(), dryRun });
          io.stdout(`${result.lines.join('\n')}\n`);
          if (dryRun) io.stderr('dry run: nothing was changed\n');
          return 0;
        } catch (error) {
          if (error instanceof ApplyError) {
            io.stderr(
              `gatehouse-portal: apply: ${error.message.replace(/^apply: /, `${path}: `)}\nnothing was changed\n`,
            );
            return 2;
          }
          throw error;
        }
      });
    }
    case 'token': {
      const [sub, ...rest] = args;
      if (sub === 'create') {
        const { values } = parse(
          rest,
          {
            ...dbOption,
            'service-account': { type: 'string' },
            gateway: { type: 'string' },
            account: { type: 'string' },
            'expires-in': { type: 'string' },
          },
          { min: 0, max: 0, what: '' },
        );
        const service = str(values, 'service-account');
        const site = str(values, 'gateway');
        if ((service === undefined) === (site === undefined)) {
          throw new UsageError(
            'token create: give one of --service-account NAME or --gateway SITE',
          );
        }
        const account = str(values, 'account');
        const expires = expiresAt(io, values);
        return withStorage(db(values), (storage) => {
          const now = io.now();
          if (service !== undefined) {
            const created = createServiceAccountToken(storage, {
              ...(account !== undefined ? { account } : {}),
              name: service,
              now,
              expiresAt: expires,
            });
            reportToken(io, created, `service account ${created.account.slug}/${service}`);
          } else {
            const created = createGatewayToken(storage, {
              ...(account !== undefined ? { account } : {}),
              site: site as string,
              now,
              expiresAt: expires,
            });
            reportToken(io, created, `the gateways of site ${created.account.slug}/${site}`);
          }
          return 0;
        });
      }
      if (sub === 'revoke') {
        const { values, positionals } = parse(rest, dbOption, {
          min: 1,
          max: 1,
          what: 'the token ID',
        });
        const id = positionals[0] as string;
        return withStorage(db(values), (storage) => {
          const outcome = revokeTokenById(storage, id, io.now());
          io.stdout(
            outcome === 'revoked' ? `revoked token ${id}\n` : `token ${id} was already revoked\n`,
          );
          return 0;
        });
      }
      throw new UsageError(
        sub === undefined ? 'token: missing create or revoke' : `token: unknown subcommand ${sub}`,
      );
    }
    case 'tokens':
    case 'users':
    case 'devices': {
      const { values } = parse(
        args,
        { ...dbOption, account: { type: 'string' }, json: { type: 'boolean' } },
        { min: 0, max: 0, what: '' },
      );
      const account = str(values, 'account');
      return withStorage(db(values), (storage) => {
        const table =
          command === 'users'
            ? usersTable(storage, account)
            : command === 'devices'
              ? devicesTable(storage, account)
              : tokensTable(storage, account);
        printTable(io, table, values.json === true);
        return 0;
      });
    }
    case 'serve': {
      const { values } = parse(
        args,
        {
          ...dbOption,
          listen: { type: 'string' },
          'tls-cert': { type: 'string' },
          'tls-key': { type: 'string' },
          'public-url': { type: 'string' },
          'client-token-lifetime': { type: 'string' },
          'upstream-dns': { type: 'string', multiple: true },
          'search-domain': { type: 'string' },
          'trust-proxy': { type: 'boolean' },
          verbose: { type: 'boolean' },
        },
        { min: 0, max: 0, what: '' },
      );
      const tlsCert = str(values, 'tls-cert');
      const tlsKey = str(values, 'tls-key');
      if ((tlsCert === undefined) !== (tlsKey === undefined)) {
        throw new UsageError('serve: --tls-cert and --tls-key go together');
      }
      const publicUrl = str(values, 'public-url');
      if (publicUrl !== undefined && !URL.canParse(publicUrl)) {
        throw new UsageError(`serve: --public-url ${publicUrl}: not a URL`);
      }
      const lifetimeText = str(values, 'client-token-lifetime');
      const clientTokenLifetimeMs =
        lifetimeText === undefined
          ? DEFAULT_CLIENT_TOKEN_LIFETIME_MS
          : parseDuration('--client-token-lifetime', lifetimeText);
      const upstreamDns = ((values['upstream-dns'] as string[] | undefined) ?? [])
        .flatMap((v) => v.split(','))
        .map((v) => v.trim())
        .filter((v) => v !== '');
      const logger = createServiceLogger({
        name: 'gatehouse-portal',
        debug: values.verbose === true,
      });
      const listen = str(values, 'listen');
      const searchDomain = str(values, 'search-domain');
      const running = await deps.runServe({
        database: db(values),
        ...(listen !== undefined ? { listen } : {}),
        ...(tlsCert !== undefined && tlsKey !== undefined ? { tlsCert, tlsKey } : {}),
        upstreamDns,
        ...(searchDomain !== undefined ? { searchDomain } : {}),
        http: {
          ...(publicUrl !== undefined ? { publicUrl } : {}),
          clientTokenLifetimeMs,
          ...(values['trust-proxy'] === true ? { trustProxy: true } : {}),
        },
        logger,
      });
      await running.stopped;
      logger.close();
      return 0;
    }
    default:
      throw new UsageError(`unknown command ${command}`);
  }
}

/** Runs the CLI; resolves to the exit code. Never throws. */
export async function main(
  argv: string[],
  io: CliIo,
  deps: CliDeps = DEFAULT_DEPS,
): Promise<number> {
  try {
    return await run(argv, io, deps);
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr(`gatehouse-portal: ${error.message}\n(gatehouse-portal --help shows the usage)\n`);
      return 2;
    }
    if (error instanceof OperatorError) {
      const hint = error.exitCode === 2 ? '\n(gatehouse-portal --help shows the usage)' : '';
      io.stderr(`gatehouse-portal: ${error.message}${hint}\n`);
      return error.exitCode;
    }
    io.stderr(`gatehouse-portal: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  const io: CliIo = {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    env: process.env,
    now: Date.now,
  };
  void main(process.argv.slice(2), io).then((code) => {
    process.exitCode = code;
  });
}
