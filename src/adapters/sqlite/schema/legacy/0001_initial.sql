-- owner-access SQLite schema, version 1.
--
-- Timestamps are INTEGER nanoseconds since the Unix epoch (UTC). Ids are the host's
-- and the crate's strings. Tables are STRICT: a value of the wrong type is refused.
-- What the schema enforces by itself is marked "ENFORCES".

CREATE TABLE communities (
    id       TEXT PRIMARY KEY NOT NULL,
    name     TEXT NOT NULL,
    reply_to TEXT
) STRICT;

CREATE TABLE owners (
    id               TEXT PRIMARY KEY NOT NULL,
    community        TEXT NOT NULL,
    property         TEXT NOT NULL,
    first_name       TEXT NOT NULL,
    last_name        TEXT NOT NULL,
    property_address TEXT NOT NULL,
    -- As the host gave it, possibly invalid. NOT unique: host data may already share
    -- an address (the roster flags it; the mass-edit path refuses a new sharing).
    primary_email    TEXT,
    -- normalize_address(primary_email), NULL when blank: what "shared" compares.
    email_key        TEXT CHECK (email_key IS NULL OR email_key <> ''),
    -- The state CHECKs are written as OR chains, not `IN (...)`: SQLite builds a
    -- temporary index for an IN list of three or more values each time the CHECK
    -- runs, which was a tenth of the send's CPU (a state changes once per message).
    access           TEXT NOT NULL
        CHECK (access = 'not_invited' OR access = 'invited' OR access = 'registered'),
    invited_first_at INTEGER,
    invited_last_at  INTEGER,
    invited_count    INTEGER CHECK (invited_count IS NULL OR invited_count >= 1),
    expires_at       INTEGER,
    registered_at    INTEGER,
    -- ENFORCES: the fields of an access status are present exactly when it needs them.
    CHECK ((access = 'invited') = (invited_first_at IS NOT NULL AND invited_last_at IS NOT NULL
                                   AND invited_count IS NOT NULL AND expires_at IS NOT NULL)),
    CHECK (access = 'invited' OR (invited_first_at IS NULL AND invited_last_at IS NULL
                                  AND invited_count IS NULL AND expires_at IS NULL)),
    CHECK (access = 'registered' OR registered_at IS NULL),
    CHECK ((email_key IS NULL) OR (primary_email IS NOT NULL))
) STRICT;

CREATE INDEX owners_by_community ON owners (community);
CREATE INDEX owners_by_email_key ON owners (email_key) WHERE email_key IS NOT NULL;

-- An invite as written (a draft's or a batch's): its selection and attachments are
-- child rows.
CREATE TABLE invites (
    id         INTEGER PRIMARY KEY,
    community  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    text_body  TEXT NOT NULL,
    html_body  TEXT,
    reply_to   TEXT,
    summary_to TEXT,
    draft      TEXT
) STRICT;

CREATE TABLE invite_selection (
    invite INTEGER NOT NULL REFERENCES invites (id) ON DELETE CASCADE,
    owner  TEXT NOT NULL,
    PRIMARY KEY (invite, owner)
) STRICT, WITHOUT ROWID;

CREATE TABLE invite_attachments (
    invite       INTEGER NOT NULL REFERENCES invites (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL CHECK (position >= 0),
    file_name    TEXT NOT NULL,
    content_type TEXT NOT NULL,
    bytes        BLOB NOT NULL,
    PRIMARY KEY (invite, position)
) STRICT;

CREATE TABLE drafts (
    id         TEXT PRIMARY KEY NOT NULL,
    -- ENFORCES: an invite belongs to one draft or one batch.
    invite     INTEGER NOT NULL UNIQUE REFERENCES invites (id),
    community  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE INDEX drafts_by_community ON drafts (community, updated_at);

CREATE TABLE batches (
    -- Insertion order: the tiebreak of "newest first".
    seq               INTEGER PRIMARY KEY,
    id                TEXT NOT NULL UNIQUE,
    community         TEXT NOT NULL,
    invite            INTEGER NOT NULL UNIQUE REFERENCES invites (id),
    sender_name       TEXT,
    sender_address    TEXT NOT NULL,
    portal_url        TEXT NOT NULL,
    token_ttl_seconds INTEGER NOT NULL CHECK (token_ttl_seconds >= 0),
    created_at        INTEGER NOT NULL,
    resend            INTEGER NOT NULL CHECK (resend IN (0, 1))
) STRICT;

CREATE INDEX batches_by_community ON batches (community, created_at, seq);

-- ENFORCES: one delivery per (batch, owner); the state's fields match the state.
CREATE TABLE deliveries (
    batch    TEXT NOT NULL REFERENCES batches (id),
    owner    TEXT NOT NULL,
    to_addr  TEXT NOT NULL,
    -- OR chains rather than IN lists: see owners.access.
    state    TEXT NOT NULL
        CHECK (state = 'pending' OR state = 'claimed' OR state = 'sent' OR state = 'failed'),
    state_at INTEGER,
    error    TEXT,
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    PRIMARY KEY (batch, owner),
    CHECK ((state = 'pending') = (state_at IS NULL)),
    CHECK ((state = 'failed') = (error IS NOT NULL))
) STRICT, WITHOUT ROWID;

-- What claiming looks at: pending deliveries by owner, claims by age.
CREATE INDEX deliveries_by_state ON deliveries (batch, state, state_at, owner);

-- An invitation is one owner's messages of one batch: every link in them is a token
-- of the invitation. A newer invitation closes the older one, and so does a change of
-- the owner's email or a redeem.
CREATE TABLE invitations (
    id        INTEGER PRIMARY KEY,
    owner     TEXT NOT NULL,
    batch     TEXT NOT NULL,
    live      INTEGER NOT NULL CHECK (live IN (0, 1)),
    closed_at INTEGER,
    CHECK ((live = 1) = (closed_at IS NULL))
) STRICT;

-- ENFORCES: at most one live invitation per owner. Several live tokens of one batch
-- may coexist (a message re-sent after a crash carries a fresh token, and the copy
-- already delivered must keep working); tokens of other batches cannot stay live.
CREATE UNIQUE INDEX invitations_one_live_per_owner ON invitations (owner) WHERE live = 1;
CREATE INDEX invitations_by_owner ON invitations (owner, batch);

-- ENFORCES: token hashes are unique (the primary key); only the SHA-256 is stored.
CREATE TABLE tokens (
    hash       BLOB PRIMARY KEY NOT NULL CHECK (length(hash) = 32),
    invitation INTEGER NOT NULL REFERENCES invitations (id),
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state      TEXT NOT NULL
        CHECK (state = 'live' OR state = 'revoked' OR state = 'redeemed'),
    state_at   INTEGER,
    CHECK ((state = 'live') = (state_at IS NULL))
) STRICT, WITHOUT ROWID;

CREATE INDEX tokens_by_invitation ON tokens (invitation, state);

-- ENFORCES: a live token belongs to a live invitation.
CREATE TRIGGER tokens_live_needs_live_invitation
BEFORE INSERT ON tokens
WHEN NEW.state = 'live'
 AND (SELECT live FROM invitations WHERE id = NEW.invitation) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'a live token needs a live invitation');
END;

-- ENFORCES: a token never becomes live again, and a redeemed token stays redeemed.
CREATE TRIGGER tokens_state_moves_forward
BEFORE UPDATE OF state ON tokens
WHEN OLD.state <> NEW.state AND (NEW.state = 'live' OR OLD.state = 'redeemed')
BEGIN
    SELECT RAISE(ABORT, 'a token state only moves from live to revoked or redeemed');
END;

-- ENFORCES: an invitation never reopens.
CREATE TRIGGER invitations_never_reopen
BEFORE UPDATE OF live ON invitations
WHEN OLD.live = 0 AND NEW.live = 1
BEGIN
    SELECT RAISE(ABORT, 'a closed invitation never reopens');
END;

-- ENFORCES: closing an invitation revokes its live tokens, in the same statement.
CREATE TRIGGER invitations_close_revokes_tokens
AFTER UPDATE OF live ON invitations
WHEN OLD.live = 1 AND NEW.live = 0
BEGIN
    UPDATE tokens SET state = 'revoked', state_at = NEW.closed_at
     WHERE invitation = NEW.id AND state = 'live';
END;

CREATE TABLE activity (
    -- Append order: the tiebreak of "newest first" among entries with one `at`.
    seq       INTEGER PRIMARY KEY,
    community TEXT NOT NULL,
    at        INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    -- The entry's kind and fields, as JSON.
    details   TEXT NOT NULL CHECK (json_valid(details))
) STRICT;

CREATE INDEX activity_feed ON activity (community, at, seq);
