-- owner-access PostgreSQL schema, part `directory`, version 1: the crate's own
-- communities and owners (what a host that lets the crate keep them uses; a host
-- with its own owner tables never creates these).

CREATE TABLE owner_access_communities (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    reply_to     TEXT,
    time_zone    TEXT,
    logo_url     TEXT,
    accent_color TEXT
);

CREATE TABLE owner_access_owners (
    id               TEXT PRIMARY KEY,
    community        TEXT NOT NULL,
    property         TEXT NOT NULL,
    first_name       TEXT NOT NULL,
    last_name        TEXT NOT NULL,
    property_address TEXT NOT NULL,
    -- As the host gave it, possibly invalid. NOT unique: host data may already share
    -- an address (the roster flags it; a mass edit refuses a new sharing).
    primary_email    TEXT,
    -- delivered_key(primary_email) (version 1), NULL when blank: what "shared"
    -- compares. Computed in Rust (UTS #46 cannot be done in SQL).
    email_key        TEXT CHECK (email_key IS NULL OR email_key <> ''),
    registered       BOOLEAN NOT NULL DEFAULT false,
    -- Nanoseconds since the Unix epoch, as every time in these tables.
    registered_at    BIGINT,
    -- ENFORCES: only a registered owner has a registration time.
    CHECK (registered OR registered_at IS NULL),
    CHECK (email_key IS NULL OR primary_email IS NOT NULL)
);

CREATE INDEX owner_access_owners_by_community ON owner_access_owners (community, registered);
CREATE INDEX owner_access_owners_by_email_key ON owner_access_owners (email_key)
    WHERE email_key IS NOT NULL;
