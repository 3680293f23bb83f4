export {
  DNS_CONTROL_ENV,
  DNS_CONTROL_SETTINGS,
  decideDnsControlMode,
  nameserversIn,
  resolveDnsControlSetting,
} from './dns/dns-control-mode.ts';
export type {
  DnsControlDecision,
  DnsControlMode,
  DnsControlSetting,
  ResolvConfState,
  SystemDnsProbes,
} from './dns/dns-control-mode.ts';
export { dnsSettingsFromWgQuick } from './dns/dns-settings.ts';
export type { DnsSettings } from './dns/dns-settings.ts';
export { probeSystemDns } from './dns/probe.ts';
export type { ProbeOptions } from './dns/probe.ts';
export {
  DEFAULT_STATE_DIRECTORY,
  GATEHOUSE_MARKER,
  RESOLV_CONF_PATH,
  ResolvConfControl,
  renderResolvConf,
} from './dns/resolv-conf.ts';
export type { RestoreOutcome } from './dns/resolv-conf.ts';
export { ResolvedDnsControl, resolvedLinkSettings, resolvedUpstreams } from './dns/resolved.ts';
export { DbusResolvedManager, busNameHasOwner } from './dns/resolved-dbus.ts';
export type { ResolvedBusOptions } from './dns/resolved-dbus.ts';
export type {
  ResolvedDomain,
  ResolvedLinkSettings,
  ResolvedManager,
  ResolvedServer,
} from './dns/resolved.ts';
export { createSystemDnsControl } from './dns/system-dns.ts';
export type { SystemDnsControl, SystemDnsControlOptions } from './dns/system-dns.ts';
export { startTrampleWatcher } from './dns/trample-watcher.ts';
export type { TrampleEvent, TrampleWatcher, TrampleWatcherOptions } from './dns/trample-watcher.ts';
export { GatehouseRouting } from './routes/gatehouse-routing.ts';
export type {
  GatehouseRoutingOptions,
  InterfaceSettings,
  IpCommand,
} from './routes/gatehouse-routing.ts';
export {
  DEFAULT_FWMARK,
  DEFAULT_ROUTE_PROTOCOL,
  DEFAULT_RULE_PRIORITY,
  DEFAULT_TABLE,
  RULE_PRIORITY_RANGE_SIZE,
  desiredRules,
  planAddresses,
  planFlush,
  planRouting,
} from './routes/routing-plan.ts';
export type { Family, RoutingIdentity, RoutingOptions, RuleSpec } from './routes/routing-plan.ts';
