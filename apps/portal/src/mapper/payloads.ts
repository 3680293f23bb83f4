/**
 * What the portal tells each node, built from an AccountView: pure functions, no I/O. The shapes
 * follow Firezone's portal messages (resources with their sites, filters as
 * protocol/port_range_start/port_range_end, the interface with its upstream DNS).
 */
import type { AccountView, PortFilter, ResourceView } from '../channels/backend.ts';

export type ResourceStatus = 'online' | 'offline';

export interface FilterPayload {
  protocol: 'tcp' | 'udp' | 'icmp';
  port_range_start?: number;
  port_range_end?: number;
}

export function filtersPayload(filters: readonly PortFilter[]): FilterPayload[] {
  const out: FilterPayload[] = [];
  for (const f of filters) {
    if (f.ports === undefined || f.ports.length === 0) {
      out.push({ protocol: f.protocol });
      continue;
    }
    for (const range of f.ports) {
      out.push({ protocol: f.protocol, port_range_start: range.from, port_range_end: range.to });
    }
  }
  return out;
}

/** A resource as a client sees it, with its site and whether the site has a gateway online. */
export function clientResourcePayload(
  view: AccountView,
  resource: ResourceView,
  status: ResourceStatus,
): Record<string, unknown> {
  const site = view.sites.get(resource.siteId);
  const payload: Record<string, unknown> = {
    type: resource.type,
    id: resource.id,
    name: resource.name,
  };
  if (resource.type !== 'internet') {
    payload.address = resource.address ?? '';
    payload.address_description = resource.addressDescription ?? null;
  }
  payload.sites = site === undefined ? [] : [{ id: site.id, name: site.name }];
  payload.filters = filtersPayload(resource.filters);
  payload.status = status;
  return payload;
}

/** A resource as a gateway sees it in authorize_flow / resource_updated. */
export function gatewayResourcePayload(resource: ResourceView): Record<string, unknown> {
  const payload: Record<string, unknown> = {
    type: resource.type,
    id: resource.id,
    name: resource.name,
  };
  if (resource.type !== 'internet') payload.address = resource.address ?? '';
  payload.filters = filtersPayload(resource.filters);
  return payload;
}

/** `1.1.1.1` → `1.1.1.1:53`, `2606:4700::1111` → `[2606:4700::1111]:53`; host:port kept. */
export function upstreamDnsPayload(
  servers: readonly string[],
): { protocol: 'ip_port'; address: string }[] {
  return servers.map((server) => {
    let address = server;
    if (/^[0-9.]+$/.test(server)) address = `${server}:53`;
    else if (server.includes(':') && !server.startsWith('[')) address = `[${server}]:53`;
    return { protocol: 'ip_port' as const, address };
  });
}

/** The resources (id → payload) the actor may reach, each with its site's status. */
export function clientResources(
  view: AccountView,
  actorId: string,
  onlineSites: ReadonlySet<string>,
): Map<string, Record<string, unknown>> {
  const out = new Map<string, Record<string, unknown>>();
  for (const id of view.allowedResourceIds(actorId)) {
    const resource = view.resources.get(id);
    if (resource === undefined) continue;
    const status: ResourceStatus = onlineSites.has(resource.siteId) ? 'online' : 'offline';
    out.set(id, clientResourcePayload(view, resource, status));
  }
  return out;
}

export interface ResourceDiff {
  /** Payloads new or changed since `sent`. */
  upserts: Record<string, unknown>[];
  /** Ids in `sent` that are no longer there. */
  deletes: string[];
  /** The new id → JSON text, to remember as sent. */
  next: Map<string, string>;
}

/** What changed between what a client was sent (id → JSON text) and what it should have now. */
export function diffResources(
  sent: ReadonlyMap<string, string>,
  desired: ReadonlyMap<string, Record<string, unknown>>,
): ResourceDiff {
  const upserts: Record<string, unknown>[] = [];
  const deletes: string[] = [];
  const next = new Map<string, string>();
  for (const [id, payload] of desired) {
    const text = JSON.stringify(payload);
    next.set(id, text);
    if (sent.get(id) !== text) upserts.push(payload);
  }
  for (const id of sent.keys()) {
    if (!desired.has(id)) deletes.push(id);
  }
  return { upserts, deletes, next };
}
