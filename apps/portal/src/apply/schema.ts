/**
 * The file `gatehouse-portal apply` reads (YAML, or JSON, which is YAML too):
 *
 *   accounts:
 *     - slug: acme                      # in URLs; the key
 *       name: Acme Inc.
 *       ranges:                         # optional; each missing one takes the default
 *         tunnelIpv4: 10.77.0.0/16      # (100.64.0.0/11 etc. collide with CGNAT and other VPNs)
 *       users:                          # listed → users not listed are deleted
 *         - name: alice                 # the key within the account
 *           email: alice@example.com
 *           password: correct horse     # only when the user is created; never printed
 *           disabled: false
 *       serviceAccounts:
 *         - name: ci
 *       sites:
 *         - name: office
 *       resources:
 *         - name: lan
 *           type: cidr                  # cidr | dns | internet
 *           address: 10.0.0.0/24        # dns: a name or pattern (*.example.com); internet: none
 *           site: office
 *           filters:                    # none: everything
 *             - protocol: tcp
 *               ports: [443, "8000-8100"]
 *             - protocol: icmp
 *       groups:
 *         - name: staff
 *           members: [alice, ci]         # users or service accounts of the account, by name
 *       policies:
 *         - group: staff
 *           resource: lan
 *           description: staff reach the office LAN
 *
 * Unknown keys are errors (a typo must not silently mean "nothing"). Each kind listed under an
 * account is made to match exactly; a kind not listed is left as it is. Accounts themselves are
 * created and updated, never deleted (that would take every device and token with them).
 */
import { hasHostBits, normalizePrefix, parsePrefix } from '@gatehouse/addresses';
import { z } from 'zod';
import type { ResourceFilter } from '../db/storage.ts';

const SLUG = /^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$/;
/** Control characters (C0, DEL, C1) and the line/paragraph separators. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

const name = (what: string) =>
  z
    .string({ error: `${what}: a string` })
    .min(1, `${what}: must not be empty`)
    .max(128, `${what}: at most 128 characters`)
    .refine((value) => !CONTROL.test(value), `${what}: no control characters`)
    .refine((value) => value.trim() === value, `${what}: no leading or trailing spaces`);

const EMAIL = /^[^\s@]+@[^\s@]+$/;
const DNS_LABEL = /^[A-Za-z0-9_*?-]{1,63}$/;

const prefixOf = (family: 4 | 6) =>
  z.string().superRefine((value, ctx) => {
    try {
      const prefix = parsePrefix(value);
      if (prefix.family !== family) {
        ctx.addIssue({ code: 'custom', message: `must be an IPv${family} prefix` });
      } else if (!value.includes('/')) {
        ctx.addIssue({ code: 'custom', message: 'needs a prefix length' });
      } else if (hasHostBits(value)) {
        ctx.addIssue({
          code: 'custom',
          message: `has bits set past its prefix length (did you mean ${normalizePrefix(value)}?)`,
        });
      }
    } catch {
      ctx.addIssue({ code: 'custom', message: `not an IP prefix: ${JSON.stringify(value)}` });
    }
  });

const rangesSchema = z.strictObject({
  tunnelIpv4: prefixOf(4).optional(),
  tunnelIpv6: prefixOf(6).optional(),
  proxyIpv4: prefixOf(4).optional(),
  proxyIpv6: prefixOf(6).optional(),
});

const port = z
  .number()
  .int('a port is an integer')
  .min(1, 'ports are 1–65535')
  .max(65535, 'ports are 1–65535');

/** 443, "443", "8000-8100" or {from: 8000, to: 8100}. */
const portRangeSchema = z
  .union([
    port,
    z.string().regex(/^\d{1,5}(-\d{1,5})?$/, 'a port or a range like "8000-8100"'),
    z.strictObject({ from: port, to: port }),
  ])
  .transform((value, ctx) => {
    let from: number;
    let to: number;
    if (typeof value === 'number') from = to = value;
    else if (typeof value === 'string') {
      const [a, b] = value.split('-');
      from = Number(a);
      to = Number(b ?? a);
    } else ({ from, to } = value);
    if (from < 1 || to > 65535 || from > to) {
      ctx.addIssue({ code: 'custom', message: `bad port range ${from}-${to}` });
      return z.NEVER;
    }
    return { from, to };
  });

const filterSchema = z
  .strictObject({
    protocol: z.enum(['tcp', 'udp', 'icmp'], { error: 'protocol: tcp, udp or icmp' }),
    ports: z.array(portRangeSchema).optional(),
  })
  .superRefine((value, ctx) => {
    if (value.protocol === 'icmp' && (value.ports?.length ?? 0) > 0) {
      ctx.addIssue({ code: 'custom', path: ['ports'], message: 'icmp has no ports' });
    }
  });

const userSchema = z.strictObject({
  name: name('name'),
  email: z
    .string()
    .max(254, 'email: at most 254 characters')
    .regex(EMAIL, 'email: not an email address')
    .optional(),
  password: z
    .string({ error: 'password: a string' })
    .min(8, 'password: at least 8 characters')
    .max(1024, 'password: at most 1024 characters')
    .optional(),
  disabled: z.boolean().optional(),
});

const serviceAccountSchema = z.strictObject({
  name: name('name'),
  disabled: z.boolean().optional(),
});

const siteSchema = z.strictObject({ name: name('name') });

const resourceSchema = z
  .strictObject({
    name: name('name'),
    type: z.enum(['cidr', 'dns', 'internet'], { error: 'type: cidr, dns or internet' }),
    address: z.string().max(253, 'address: at most 253 characters').optional(),
    site: name('site'),
    filters: z.array(filterSchema).optional(),
  })
  .superRefine((value, ctx) => {
    const at = { path: ['address'] };
    if (value.type === 'internet') {
      if (value.address !== undefined) {
        ctx.addIssue({ code: 'custom', ...at, message: 'an internet resource has no address' });
      }
      return;
    }
    if (value.address === undefined) {
      ctx.addIssue({ code: 'custom', ...at, message: `a ${value.type} resource needs an address` });
      return;
    }
    if (value.type === 'cidr') {
      try {
        parsePrefix(value.address);
        if (value.address.includes('/') && hasHostBits(value.address)) {
          ctx.addIssue({
            code: 'custom',
            ...at,
            message: `${value.address} has bits set past its prefix length (did you mean ${normalizePrefix(value.address)}?)`,
          });
        }
      } catch {
        ctx.addIssue({
          code: 'custom',
          ...at,
          message: `not an IP address or prefix: ${JSON.stringify(value.address)}`,
        });
      }
      return;
    }
    const labels = value.address.replace(/\.$/, '').split('.');
    if (!labels.every((label) => DNS_LABEL.test(label))) {
      ctx.addIssue({
        code: 'custom',
        ...at,
        message: `not a DNS name or pattern: ${JSON.stringify(value.address)} (labels of A-Z a-z 0-9 - _ and the wildcards * ** ?)`,
      });
    }
  });

const groupSchema = z.strictObject({
  name: name('name'),
  members: z.array(name('member')).optional(),
});

const policySchema = z.strictObject({
  group: name('group'),
  resource: name('resource'),
  description: z.string().max(1024, 'description: at most 1024 characters').optional(),
});

/** A list whose items' `key` must be unique: the second one is the error. */
function uniqueBy<T>(item: z.ZodType<T>, key: (value: T) => string, what: string) {
  return z.array(item).superRefine((items, ctx) => {
    const seen = new Set<string>();
    items.forEach((value, index) => {
      const k = key(value);
      if (seen.has(k)) {
        ctx.addIssue({ code: 'custom', path: [index], message: `${what} ${k} is listed twice` });
      }
      seen.add(k);
    });
  });
}

const accountSchema = z
  .strictObject({
    slug: z
      .string({ error: 'slug: a string' })
      .regex(SLUG, 'slug: 1 to 100 of A-Z a-z 0-9 _ -, not starting with _ or -'),
    name: name('name'),
    ranges: rangesSchema.optional(),
    users: uniqueBy(userSchema, (u) => u.name, 'user').optional(),
    serviceAccounts: uniqueBy(serviceAccountSchema, (s) => s.name, 'service account').optional(),
    sites: uniqueBy(siteSchema, (s) => s.name, 'site').optional(),
    resources: uniqueBy(resourceSchema, (r) => r.name, 'resource').optional(),
    groups: uniqueBy(groupSchema, (g) => g.name, 'group').optional(),
    policies: uniqueBy(policySchema, (p) => `${p.group} → ${p.resource}`, 'policy').optional(),
  })
  .superRefine((account, ctx) => {
    const users = account.users ?? [];
    const services = account.serviceAccounts ?? [];
    const serviceNames = new Set(services.map((s) => s.name));
    users.forEach((user, index) => {
      if (serviceNames.has(user.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['users', index, 'name'],
          message: `${user.name} is also listed as a service account`,
        });
      }
    });
    const emails = new Set<string>();
    users.forEach((user, index) => {
      if (user.email === undefined) return;
      if (emails.has(user.email)) {
        ctx.addIssue({
          code: 'custom',
          path: ['users', index, 'email'],
          message: `email ${user.email} is listed twice`,
        });
      }
      emails.add(user.email);
    });
    account.groups?.forEach((group, index) => {
      const seen = new Set<string>();
      group.members?.forEach((member, m) => {
        if (seen.has(member)) {
          ctx.addIssue({
            code: 'custom',
            path: ['groups', index, 'members', m],
            message: `member ${member} is listed twice`,
          });
        }
        seen.add(member);
      });
    });
  });

export const applyFileSchema = z.strictObject({
  accounts: uniqueBy(accountSchema, (a) => a.slug, 'account'),
});

export type ApplyFile = z.infer<typeof applyFileSchema>;
export type ApplyAccount = ApplyFile['accounts'][number];
export type ApplyResource = NonNullable<ApplyAccount['resources']>[number];

/** Filters as the storage keeps them: ports sorted, no empty port lists. */
export function canonicalFilters(filters: ApplyResource['filters']): ResourceFilter[] {
  return (filters ?? []).map((filter) => {
    const out: ResourceFilter = { protocol: filter.protocol };
    const ports = (filter.ports ?? [])
      .map((range) => ({ from: range.from, to: range.to }))
      .sort((a, b) => a.from - b.from || a.to - b.to);
    if (ports.length > 0) out.ports = ports;
    return out;
  });
}

/** A resource's address as the storage keeps it (cidr canonical, dns lower case). */
export function canonicalAddress(resource: ApplyResource): string | null {
  if (resource.type === 'internet' || resource.address === undefined) return null;
  if (resource.type === 'cidr') return normalizePrefix(resource.address);
  return resource.address.toLowerCase();
}
