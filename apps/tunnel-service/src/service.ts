/**
 * The tunnel service: claims the control socket, serves it, and starts,
 * changes and stops one tunnel at a time — from a wg-quick file, or one the
 * portal configures (portal-tunnel.ts). `serve` runs it as the daemon
 * (no tunnel until a start request; `down` leaves it serving); `up`
 * without a daemon runs it in the foreground around one tunnel, ending with
 * it. Every way out — SIGINT, SIGTERM, a foreground `down`, a failed data
 * plane, the portal refusing the token, an unexpected error — takes the
 * tunnel down first. SIGHUP reconnects a portal tunnel's portal connection
 * and leaves the tunnel up. Bad input costs
 * one request, never the tunnel: the control socket catches and counts at
 * its boundary, and the process-level handlers are only the last resort for
 * a fault nothing else caught.
 */

import { resolveDnsControlSetting, type DnsControlSetting } from '@gatehouse/netconfig';
import type { Logger } from '@gatehouse/logging';
import { CaFileError, PhoenixSocket, readCaFile } from '@gatehouse/phoenix-channel';
import {
  dnsResourcePatternProblem,
  type ConnectionFailure,
  type PortalStatus,
  type RequestParams,
  type TunnelStatus,
} from '@gatehouse/protocol';
import {
  RequestError,
  ServiceServer,
  type ControlSocketLimits,
  type PeerCredentials,
} from '@gatehouse/service-ipc';
import { DeviceIdError, loadOrCreateDeviceId, stateDirectoryFrom } from './device-id.ts';
import {
  PortalTunnel,
  SignInRequiredError,
  type PortalChannel,
  type PortalChannelHandlers,
} from './portal-tunnel.ts';
import { clientSocketUrl, PortalUrlError } from './portal-url.ts';
import { TunnelStartError, type Tunnel } from './tunnel.ts';
import type { TunnelSpec } from './tunnel-spec.ts';
import {
  formatConfigProblems,
  parseWgQuickConfig,
  tunnelSpecFromWgQuick,
} from './wg-quick-config.ts';

/** The service's exit codes (the CLI documents them). */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
/** A foreground portal tunnel ended because the portal refused the token. */
export const EXIT_SIGN_IN_REQUIRED = 4;

/** How long start-portal-tunnel waits for the portal to configure the tunnel before answering 'connecting'. */
export const PORTAL_START_WAIT_MS = 30_000;

export type PortalTunnelRequest = RequestParams<'start-portal-tunnel'>;

export interface TunnelServiceOptions {
  socketPath: string;
  /** A new tunnel for each start: a stopped tunnel is not started again. */
  createTunnel: (options: { dnsControl: DnsControlSetting }) => Tunnel;
  /**
   * `up` without a daemon: start this tunnel at once (a wg-quick spec, or a portal tunnel);
   * the service ends when it stops.
   */
  foreground?:
    { spec: TunnelSpec; dnsControl: DnsControlSetting } | { portal: PortalTunnelRequest };
  /** Where the device id is kept (device-id.ts); only portal tunnels need it. */
  stateDirectory?: string;
  /** The portal's channel for a portal tunnel: PhoenixSocket unless told otherwise (tests). */
  openPortalChannel?: (
    request: { socketUrl: string; token: string; caFile: string | undefined },
    handlers: PortalChannelHandlers,
  ) => PortalChannel;
  /** How long start-portal-tunnel waits for the portal (PORTAL_START_WAIT_MS unless told). */
  portalStartWaitMs?: number;
  /** `serve`: repair what a crashed run left (rules, routes, resolv.conf) before serving. */
  repair?: () => Promise<void>;
  serviceVersion: string;
  logger: Logger;
  /** The control socket's defaults unless told otherwise. */
  controlSocketLimits?: Partial<ControlSocketLimits>;
  /** Log lines the logger could not write; none unless told. */
  logLinesLost?: () => number;
}

/** The tunnel up now: from a wg-quick file, or the one a portal configures. */
type Running =
  { kind: 'wg-quick'; tunnel: Tunnel; spec: TunnelSpec } | { kind: 'portal'; portal: PortalTunnel };

interface Current {
  interfaceName: string;
  run: Running;
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
  const onHangUp = () => {
    const run = current?.run;
    if (run?.kind === 'portal' && run.portal.reconnect()) return;
    logger.info('SIGHUP: no portal connection to renew');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onHangUp);
  process.on('uncaughtException', onFatal);
  process.on('unhandledRejection', onFatal);
  const removeProcessHandlers = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onHangUp);
    process.off('uncaughtException', onFatal);
    process.off('unhandledRejection', onFatal);
  };

  /** The last portal tunnel's portal side, kept after it stopped (a signed-out one says so). */
  let lastPortal: PortalStatus | undefined;
  let server: ServiceServer;
  const statusNow = (): TunnelStatus => {
    const run = current?.run;
    const portal = run?.kind === 'portal' ? run.portal.status() : lastPortal;
    const counters = {
      controlSocket: server.counters,
      logLinesLost: options.logLinesLost?.() ?? 0,
      ...(portal === undefined ? {} : { portal }),
    };
    if (current === undefined) return { state: 'disconnected', failure: lastFailure, ...counters };
    const { interfaceName } = current;
    switch (current.phase) {
      case 'connecting':
        return { state: 'connecting', interfaceName, ...counters };
      case 'disconnecting':
        return { state: 'disconnecting', interfaceName, failure: current.failure, ...counters };
      case 'connected': {
        const report =
          current.run.kind === 'portal'
            ? current.run.portal.tunnelReport()
            : current.run.tunnel.status();
        return { state: 'connected', ...report, ...counters };
      }
    }
  };
  const broadcastStatus = () =>
    server.broadcast(() => ({ event: 'status-changed', status: statusNow() }));

  /** Starts `run`'s tunnel as the current one; `start` resolves once it is configured. */
  const begin = (
    interfaceName: string,
    run: Running,
    start: (onFailed: (failure: ConnectionFailure) => void) => Promise<void>,
  ): Current => {
    const entry: Current = {
      interfaceName,
      run,
      phase: 'connecting',
      started: Promise.resolve(),
      stopped: undefined,
      failure: null,
    };
    current = entry;
    lastFailure = null;
    lastPortal = undefined;
    // A data plane that failed for good would black-hole the routed traffic and DNS, and a
    // signed-out portal tunnel follows nothing: take the tunnel down (the network works
    // again); status says why.
    const onFailed = (failure: ConnectionFailure) => {
      if (failure.reason !== 'sign-in-required')
        logger.error(`the tunnel failed: ${failure.message}`);
      void stopTunnel(entry, failure);
    };
    entry.started = (async () => {
      broadcastStatus();
      try {
        await start(onFailed);
      } catch (error) {
        const failure = startFailure(error);
        if (failure.reason !== 'sign-in-required')
          logger.error(`tunnel ${interfaceName} could not start: ${failure.message}`);
        if (run.kind === 'portal') {
          await run.portal.stop();
          lastPortal = run.portal.status();
        }
        if (current === entry) current = undefined;
        lastFailure = failure;
        broadcastStatus();
        if (foreground) {
          exitCode = failure.reason === 'sign-in-required' ? EXIT_SIGN_IN_REQUIRED : EXIT_FAILURE;
          requestExit('the tunnel could not start');
        }
        throw error;
      }
      if (entry.phase === 'connecting') entry.phase = 'connected';
      logger.info(`tunnel ${interfaceName} is up; control socket at ${options.socketPath}`);
      broadcastStatus();
    })();
    return entry;
  };

  const startTunnel = (spec: TunnelSpec, dnsControl: DnsControlSetting): Current => {
    const tunnel = options.createTunnel({ dnsControl });
    return begin(spec.interfaceName, { kind: 'wg-quick', tunnel, spec }, (onFailed) =>
      tunnel.start(spec, {
        onFailed: (error) => onFailed({ reason: 'engine-failed', message: error.message }),
      }),
    );
  };

  /** Throws a RequestError (bad request) for what cannot be used, before anything starts. */
  const startPortalTunnel = (request: PortalTunnelRequest): Current => {
    let socketUrl: string;
    let dnsControl: DnsControlSetting;
    let deviceId: string;
    try {
      socketUrl = clientSocketUrl(request.portalUrl);
      dnsControl = resolveDnsControlSetting(request.dnsControl, undefined);
      if (request.caFile !== undefined) readCaFile(request.caFile);
      const stateDirectory = options.stateDirectory ?? stateDirectoryFrom(process.env);
      deviceId = loadOrCreateDeviceId(stateDirectory).deviceId;
    } catch (error) {
      const message = (error as Error).message;
      lastFailure = { reason: 'bad-config', message };
      throw new RequestError('bad-request', message);
    }
    const { token, caFile } = request;
    const openChannel =
      options.openPortalChannel ??
      ((channel, handlers) =>
        new PhoenixSocket({
          url: channel.socketUrl,
          token: channel.token,
          ...(channel.caFile === undefined ? {} : { caFile: channel.caFile }),
          topic: 'client',
          joinPayload: handlers.joinPayload,
          onEvent: handlers.onEvent,
          userAgent: `gatehouse-tunnel/${options.serviceVersion}`,
        }));
    // The service's stop for this entry, known once begin() made it.
    let failed: (failure: ConnectionFailure) => void = () => {};
    const portal = new PortalTunnel({
      portalUrl: request.portalUrl,
      interfaceName: request.interfaceName,
      internetResource: request.internetResource,
      lanBypass: request.lanBypass,
      deviceId,
      ...(request.deviceName === undefined ? {} : { deviceName: request.deviceName }),
      version: options.serviceVersion,
      openChannel: (handlers) => openChannel({ socketUrl, token, caFile }, handlers),
      createTunnel: () => options.createTunnel({ dnsControl }),
      onFailure: (failure) => failed(failure),
      onChange: () => broadcastStatus(),
      logger,
    });
    logger.info(
      `portal tunnel ${request.interfaceName}: joining ${socketUrl} as device ${deviceId} ` +
        `with WireGuard key ${portal.publicKey}`,
    );
    return begin(request.interfaceName, { kind: 'portal', portal }, (onFailed) => {
      failed = onFailed;
      return portal.start();
    });
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
        if (entry.run.kind === 'portal') await entry.run.portal.stop();
        else await entry.run.tunnel.stop();
      } catch (error) {
        logger.error(`stopping the tunnel failed: ${(error as Error).message}`);
        exitCode = EXIT_FAILURE;
      }
      if (entry.run.kind === 'portal') lastPortal = entry.run.portal.status();
      if (current === entry) current = undefined;
      lastFailure = entry.failure;
      logger.info(`tunnel ${entry.interfaceName} is down`);
      broadcastStatus();
      if (foreground) {
        if (entry.failure?.reason === 'sign-in-required') exitCode = EXIT_SIGN_IN_REQUIRED;
        else if (entry.failure !== null) exitCode = EXIT_FAILURE;
        requestExit('the tunnel is down');
      }
    })();
    return entry.stopped;
  };

  /** The connected wg-quick tunnel: a portal tunnel's configuration is the portal's to change. */
  const connectedWgQuick = (): Current & { run: { kind: 'wg-quick' } } => {
    if (current?.phase !== 'connected')
      throw new RequestError('not-running', `the tunnel is ${statusNow().state}`);
    if (current.run.kind !== 'wg-quick') {
      throw new RequestError(
        'bad-request',
        `tunnel ${current.interfaceName} is configured by its portal (${current.run.portal.status().url}), not by a file`,
      );
    }
    return current as Current & { run: { kind: 'wg-quick' } };
  };

  const refuseSecondTunnel = (): void => {
    if (current === undefined) return;
    throw new RequestError(
      'already-running',
      `tunnel ${current.interfaceName} is ${statusNow().state}: one tunnel at a time ` +
        'for now (gatehouse-tunnel down stops it)',
    );
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
          refuseSecondTunnel();
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
        'start-portal-tunnel': async (params, { peer }) => {
          mustBeRoot(peer, 'start a tunnel');
          refuseSecondTunnel();
          const entry = startPortalTunnel(params);
          const waited = await settledWithin(
            entry.started,
            options.portalStartWaitMs ?? PORTAL_START_WAIT_MS,
          );
          if (waited.settled && !waited.ok) {
            const failure = startFailure(waited.error);
            throw new RequestError(
              failure.reason === 'sign-in-required' ? 'sign-in-required' : 'tunnel-failed',
              failure.reason === 'sign-in-required'
                ? failure.message
                : `tunnel ${params.interfaceName} could not start: ${failure.message}`,
            );
          }
          return statusNow();
        },
        'apply-tunnel': async (params, { peer }) => {
          mustBeRoot(peer, 'change the tunnel');
          const entry = connectedWgQuick();
          const run = entry.run;
          const spec = {
            ...specFromWgQuick(params.wgQuickConfig, params.interfaceName),
            dnsResources: run.spec.dnsResources,
          };
          try {
            await run.tunnel.apply(spec);
          } catch (error) {
            throw new RequestError(
              'tunnel-failed',
              `tunnel ${entry.interfaceName} did not take the change: ${(error as Error).message}`,
            );
          }
          run.spec = spec;
          logger.info(`tunnel ${spec.interfaceName}: applied a new configuration`);
          broadcastStatus();
          return statusNow();
        },
        'set-dns-resources': async ({ resources }, { peer }) => {
          mustBeRoot(peer, 'set DNS resources');
          const { run } = connectedWgQuick();
          const patterns = resources.map((resource) => resource.address);
          const problem = dnsResourcePatternProblem(patterns);
          if (problem !== undefined) throw new RequestError('bad-request', problem);
          const result = await run.tunnel.setDnsResources(patterns);
          run.spec = { ...run.spec, dnsResources: patterns };
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
    const wanted = options.foreground;
    try {
      const entry =
        'portal' in wanted
          ? startPortalTunnel(wanted.portal)
          : startTunnel(wanted.spec, wanted.dnsControl);
      entry.started.catch(() => undefined);
    } catch (error) {
      logger.error(`the tunnel cannot start: ${(error as Error).message}`);
      exitCode = EXIT_FAILURE;
      requestExit('the tunnel could not start');
    }
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

/** The connection state's failure for an error a start threw. */
function startFailure(error: unknown): ConnectionFailure {
  const message = (error as Error)?.message ?? String(error);
  if (error instanceof SignInRequiredError) return { reason: 'sign-in-required', message };
  if (error instanceof TunnelStartError) return { reason: error.reason, message };
  if (
    error instanceof CaFileError ||
    error instanceof PortalUrlError ||
    error instanceof DeviceIdError
  )
    return { reason: 'bad-config', message };
  return { reason: 'setup-failed', message };
}

type Settled =
  { settled: false } | { settled: true; ok: true } | { settled: true; ok: false; error: unknown };

/** Whether `promise` settled within `ms`, and how. */
async function settledWithin(promise: Promise<unknown>, ms: number): Promise<Settled> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Settled>((resolve) => {
    timer = setTimeout(() => resolve({ settled: false }), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        (): Settled => ({ settled: true, ok: true }),
        (error: unknown): Settled => ({ settled: true, ok: false, error }),
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function mustBeRoot(peer: PeerCredentials, what: string): void {
  if (peer.uid !== 0) {
    throw new RequestError(
      'forbidden',
      `only root may ${what} (the request came from uid ${peer.uid})`,
    );
  }
}
