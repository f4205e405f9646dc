-- owner-access SQLite schema, store part, version 1: drafts, batches and their
-- deliveries, invitations and tokens, the registrations owed, each owner's invitation
-- state and the activity feed (the tables of the whole-file schema 13, prefixed).
--
-- Timestamps are INTEGER nanoseconds since the Unix epoch (UTC). Owner and community
-- ids are the directory's strings, stored as they are: no table here refers to a table
-- of the directory part (which may be a host's own), nor does any query join one. The
-- state CHECKs are written as OR chains, not `IN (...)`: SQLite builds a temporary
-- index for an IN list of three or more values each time the CHECK runs, which was a
-- tenth of the send's CPU. What the schema enforces by itself is marked "ENFORCES".

-- An invite as written (a draft's or a batch's): its selection and attachments are
-- child rows. `sender` and `portal_url` are the From and the portal URL it was written
-- with (NULL: the service's own settings). An invite may have no text body of its own
-- (its text part is made from the HTML body): text_body is then '' and the flag 1.
CREATE TABLE owner_access_invites (
    id         INTEGER PRIMARY KEY,
    community  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    text_body  TEXT NOT NULL,
    html_body  TEXT,
    reply_to   TEXT,
    summary_to TEXT,
    draft      TEXT,
    sender     TEXT,
    portal_url TEXT,
    text_from_html INTEGER NOT NULL DEFAULT 0
        CHECK (text_from_html = 0 OR text_from_html = 1)
) STRICT;

CREATE TABLE owner_access_invite_selection (
    invite INTEGER NOT NULL REFERENCES owner_access_invites (id) ON DELETE CASCADE,
    owner  TEXT NOT NULL,
    PRIMARY KEY (invite, owner)
) STRICT, WITHOUT ROWID;

CREATE TABLE owner_access_invite_attachments (
    invite       INTEGER NOT NULL REFERENCES owner_access_invites (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL CHECK (position >= 0),
    file_name    TEXT NOT NULL,
    content_type TEXT NOT NULL,
    bytes        BLOB NOT NULL,
    PRIMARY KEY (invite, position)
) STRICT;

CREATE TABLE owner_access_drafts (
    id         TEXT PRIMARY KEY NOT NULL,
    -- ENFORCES: an invite belongs to one draft or one batch.
    invite     INTEGER NOT NULL UNIQUE REFERENCES owner_access_invites (id),
    community  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE owner_access_batches (
    -- Insertion order: the tiebreak of "newest first".
    seq               INTEGER PRIMARY KEY,
    id                TEXT NOT NULL UNIQUE,
    community         TEXT NOT NULL,
    invite            INTEGER NOT NULL UNIQUE REFERENCES owner_access_invites (id),
    sender_name       TEXT,
    sender_address    TEXT NOT NULL,
    portal_url        TEXT NOT NULL,
    token_ttl_seconds INTEGER NOT NULL CHECK (token_ttl_seconds >= 0),
    created_at        INTEGER NOT NULL,
    resend            INTEGER NOT NULL CHECK (resend IN (0, 1))
) STRICT;

-- ENFORCES: one delivery per (batch, owner); the state's fields match the state. A
-- claim names the run of the send engine that holds it (`holder`) and when its lease
-- runs out (`lease_until`). `unreachable_runs` counts the runs that left it pending
-- because the mail server could not be reached.
CREATE TABLE owner_access_deliveries (
    batch       TEXT NOT NULL REFERENCES owner_access_batches (id),
    owner       TEXT NOT NULL,
    to_addr     TEXT NOT NULL,
    state       TEXT NOT NULL
        CHECK (state = 'pending' OR state = 'claimed' OR state = 'sent' OR state = 'failed'
               OR state = 'skipped'),
    state_at    INTEGER,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    holder      TEXT CHECK (holder IS NULL OR holder <> ''),
    lease_until INTEGER,
    unreachable_runs INTEGER NOT NULL DEFAULT 0 CHECK (unreachable_runs >= 0),
    skip_reason TEXT CHECK (skip_reason IS NULL OR skip_reason <> ''),
    PRIMARY KEY (batch, owner),
    CHECK ((state = 'pending') = (state_at IS NULL)),
    CHECK ((state = 'failed') = (error IS NOT NULL)),
    -- ENFORCES: a claim names its holder and the end of its lease; no other state does.
    CHECK ((state = 'claimed') = (holder IS NOT NULL)),
    CHECK ((state = 'claimed') = (lease_until IS NOT NULL)),
    -- ENFORCES: a skipped delivery says why; no other state has a reason.
    CHECK ((state = 'skipped') = (skip_reason IS NOT NULL))
) STRICT, WITHOUT ROWID;

-- An invitation is one owner's messages of one batch: every link in them is a token
-- of the invitation. Pending until its message is accepted, then live; a newer
-- accepted invitation closes the older one, and so does a redeem.
CREATE TABLE owner_access_invitations (
    id        INTEGER PRIMARY KEY,
    owner     TEXT NOT NULL,
    batch     TEXT NOT NULL,
    state     TEXT NOT NULL
        CHECK (state = 'pending' OR state = 'live' OR state = 'closed'),
    closed_at INTEGER,
    CHECK ((state = 'closed') = (closed_at IS NOT NULL))
) STRICT;

-- ENFORCES: token hashes are unique (the primary key); only the SHA-256 is stored.
-- `sent_to` is the address the link was sent to (NULL in rows of schemas before 9:
-- their delivery's address is the same); `answered_at` is when a redeem was answered.
CREATE TABLE owner_access_tokens (
    hash       BLOB PRIMARY KEY NOT NULL CHECK (length(hash) = 32),
    invitation INTEGER NOT NULL REFERENCES owner_access_invitations (id),
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state      TEXT NOT NULL
        CHECK (state = 'pending' OR state = 'live' OR state = 'revoked'
               OR state = 'redeemed'),
    state_at   INTEGER,
    sent_to    TEXT,
    answered_at INTEGER,
    CHECK ((state = 'pending' OR state = 'live') = (state_at IS NULL))
) STRICT, WITHOUT ROWID;

-- A redeem crosses the two parts without a shared transaction: the store spends the
-- token and records the registration owed here, the directory marks the owner
-- registered, and the store clears the row. Normally empty.
CREATE TABLE owner_access_registrations_owed (
    -- ENFORCES: one owed registration per spent token.
    token   BLOB PRIMARY KEY NOT NULL REFERENCES owner_access_tokens (hash),
    owner   TEXT NOT NULL,
    batch   TEXT NOT NULL,
    -- The address the link was sent to: what the directory's mark compares.
    sent_to TEXT NOT NULL,
    at      INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Each owner's invitations (first, last, how many, when the latest link expires); an
-- owner never invited has no row.
CREATE TABLE owner_access_invitation_states (
    owner      TEXT PRIMARY KEY NOT NULL,
    first_at   INTEGER NOT NULL,
    last_at    INTEGER NOT NULL,
    count      INTEGER NOT NULL CHECK (count >= 1),
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE owner_access_activity (
    -- Append order: the tiebreak of "newest first" among entries with one `at`.
    seq       INTEGER PRIMARY KEY,
    community TEXT NOT NULL,
    at        INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    -- The entry's kind and fields, as JSON.
    details   TEXT NOT NULL CHECK (json_valid(details))
) STRICT;
