/**
 * gatehouse-gateway: the gateway as a foreground process (root) until SIGINT
 * or SIGTERM. SIGUSR1 logs one status line. Exit codes: 0 stopped by a
 * signal, 1 runtime failure, 2 usage or configuration error, 3 the portal
 * refused the token. GATEHOUSE_TOKEN is taken out of the environment before
 * anything else runs and is never logged.
 */
// First: SIGUSR1 must find a listener before anything else loads (see status-signal.ts).
import { onStatusSignal } from './status-signal.ts';

import { hostname } from 'node:os';

import { Engine } from '@gatehouse/engine';
import { createServiceLogger, LogFile, type ServiceLogger } from '@gatehouse/logging';
import { PhoenixSocket } from '@gatehouse/phoenix-channel';
import { GATEWAY_TOPIC, MAX_NAME_CHARS, type GatewayJoinPayload } from '@gatehouse/protocol';
import { encodeKey } from '@gatehouse/wireguard';

import packageJson from '../package.json' with { type: 'json' };
import { parseInvocation, USAGE, UsageError, type GatewayConfig } from './config.ts';
import { KernelForwarding } from './forwarding.ts';
import { EXIT_FAILURE, EXIT_STOPPED, Gateway, GATEWAY_MTU } from './gateway.ts';
import { GatewaySession } from './gateway-session.ts';
import { systemNameResolution } from './name-resolution.ts';
import { GatewayTable } from './nftables.ts';
import { loadOrCreatePrivateKey, PrivateKeyError, type GatewayKey } from './private-key.ts';
import { runIp, runNft } from './system-commands.ts';
import { newInterfacesHaveIpv6, TunInterface } from './tun-interface.ts';

const NAME = 'gatehouse-gateway';
const VERSION: string = packageJson.version;
const EXIT_USAGE = 2;

async function main(argv: string[]): Promise<number> {
  let config: GatewayConfig;
  try {
    const invocation = parseInvocation(argv, process.env);
    if (invocation.kind === 'help') {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    if (invocation.kind === 'version') {
      process.stdout.write(`${NAME} ${VERSION}\n`);
      return 0;
    }
    config = invocation.config;
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`${NAME}: ${error.message}\n${USAGE}\n`);
    return EXIT_USAGE;
  }

  let key: GatewayKey;
  try {
    key = loadOrCreatePrivateKey(config.stateDir);
  } catch (error) {
    if (!(error instanceof PrivateKeyError)) throw error;
    process.stderr.write(`${NAME}: ${error.message}\n`);
    return EXIT_USAGE;
  }

  let logFile: LogFile | undefined;
  if (config.logFile !== undefined) {
    try {
      logFile = new LogFile(config.logFile);
    } catch (error) {
      process.stderr.write(
        `${NAME}: cannot open the log file ${config.logFile}: ${(error as Error).message}\n`,
      );
      return EXIT_USAGE;
    }
  }
  const logger = createServiceLogger({
    name: NAME,
    debug: config.verbose,
    ...(logFile === undefined ? {} : { file: logFile }),
  });
  try {
    return await run(config, key, logger);
  } finally {
    key.privateKey.fill(0);
    logger.close();
  }
}

async function run(config: GatewayConfig, key: GatewayKey, logger: ServiceLogger): Promise<number> {
  const publicKey = encodeKey(key.publicKey);
  logger.info(
    `${NAME} ${VERSION}: public key ${publicKey} (${key.created ? 'new, written to' : 'from'} ${key.path}); ` +
      `portal ${config.portalUrl}; clients reach it at ${config.endpoints.join(', ')}`,
  );
  if (config.deviceId === undefined) {
    logger.info('GATEHOUSE_ID is not set: the portal knows this gateway by its public key');
  }
  const join: GatewayJoinPayload = {
    public_key: publicKey,
    endpoints: config.endpoints,
    ...(config.deviceId === undefined ? {} : { device_id: config.deviceId }),
    name: hostname().slice(0, MAX_NAME_CHARS) || NAME,
    version: VERSION,
  };
  const forwarding = new KernelForwarding({ stateDir: config.stateDir });

  let gateway: Gateway | undefined;
  let stopAsked: { code: number; reason: string } | undefined;
  let signals = 0;
  const stop = (code: number, reason: string): void => {
    stopAsked ??= { code, reason };
    void gateway?.stop(code, reason);
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      logger.error(`${signal} again: exiting without finishing the teardown`);
      process.exit(EXIT_FAILURE);
    }
    stop(EXIT_STOPPED, `received ${signal}`);
  };
  const onStatus = (): void => {
    if (gateway === undefined) {
      logger.info('status: starting');
      return;
    }
    gateway.statusLine().then(
      (line) => logger.info(line),
      (error: unknown) => logger.warn(`status: ${(error as Error).message}`),
    );
  };
  const onFatal = (error: unknown): void => {
    logger.error(`unexpected error: ${(error as Error)?.stack ?? String(error)}`);
    stop(EXIT_FAILURE, 'after an unexpected error');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  onStatusSignal(onStatus);
  process.on('uncaughtException', onFatal);
  process.on('unhandledRejection', onFatal);

  try {
    try {
      gateway = await Gateway.start({
        interfaceName: config.interfaceName,
        session: new GatewaySession(),
        startEngine: (hooks) =>
          Engine.start(
            {
              interfaceName: config.interfaceName,
              privateKey: key.privateKey,
              listenPort: config.listenPort,
              mtu: GATEWAY_MTU,
              logger,
              onEvent: hooks.onEvent,
              onFailed: hooks.onFailed,
            },
            [],
          ),
        openPortal: (onEvent) =>
          new PhoenixSocket({
            url: config.socketUrl,
            token: config.token,
            ...(config.caFile === undefined ? {} : { caFile: config.caFile }),
            userAgent: `${NAME}/${VERSION}`,
            topic: GATEWAY_TOPIC,
            joinPayload: join,
            onEvent,
          }),
        table: new GatewayTable({ interfaceName: config.interfaceName, nft: runNft }),
        tun: new TunInterface({
          interfaceName: config.interfaceName,
          ip: runIp,
          ipv6: newInterfacesHaveIpv6(),
        }),
        forwarding,
        resolve: systemNameResolution(),
        logger,
      });
    } catch {
      return EXIT_FAILURE; // logged, and torn down, by Gateway.start
    }
    logger.info(
      `${config.interfaceName} is up, UDP port ${config.listenPort}; connecting to the portal`,
    );
    if (stopAsked !== undefined) void gateway.stop(stopAsked.code, stopAsked.reason);
    return await gateway.finished;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    onStatusSignal(() => {});
    process.off('uncaughtException', onFatal);
    process.off('unhandledRejection', onFatal);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`${NAME}: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exit(EXIT_FAILURE);
  },
);
