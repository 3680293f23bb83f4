/**
 * `gatehouse-tunnel up`: claims the control socket, starts the tunnel,
 * serves status and down requests, and tears everything down again on every
 * way out — SIGINT, SIGTERM, `down`, a failed start or an unexpected error.
 * Bad input costs one request, never the tunnel: the control socket catches
 * and counts at its boundary, and the process-level handlers are only the
 * last resort for a fault nothing else caught.
 */

import type { TunnelStatus } from '@gatehouse/protocol';
import {
  RequestError,
  ServiceServer,
  type ControlSocketLimits,
  type Logger,
} from '@gatehouse/service-ipc';
import { dnsResourcePatternProblem } from './dns-resource-patterns.ts';
import type { Tunnel, TunnelReport } from './tunnel.ts';
import type { TunnelSpec } from './tunnel-spec.ts';

export interface TunnelServiceOptions {
  spec: TunnelSpec;
  socketPath: string;
  tunnel: Tunnel;
  serviceVersion: string;
  logger: Logger;
  /** The control socket's defaults unless told otherwise. */
  controlSocketLimits?: Partial<ControlSocketLimits>;
  /** Log lines the logger could not write; none unless told. */
  logLinesLost?: () => number;
}

/** Runs in the foreground until told to stop; resolves with the process exit code. */
export async function runTunnelService(options: TunnelServiceOptions): Promise<number> {
  const { spec, tunnel, logger } = options;
  let phase: 'starting' | 'running' | 'stopping' = 'starting';
  let stoppingStatus: TunnelReport | undefined;
  let exitCode = 0;
  let stopWanted = false;
  let requestStop: (reason: string) => void = () => {};
  const stopRequested = new Promise<void>((resolve) => {
    requestStop = (reason) => {
      if (!stopWanted) logger.info(`stopping: ${reason}`);
      stopWanted = true;
      resolve();
    };
  });

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      logger.error(`${signal} again: exiting without finishing the teardown`);
      process.exit(1);
    }
    requestStop(`received ${signal}`);
  };
  const onFatal = (error: unknown) => {
    logger.error(`unexpected error: ${(error as Error)?.stack ?? String(error)}`);
    exitCode = 1;
    requestStop('after an unexpected error');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('uncaughtException', onFatal);
  process.on('unhandledRejection', onFatal);
  const removeProcessHandlers = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('uncaughtException', onFatal);
    process.off('unhandledRejection', onFatal);
  };

  let server: ServiceServer;
  const statusNow = (): TunnelStatus => ({
    ...(stoppingStatus ?? tunnel.status()),
    controlSocket: server.counters,
    logLinesLost: options.logLinesLost?.() ?? 0,
  });
  const broadcastStatus = () =>
    server.broadcast(() => ({ event: 'status-changed', status: statusNow() }));
  try {
    server = await ServiceServer.start({
      socketPath: options.socketPath,
      serviceVersion: options.serviceVersion,
      logger,
      ...(options.controlSocketLimits === undefined ? {} : { limits: options.controlSocketLimits }),
      handlers: {
        status: () => {
          if (phase === 'starting')
            throw new RequestError('not-running', 'the tunnel is still starting');
          return statusNow();
        },
        'set-dns-resources': async ({ resources }) => {
          if (phase !== 'running')
            throw new RequestError('not-running', 'the tunnel is not running');
          const patterns = resources.map((resource) => resource.address);
          const problem = dnsResourcePatternProblem(patterns);
          if (problem !== undefined) throw new RequestError('bad-request', problem);
          const result = await tunnel.setDnsResources(patterns);
          broadcastStatus();
          return result;
        },
        down: () => {
          // Let the answer go out before the connections are closed.
          setImmediate(() => requestStop('asked to by a down request'));
          return { stopping: true };
        },
      },
    });
  } catch (error) {
    logger.error((error as Error).message);
    removeProcessHandlers();
    return 1;
  }

  try {
    if (!stopWanted) {
      // A data plane that failed for good would black-hole the routed traffic and DNS: take the
      // tunnel down (the network works again) and exit 1; until then status says why it failed.
      await tunnel.start(spec, (error) => {
        logger.error(`the tunnel failed: ${error.message}`);
        exitCode = 1;
        requestStop('the data plane failed');
      });
      phase = 'running';
      logger.info(`tunnel ${spec.interfaceName} is up; control socket at ${options.socketPath}`);
      broadcastStatus();
      await stopRequested;
      phase = 'stopping';
      const last = tunnel.status();
      stoppingStatus = last.state === 'failed' ? last : { ...last, state: 'stopping' };
      broadcastStatus();
    }
  } catch (error) {
    logger.error(`the tunnel failed: ${(error as Error).message}`);
    exitCode = 1;
  }

  try {
    await tunnel.stop();
  } catch (error) {
    logger.error(`stopping the tunnel failed: ${(error as Error).message}`);
    exitCode = 1;
  }
  await server.stop();
  removeProcessHandlers();
  logger.info(`tunnel ${spec.interfaceName} is down`);
  return exitCode;
}
