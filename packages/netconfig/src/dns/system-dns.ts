/** One face for the three DNS control modes, as the tunnel service uses them. */
import type { DnsControlMode } from './dns-control-mode.ts';
import type { DnsSettings } from './dns-settings.ts';
import { ResolvConfControl } from './resolv-conf.ts';
import type { ResolvedManager } from './resolved.ts';
import { ResolvedDnsControl } from './resolved.ts';
import type { ResolvedBusOptions } from './resolved-dbus.ts';
import { DbusResolvedManager } from './resolved-dbus.ts';
import type { TrampleWatcher, TrampleEvent } from './trample-watcher.ts';
import { startTrampleWatcher } from './trample-watcher.ts';

export interface SystemDnsControl {
  readonly mode: DnsControlMode;
  apply(settings: DnsSettings): Promise<void>;
  isTrampled(settings: DnsSettings): Promise<boolean>;
  /**
   * The resolvers the system uses on its own: systemd-resolved's global and
   * default-route servers in that mode, /etc/resolv.conf's (or its backup's)
   * otherwise. They become the DNS stub's upstreams when DNS= names none.
   */
  systemResolvers(): Promise<string[]>;
  /**
   * Gives DNS back. Also the start-up repair: whatever the mode, a
   * resolv.conf left by a crashed run is restored under the marker rule.
   */
  restore(): Promise<void>;
  /** Re-applies `settings` whenever the system overwrites them. */
  watch(settings: DnsSettings, onEvent?: (event: TrampleEvent) => void): TrampleWatcher;
}

export interface SystemDnsControlOptions {
  interfaceName: string;
  stateDirectory?: string;
  resolvConfPath?: string;
  bus?: ResolvedBusOptions;
  /** Replaces the D-Bus client (tests). */
  resolvedManager?: ResolvedManager;
  routeAllQueries?: boolean;
  trampleIntervalMs?: number;
}

export function createSystemDnsControl(
  mode: DnsControlMode,
  options: SystemDnsControlOptions,
): SystemDnsControl {
  const resolvConf = new ResolvConfControl({
    path: options.resolvConfPath,
    stateDirectory: options.stateDirectory,
  });
  const watchWith = (
    control: Pick<SystemDnsControl, 'apply' | 'isTrampled'>,
    settings: DnsSettings,
    watchFile: string | undefined,
    onEvent: ((event: TrampleEvent) => void) | undefined,
  ) =>
    startTrampleWatcher({
      isTrampled: () => control.isTrampled(settings),
      reapply: () => control.apply(settings),
      watchFile,
      intervalMs: options.trampleIntervalMs,
      onEvent,
    });

  if (mode === 'etc-resolv-conf') {
    const control: SystemDnsControl = {
      mode,
      apply: (settings) => resolvConf.apply(settings),
      isTrampled: (settings) => resolvConf.isTrampled(settings),
      systemResolvers: () => resolvConf.previousNameservers(),
      restore: async () => {
        await resolvConf.restore();
      },
      watch: (settings, onEvent) => watchWith(control, settings, resolvConf.path, onEvent),
    };
    return control;
  }
  if (mode === 'systemd-resolved') {
    const resolved = new ResolvedDnsControl({
      interfaceName: options.interfaceName,
      manager: options.resolvedManager ?? new DbusResolvedManager(options.bus),
      routeAllQueries: options.routeAllQueries,
    });
    const control: SystemDnsControl = {
      mode,
      apply: (settings) => resolved.apply(settings),
      isTrampled: (settings) => resolved.isTrampled(settings),
      systemResolvers: () => resolved.systemResolvers(),
      restore: async () => {
        await resolvConf.restore();
        await resolved.restore();
      },
      watch: (settings, onEvent) => watchWith(control, settings, undefined, onEvent),
    };
    return control;
  }
  return {
    mode,
    apply: async () => undefined,
    isTrampled: async () => false,
    systemResolvers: () => resolvConf.previousNameservers(),
    restore: async () => {
      await resolvConf.restore();
    },
    watch: (settings, onEvent) =>
      watchWith(
        { apply: async () => undefined, isTrampled: async () => false },
        settings,
        undefined,
        onEvent,
      ),
  };
}
