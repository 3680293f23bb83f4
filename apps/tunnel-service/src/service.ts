/**
 * The tunnel service: claims the control socket, serves it, and starts,
 * changes and stops one tunnel at a time. `serve` runs it as the daemon
 * (no tunnel until a start-tunnel request; `down` leaves it serving); `up`
 * without a daemon runs it in the foreground around one tunnel, ending with
 * it. Every way out — SIGINT, SIGTERM, a foreground `down`, a failed data
 * plane, an unexpected error — takes the tunnel down first. Bad input costs
 * one request, never the tunnel: the control socket catches and counts at
 * its boundary, and the process-level handlers are only the last resort for
 * a fault nothing else caught.
 */

import { resolveDnsControlSetting, type DnsControlSetting } from '@gatehouse/netconfig';
import type { Logger } from '@gatehouse/logging';
import {
  dnsResourcePatternProblem,
  type ConnectionFailure,
  type TunnelStatus,
} from '@gatehouse/protocol';
import {
  RequestError,
  ServiceServer,
  type ControlSocketLimits,
  type PeerCredentials,
} from '@gatehouse/service-ipc';
import { TunnelStartError, type Tunnel } from './tunnel.ts';
import type { TunnelSpec } from './tunnel-spec.ts';
import {
  formatConfigProblems,
  parseWgQuickConfig,
  tunnelSpecFromWgQuick,
} from './wg-quick-config.ts';

export interface TunnelServiceOptions {
  socketPath: string;
  /** A new tunnel for each start: a stopped tunnel is not started again. */
  createTunnel: (options: { dnsControl: DnsControlSetting }) => Tunnel;
  /** `up` without a daemon: start this tunnel at once; the service ends when it stops. */
  foreground?: { spec: TunnelSpec; dnsControl: DnsControlSetting };
  /** `serve`: repair what a crashed run left (rules, routes, resolv.conf) before serving. */
  repair?: () => Promise<void>;
  serviceVersion: string;
  logger: Logger;
  /** The control socket's defaults unless told otherwise. */
  controlSocketLimits?: Partial<ControlSocketLimits>;
  /** Log lines the logger could not write; none unless told. */
  logLinesLost?: () => number;
}

interface Current {
  tunnel: Tunnel;
  spec: TunnelSpec;
  phase: 'connecting' | 'connected' | 'disconnecting';
  started: Promise<void>;
  stopped: Promise<void> | undefined;
  failure: ConnectionFailure | null;
}

/** Runs until told to stop; resolves with the process exit code. */
export async function runTunnelService(options: TunnelServiceOptions): Promise<number> {
  const { logger } = options;
  const foreground = options.foreground !== undefined;
  let current: Current | undefined;
  let lastFailure: ConnectionFailure | null = null;
  let exitCode = 0;
  let exitWanted = false;
  let requestExit: (reason: string) => void = () => {};
  const exitRequested = new Promise<void>((resolve) => {
    requestExit = (reason) => {
      if (!exitWanted) logger.info(`stopping: ${reason}`);
      exitWanted = true;
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
    requestExit(`received ${signal}`);
  };
  const onFatal = (error: unknown) => {
    logger.error(`unexpected error: ${(error as Error)?.stack ?? String(error)}`);
    exitCode = 1;
    requestExit('after an unexpected error');
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
  const statusNow = (): TunnelStatus => {
    const counters = {
      controlSocket: server.counters,
      logLinesLost: options.logLinesLost?.() ?? 0,
    };
    if (current === undefined) return { state: 'disconnected', failure: lastFailure, ...counters };
    const { interfaceName } = current.spec;
    switch (current.phase) {
      case 'connecting':
        return { state: 'connecting', interfaceName, ...counters };
      case 'disconnecting':
        return { state: 'disconnecting', interfaceName, failure: current.failure, ...counters };
      case 'connected':
        return { state: 'connected', ...current.tunnel.status(), ...counters };
    }
  };
  const broadcastStatus = () =>
    server.broadcast(() => ({ event: 'status-changed', status: statusNow() }));

  const startTunnel = (spec: TunnelSpec, dnsControl: DnsControlSetting): Current => {
    const tunnel = options.createTunnel({ dnsControl });
    const entry: Current = {
      tunnel,
      spec,
      phase: 'connecting',
      started: Promise.resolve(),
      stopped: undefined,
      failure: null,
    };
    current = entry;
    lastFailure = null;
    // A data plane that failed for good would black-hole the routed traffic and DNS: take the
    // tunnel down (the network works again); status says why.
    const onFailed = (error: Error) => {
      logger.error(`the tunnel failed: ${error.message}`);
      void stopTunnel(entry, { reason: 'engine-failed', message: error.message });
    };
    entry.started = (async () => {
      broadcastStatus();
      try {
        await tunnel.start(spec, { onFailed });
      } catch (error) {
        const reason = error instanceof TunnelStartError ? error.reason : 'setup-failed';
        const message = (error as Error)?.message ?? String(error);
        logger.error(`tunnel ${spec.interfaceName} could not start: ${message}`);
        if (current === entry) current = undefined;
        lastFailure = { reason, message };
        broadcastStatus();
        if (foreground) {
          exitCode = 1;
          requestExit('the tunnel could not start');
        }
        throw error;
      }
      if (entry.phase === 'connecting') entry.phase = 'connected';
      logger.info(`tunnel ${spec.interfaceName} is up; control socket at ${options.socketPath}`);
      broadcastStatus();
    })();
    return entry;
  };

  const stopTunnel = (entry: Current, failure: ConnectionFailure | null): Promise<void> => {
    entry.stopped ??= (async () => {
      if (failure !== null) entry.failure = failure;
      entry.phase = 'disconnecting';
      const failedStart = await entry.started.then(
        () => false,
        () => true,
      );
      if (failedStart) return;
      broadcastStatus();
      try {
        await entry.tunnel.stop();
      } catch (error) {
        logger.error(`stopping the tunnel failed: ${(error as Error).message}`);
        exitCode = 1;
      }
      if (current === entry) current = undefined;
      lastFailure = entry.failure;
      logger.info(`tunnel ${entry.spec.interfaceName} is down`);
      broadcastStatus();
      if (foreground) {
        if (entry.failure !== null) exitCode = 1;
        requestExit('the tunnel is down');
      }
    })();
    return entry.stopped;
  };

  const connected = (): Current => {
    if (current?.phase !== 'connected')
      throw new RequestError('not-running', `the tunnel is ${statusNow().state}`);
    return current;
  };

  try {
    await options.repair?.();
    server = await ServiceServer.start({
      socketPath: options.socketPath,
      serviceVersion: options.serviceVersion,
      logger,
      ...(options.controlSocketLimits === undefined ? {} : { limits: options.controlSocketLimits }),
      handlers: {
        status: () => statusNow(),
        'start-tunnel': async (params, { peer }) => {
          mustBeRoot(peer, 'start a tunnel');
          if (current !== undefined) {
            throw new RequestError(
              'already-running',
              `tunnel ${current.spec.interfaceName} is ${statusNow().state}: one tunnel at a time ` +
                'for now (gatehouse-tunnel down stops it)',
            );
          }
          let spec: TunnelSpec;
          try {
            spec = specFromWgQuick(params.wgQuickConfig, params.interfaceName);
          } catch (error) {
            lastFailure = { reason: 'bad-config', message: (error as Error).message };
            throw error;
          }
          let dnsControl: DnsControlSetting;
          try {
            dnsControl = resolveDnsControlSetting(params.dnsControl, undefined);
          } catch (error) {
            throw new RequestError('bad-request', (error as Error).message);
          }
          const entry = startTunnel(spec, dnsControl);
          try {
            await entry.started;
          } catch (error) {
            throw new RequestError(
              'tunnel-failed',
              `tunnel ${params.interfaceName} could not start: ${(error as Error).message}`,
            );
          }
          return statusNow();
        },
        'apply-tunnel': async (params, { peer }) => {
          mustBeRoot(peer, 'change the tunnel');
          const entry = connected();
          const spec = {
            ...specFromWgQuick(params.wgQuickConfig, params.interfaceName),
            dnsResources: entry.spec.dnsResources,
          };
          try {
            await entry.tunnel.apply(spec);
          } catch (error) {
            throw new RequestError(
              'tunnel-failed',
              `tunnel ${entry.spec.interfaceName} did not take the change: ${(error as Error).message}`,
            );
          }
          entry.spec = spec;
          logger.info(`tunnel ${spec.interfaceName}: applied a new configuration`);
          broadcastStatus();
          return statusNow();
        },
        'set-dns-resources': async ({ resources }, { peer }) => {
          mustBeRoot(peer, 'set DNS resources');
          const entry = connected();
          const patterns = resources.map((resource) => resource.address);
          const problem = dnsResourcePatternProblem(patterns);
          if (problem !== undefined) throw new RequestError('bad-request', problem);
          const result = await entry.tunnel.setDnsResources(patterns);
          entry.spec = { ...entry.spec, dnsResources: patterns };
          broadcastStatus();
          return result;
        },
        down: async (_params, { peer }) => {
          mustBeRoot(peer, 'stop the tunnel');
          const entry = current;
          if (entry === undefined) throw new RequestError('not-running', 'no tunnel is up');
          if (foreground) {
            // Let the answer go out before the connections are closed.
            setImmediate(() => void stopTunnel(entry, null));
            return { stopping: true, serviceExits: true };
          }
          await stopTunnel(entry, null);
          return { stopping: true, serviceExits: false };
        },
      },
    });
  } catch (error) {
    logger.error((error as Error).message);
    removeProcessHandlers();
    return 1;
  }

  if (options.foreground === undefined) {
    logger.info(`serving ${options.socketPath}; no tunnel up`);
  } else if (!exitWanted) {
    startTunnel(options.foreground.spec, options.foreground.dnsControl).started.catch(
      () => undefined,
    );
  }
  await exitRequested;
  if (current !== undefined) await stopTunnel(current, null);
  await server.stop();
  removeProcessHandlers();
  return exitCode;
}

/** The daemon's own check of a wg-quick file it was sent; problems as a bad request. */
function specFromWgQuick(text: string, interfaceName: string): TunnelSpec {
  const parsed = parseWgQuickConfig(text);
  if (!parsed.ok) {
    throw new RequestError(
      'bad-request',
      formatConfigProblems(`${interfaceName}.conf`, parsed.problems),
    );
  }
  return tunnelSpecFromWgQuick(parsed.config, interfaceName);
}

function mustBeRoot(peer: PeerCredentials, what: string): void {
  if (peer.uid !== 0) {
    throw new RequestError(
      'forbidden',
      `only root may ${what} (the request came from uid ${peer.uid})`,
    );
  }
}
