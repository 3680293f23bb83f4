-- A client token is bound to the first device (external id) that joins with it.
ALTER TABLE tokens ADD COLUMN device_external_id TEXT;

-- Joins look a WireGuard public key up within the account (one device per key).
CREATE INDEX devices_account_public_key ON devices (account_id, public_key);
