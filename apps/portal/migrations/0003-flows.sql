-- Flows: a client device may reach a resource through a gateway (authorize_flow sent and the
-- gateway's flow_authorized received), kept so that a restarted portal gives a gateway that joins
-- again its flows in init.authorizations, and matches the client device to them when it joins.
--
-- One row per (device, resource, domain): a DNS resource's flow has a row for each name the client
-- asked for (domain_key is the name in lower case without a trailing dot; '' for the other types).
-- The rows of one device and resource name one gateway and one preshared key.
--
-- preshared_key is the WireGuard preshared key of that client-gateway pair, stored because the
-- gateway needs it to rebuild the same peer (the client holds it too): a session secret of that
-- pair, never logged, deleted with the flow — when it is rejected (policy, resource or token
-- gone), expires, outlives its gateway's hold, or the device's public key changes.
CREATE TABLE flows (
  account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  -- The gateway's row (the hub's key for it: site and the gateway's own device id).
  gateway_id TEXT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
  device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  resource_id TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
  -- The client token it was authorized under: its revocation or expiry ends the flow.
  token_id TEXT NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
  client_public_key TEXT NOT NULL,
  preshared_key TEXT NOT NULL,
  domain_key TEXT NOT NULL DEFAULT '',
  -- authorize_flow's domain as sent: {"name": "a.example.com", "proxy_ips": ["100.96.0.1"]}.
  domain TEXT,
  -- null: never.
  expires_at INTEGER,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (device_id, resource_id, domain_key),
  CHECK ((domain_key = '') = (domain IS NULL))
) STRICT;
-- A gateway's join reads its flows; a hold that ended deletes them.
CREATE INDEX flows_gateway ON flows (gateway_id);
-- The sweep deletes the expired ones.
CREATE INDEX flows_expires ON flows (expires_at) WHERE expires_at IS NOT NULL;
