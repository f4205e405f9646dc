-- owner-access SQLite schema, version 13: each owner's invitation state is the
-- store's, the owners keep only what the host owns.
--
-- The invitations sent to an owner (first, last, how many, when the latest link
-- expires) move from `owners` into `invitation_states`, a table of the store's that a
-- recorded sent message updates in the same transaction; an owner never invited has
-- no row. `owners` keeps the host's fields and a registered flag with its time (what a
-- host's own table has), and is rebuilt to drop the invitation columns and their
-- CHECKs (ALTER TABLE cannot). Every owner keeps their history: an invited owner's
-- columns become their row here, a registered one stays registered at the same time.

CREATE TABLE invitation_states (
    owner      TEXT PRIMARY KEY NOT NULL,
    first_at   INTEGER NOT NULL,
    last_at    INTEGER NOT NULL,
    count      INTEGER NOT NULL CHECK (count >= 1),
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO invitation_states (owner, first_at, last_at, count, expires_at)
SELECT id, invited_first_at, invited_last_at, invited_count, expires_at
  FROM owners WHERE access = 'invited';

CREATE TABLE owners_v2 (
    id               TEXT PRIMARY KEY NOT NULL,
    community        TEXT NOT NULL,
    property         TEXT NOT NULL,
    first_name       TEXT NOT NULL,
    last_name        TEXT NOT NULL,
    property_address TEXT NOT NULL,
    -- As the host gave it, possibly invalid. NOT unique: host data may already share
    -- an address (the roster flags it; the mass-edit path refuses a new sharing).
    primary_email    TEXT,
    -- delivered_key(primary_email), NULL when blank: what "shared" compares.
    email_key        TEXT CHECK (email_key IS NULL OR email_key <> ''),
    registered       INTEGER NOT NULL DEFAULT 0 CHECK (registered = 0 OR registered = 1),
    registered_at    INTEGER,
    -- ENFORCES: only a registered owner has a registration time.
    CHECK (registered = 1 OR registered_at IS NULL),
    CHECK ((email_key IS NULL) OR (primary_email IS NOT NULL))
) STRICT;

INSERT INTO owners_v2
    (id, community, property, first_name, last_name, property_address, primary_email,
     email_key, registered, registered_at)
SELECT id, community, property, first_name, last_name, property_address, primary_email,
       email_key, access = 'registered', registered_at
  FROM owners;

DROP TABLE owners;
ALTER TABLE owners_v2 RENAME TO owners;

CREATE INDEX owners_by_community ON owners (community);
CREATE INDEX owners_by_email_key ON owners (email_key) WHERE email_key IS NOT NULL;
