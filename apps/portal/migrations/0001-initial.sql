-- Gatehouse portal, schema version 1.
--
-- Rows of one account refer to rows of the same account: the child tables carry account_id
-- and reference (id, account_id) pairs, so a site, group or actor of another account cannot be
-- named. Deleting a row deletes what hangs off it (ON DELETE CASCADE). Timestamps are epoch
-- milliseconds. "groups" is an SQL keyword, hence actor_groups.

CREATE TABLE accounts (
  id TEXT PRIMARY KEY,
  slug TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  tunnel_ipv4 TEXT NOT NULL,
  tunnel_ipv6 TEXT NOT NULL,
  proxy_ipv4 TEXT NOT NULL,
  proxy_ipv6 TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE actors (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  kind TEXT NOT NULL CHECK (kind IN ('user', 'service_account')),
  name TEXT NOT NULL,
  email TEXT,
  disabled_at INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (account_id, name),
  UNIQUE (account_id, email),
  UNIQUE (id, account_id),
  CHECK (kind = 'user' OR email IS NULL)
) STRICT;

CREATE TABLE password_identities (
  actor_id TEXT PRIMARY KEY REFERENCES actors (id) ON DELETE CASCADE,
  password_hash TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE sites (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (account_id, name),
  UNIQUE (id, account_id)
) STRICT;

CREATE TABLE tokens (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  kind TEXT NOT NULL
    CHECK (kind IN ('browser_client', 'headless_client', 'service_account', 'gateway')),
  actor_id TEXT,
  site_id TEXT,
  hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  expires_at INTEGER,
  revoked_at INTEGER,
  last_used_at INTEGER,
  FOREIGN KEY (actor_id, account_id) REFERENCES actors (id, account_id) ON DELETE CASCADE,
  FOREIGN KEY (site_id, account_id) REFERENCES sites (id, account_id) ON DELETE CASCADE,
  CHECK (
    (kind = 'gateway' AND site_id IS NOT NULL AND actor_id IS NULL)
    OR (kind <> 'gateway' AND actor_id IS NOT NULL AND site_id IS NULL)
  )
) STRICT;
CREATE INDEX tokens_account ON tokens (account_id);
CREATE INDEX tokens_actor ON tokens (actor_id);
CREATE INDEX tokens_site ON tokens (site_id);

CREATE TABLE devices (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  actor_id TEXT NOT NULL,
  external_id TEXT NOT NULL,
  name TEXT NOT NULL,
  public_key TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  last_seen_at INTEGER,
  last_seen_remote_address TEXT,
  FOREIGN KEY (actor_id, account_id) REFERENCES actors (id, account_id) ON DELETE CASCADE,
  UNIQUE (account_id, actor_id, external_id)
) STRICT;
CREATE INDEX devices_actor ON devices (actor_id, account_id);

CREATE TABLE gateways (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  site_id TEXT NOT NULL,
  external_id TEXT NOT NULL,
  name TEXT NOT NULL,
  public_key TEXT NOT NULL,
  endpoint TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  last_seen_at INTEGER,
  FOREIGN KEY (site_id, account_id) REFERENCES sites (id, account_id) ON DELETE CASCADE,
  UNIQUE (site_id, external_id)
) STRICT;
CREATE INDEX gateways_site ON gateways (site_id, account_id);

-- One row per tunnel address handed out: host_index counts from the start of the account's
-- range for that family (the network address is 0), so no two devices or gateways of an
-- account share one.
CREATE TABLE tunnel_addresses (
  account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  family INTEGER NOT NULL CHECK (family IN (4, 6)),
  host_index INTEGER NOT NULL CHECK (host_index > 0),
  address TEXT NOT NULL,
  device_id TEXT REFERENCES devices (id) ON DELETE CASCADE,
  gateway_id TEXT REFERENCES gateways (id) ON DELETE CASCADE,
  PRIMARY KEY (account_id, family, host_index),
  UNIQUE (account_id, address),
  UNIQUE (device_id, family),
  UNIQUE (gateway_id, family),
  CHECK ((device_id IS NULL) <> (gateway_id IS NULL))
) STRICT;

CREATE TABLE resources (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  site_id TEXT NOT NULL,
  type TEXT NOT NULL CHECK (type IN ('cidr', 'dns', 'internet')),
  name TEXT NOT NULL,
  address TEXT,
  -- JSON: [{"protocol": "tcp", "ports": [{"from": 443, "to": 443}]}]
  filters TEXT NOT NULL DEFAULT '[]',
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  FOREIGN KEY (site_id, account_id) REFERENCES sites (id, account_id) ON DELETE CASCADE,
  UNIQUE (account_id, name),
  UNIQUE (id, account_id),
  CHECK ((type = 'internet') = (address IS NULL))
) STRICT;
CREATE INDEX resources_site ON resources (site_id, account_id);

CREATE TABLE actor_groups (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (account_id, name),
  UNIQUE (id, account_id)
) STRICT;

CREATE TABLE memberships (
  group_id TEXT NOT NULL,
  actor_id TEXT NOT NULL,
  account_id TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (group_id, actor_id),
  FOREIGN KEY (group_id, account_id) REFERENCES actor_groups (id, account_id) ON DELETE CASCADE,
  FOREIGN KEY (actor_id, account_id) REFERENCES actors (id, account_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX memberships_actor ON memberships (actor_id, account_id);
CREATE INDEX memberships_group ON memberships (group_id, account_id);

CREATE TABLE policies (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  group_id TEXT NOT NULL,
  resource_id TEXT NOT NULL,
  description TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  FOREIGN KEY (group_id, account_id) REFERENCES actor_groups (id, account_id) ON DELETE CASCADE,
  FOREIGN KEY (resource_id, account_id) REFERENCES resources (id, account_id) ON DELETE CASCADE,
  UNIQUE (group_id, resource_id)
) STRICT;
CREATE INDEX policies_group ON policies (group_id, account_id);
CREATE INDEX policies_resource ON policies (resource_id, account_id);
CREATE INDEX policies_account ON policies (account_id);
