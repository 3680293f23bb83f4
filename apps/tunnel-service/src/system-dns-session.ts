/**
 * System DNS for the lifetime of one tunnel: the start-up repair, the mode
 * decision, applying settings as the interface's DNS (re-applied when the
 * system tramples them), giving DNS back, and what `status` says about it.
 */

import {
  decideDnsControlMode,
  type DnsControlDecision,
  type DnsControlMode,
  type DnsControlSetting,
  type DnsSettings,
  type SystemDnsControl,
  type SystemDnsProbes,
  type TrampleWatcher,
} from '@gatehouse/netconfig';
import type { DnsStatus } from '@gatehouse/protocol';
import type { Logger } from '@gatehouse/logging';

export interface SystemDnsSessionOptions {
  setting: DnsControlSetting;
  probe: () => Promise<SystemDnsProbes>;
  createControl: (mode: DnsControlMode) => SystemDnsControl;
  logger: Logger;
}

export const NO_DNS_SETTINGS_REASON = 'the configuration sets no DNS=';

export class SystemDnsSession {
  readonly decision: DnsControlDecision;
  /**
   * The system's resolvers before Gatehouse took over: the DNS stub's
   * upstreams when DNS= names none. In systemd-resolved mode they are
   * resolved's own (resolv.conf only names its stub, 127.0.0.53).
   */
  readonly previousServers: readonly string[];
  readonly #control: SystemDnsControl;
  readonly #logger: Logger;
  #settings: DnsSettings = { servers: [], searchDomains: [] };
  #applied = false;
  #watcher: TrampleWatcher | undefined;
  #reapplied = 0;
  #checkFailures = 0;

  /**
   * Repairs what a crashed run left, then decides the mode. The repair comes
   * first so that the probes (and previousServers) see the system's own
   * resolv.conf rather than Gatehouse's stale one; restoring a resolv.conf is
   * the same in every mode. The system's resolvers are read before Gatehouse
   * changes anything.
   */
  static async start(options: SystemDnsSessionOptions): Promise<SystemDnsSession> {
    await options.createControl('disabled').restore();
    const probes = await options.probe();
    const decision = decideDnsControlMode(options.setting, probes);
    options.logger.info(`system DNS control: ${decision.mode} (${decision.reason})`);
    const control = options.createControl(decision.mode);
    const previousServers = await control.systemResolvers();
    return new SystemDnsSession(decision, previousServers, control, options.logger);
  }

  private constructor(
    decision: DnsControlDecision,
    previousServers: readonly string[],
    control: SystemDnsControl,
    logger: Logger,
  ) {
    this.decision = decision;
    this.previousServers = previousServers;
    this.#control = control;
    this.#logger = logger;
  }

  /** Makes `settings` the system's DNS (nothing in disabled mode); empty settings give DNS back. */
  async use(settings: DnsSettings): Promise<void> {
    this.#watcher?.stop();
    this.#watcher = undefined;
    this.#settings = settings;
    if (this.decision.mode === 'disabled') return;
    if (settings.servers.length === 0 && settings.searchDomains.length === 0) {
      await this.restore();
      return;
    }
    this.#applied = true;
    await this.#control.apply(settings);
    this.#logger.info(`system DNS: ${describe(settings)} through ${this.decision.mode}`);
    this.#watcher = this.#control.watch(settings, (event) => {
      if (event.kind === 'reapplied') {
        this.#reapplied++;
        this.#logger.warn('something overwrote the system DNS settings: applied them again');
      } else {
        this.#checkFailures++;
        this.#logger.warn(
          `checking the system DNS settings failed: ${(event.error as Error)?.message ?? String(event.error)}`,
        );
      }
    });
  }

  /** Gives DNS back if Gatehouse changed it; safe to call again. */
  async restore(): Promise<void> {
    this.#watcher?.stop();
    this.#watcher = undefined;
    if (!this.#applied) return;
    this.#applied = false;
    await this.#control.restore();
  }

  status(): DnsStatus {
    const { servers, searchDomains } = this.#settings;
    const counts = { reapplied: this.#reapplied, checkFailures: this.#checkFailures };
    if (this.#applied) return { servers, searchDomains, ...counts, applied: true };
    const reason =
      this.decision.mode === 'disabled'
        ? `DNS control is disabled: ${this.decision.reason}`
        : NO_DNS_SETTINGS_REASON;
    return { servers, searchDomains, ...counts, applied: false, reason };
  }
}

function describe(settings: DnsSettings): string {
  const parts = [];
  if (settings.servers.length > 0) parts.push(`servers ${settings.servers.join(', ')}`);
  if (settings.searchDomains.length > 0) parts.push(`search ${settings.searchDomains.join(', ')}`);
  return parts.join('; ');
}
