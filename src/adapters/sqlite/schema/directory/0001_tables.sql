-- owner-access SQLite schema, directory part, version 1: the communities and their
-- owners (the tables of the whole-file schema 13, prefixed).
--
-- Timestamps are INTEGER nanoseconds since the Unix epoch (UTC). Ids are the host's
-- strings. Tables are STRICT: a value of the wrong type is refused. What the schema
-- enforces by itself is marked "ENFORCES". No table of the store part refers to these.

CREATE TABLE owner_access_communities (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    reply_to     TEXT,
    -- What a community sets for its letters. NULL: UTC, no logo, the default accent
    -- colour. Values are checked by the crate when made and again when read.
    time_zone    TEXT,
    logo_url     TEXT,
    accent_color TEXT
) STRICT;

CREATE TABLE owner_access_owners (
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
