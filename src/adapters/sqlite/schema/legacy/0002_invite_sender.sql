-- owner-access SQLite schema, version 2: an invite keeps the From and the portal URL
-- it was written with, so a draft sends what the manager set. NULL in rows written
-- before: the service's own settings (for a batch, its sender and portal_url columns).
ALTER TABLE invites ADD COLUMN sender TEXT;
ALTER TABLE invites ADD COLUMN portal_url TEXT;
