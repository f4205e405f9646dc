-- owner-access PostgreSQL schema, part `store`, version 1: the workflow's own state
-- (drafts, batches, deliveries with their leases, links, invitation states, the
-- activity feed). No foreign key to, and no join with, any owner table: the store
-- lives beside a host's own.
--
-- Every time is BIGINT nanoseconds since the Unix epoch (what the crate's
-- timestamps hold, exactly).

-- The server's clock in the same unit: what judges leases (LeaseClock::Server).
CREATE FUNCTION owner_access_now_ns() RETURNS BIGINT
    LANGUAGE sql STABLE
    AS $$ SELECT (extract(epoch FROM now()) * 1000000)::BIGINT * 1000 $$;

-- The text and selection of a draft or of a batch.
CREATE TABLE owner_access_invites (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community      TEXT NOT NULL,
    subject        TEXT NOT NULL,
    text_body      TEXT NOT NULL,
    -- The text part is made from the HTML (text_body is then empty).
    text_from_html BOOLEAN NOT NULL,
    html_body      TEXT,
    reply_to       TEXT,
    summary_to     TEXT,
    draft          TEXT,
    sender         TEXT,
    portal_url     TEXT
);

CREATE TABLE owner_access_invite_selection (
    invite BIGINT NOT NULL REFERENCES owner_access_invites (id) ON DELETE CASCADE,
    owner  TEXT NOT NULL,
    PRIMARY KEY (invite, owner)
);

CREATE TABLE owner_access_invite_attachments (
    invite       BIGINT NOT NULL REFERENCES owner_access_invites (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL CHECK (position >= 0),
    file_name    TEXT NOT NULL,
    content_type TEXT NOT NULL,
    bytes        BYTEA NOT NULL,
    PRIMARY KEY (invite, position)
);

CREATE TABLE owner_access_drafts (
    id         TEXT PRIMARY KEY,
    invite     BIGINT NOT NULL UNIQUE REFERENCES owner_access_invites (id),
    community  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX owner_access_drafts_by_community ON owner_access_drafts (community, updated_at);

CREATE TABLE owner_access_batches (
    id                TEXT PRIMARY KEY,
    -- The order of creation, for batches created in the same nanosecond.
    seq               BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    community         TEXT NOT NULL,
    invite            BIGINT NOT NULL UNIQUE REFERENCES owner_access_invites (id),
    sender_name       TEXT,
    sender_address    TEXT NOT NULL,
    portal_url        TEXT NOT NULL,
    token_ttl_seconds BIGINT NOT NULL CHECK (token_ttl_seconds >= 0),
    created_at        BIGINT NOT NULL,
    resend            BOOLEAN NOT NULL
);

CREATE INDEX owner_access_batches_by_community
    ON owner_access_batches (community, created_at, seq);

-- ENFORCES: one delivery per (batch, owner) (the primary key), with a state whose
-- fields match it; a claim names its holder and the end of its lease.
CREATE TABLE owner_access_deliveries (
    batch            TEXT NOT NULL REFERENCES owner_access_batches (id),
    owner            TEXT NOT NULL,
    to_addr          TEXT NOT NULL,
    state            TEXT NOT NULL
        CHECK (state IN ('pending', 'claimed', 'sent', 'failed', 'skipped')),
    state_at         BIGINT,
    error            TEXT,
    attempts         BIGINT NOT NULL DEFAULT 0 CHECK (attempts BETWEEN 0 AND 4294967295),
    holder           TEXT CHECK (holder IS NULL OR holder <> ''),
    lease_until      BIGINT,
    unreachable_runs BIGINT NOT NULL DEFAULT 0
        CHECK (unreachable_runs BETWEEN 0 AND 4294967295),
    skip_reason      TEXT CHECK (skip_reason IS NULL OR skip_reason <> ''),
    PRIMARY KEY (batch, owner),
    CHECK ((state = 'pending') = (state_at IS NULL)),
    CHECK ((state = 'failed') = (error IS NOT NULL)),
    CHECK ((state = 'claimed') = (holder IS NOT NULL)),
    CHECK ((state = 'claimed') = (lease_until IS NOT NULL)),
    CHECK ((state = 'skipped') = (skip_reason IS NOT NULL))
);

-- Claims read pending rows by owner and run-out leases by their end.
CREATE INDEX owner_access_deliveries_by_state
    ON owner_access_deliveries (batch, state, lease_until, owner);

-- An invitation is one owner's messages of one batch; every link belongs to one.
CREATE TABLE owner_access_invitations (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner     TEXT NOT NULL,
    batch     TEXT NOT NULL,
    state     TEXT NOT NULL CHECK (state IN ('pending', 'live', 'closed')),
    closed_at BIGINT,
    CHECK ((state = 'closed') = (closed_at IS NOT NULL))
);

-- ENFORCES: at most one live invitation per owner: of all an owner's links, only
-- those of the batch whose message was accepted last work.
CREATE UNIQUE INDEX owner_access_invitations_one_live_per_owner
    ON owner_access_invitations (owner) WHERE state = 'live';
-- ENFORCES: one open (pending or live) invitation per owner and batch.
CREATE UNIQUE INDEX owner_access_invitations_one_open_per_batch
    ON owner_access_invitations (owner, batch) WHERE state <> 'closed';
CREATE INDEX owner_access_invitations_by_owner ON owner_access_invitations (owner, batch);

-- ENFORCES: token hashes are unique (the primary key); only the SHA-256 is stored.
CREATE TABLE owner_access_tokens (
    hash        BYTEA PRIMARY KEY CHECK (length(hash) = 32),
    invitation  BIGINT NOT NULL REFERENCES owner_access_invitations (id),
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'live', 'revoked', 'redeemed')),
    state_at    BIGINT,
    -- The address the message went to: a link works only while it is the owner's.
    sent_to     TEXT NOT NULL,
    -- When a redeem call answered with the registration (once).
    answered_at BIGINT,
    CHECK ((state IN ('pending', 'live')) = (state_at IS NULL)),
    CHECK (answered_at IS NULL OR state = 'redeemed')
);

CREATE INDEX owner_access_tokens_by_invitation ON owner_access_tokens (invitation, state);

-- ENFORCES: a live token belongs to a live invitation, a pending one to an open one.
CREATE FUNCTION owner_access_token_needs_open_invitation() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    invitation_state TEXT;
BEGIN
    SELECT state INTO invitation_state FROM owner_access_invitations WHERE id = NEW.invitation;
    IF (NEW.state = 'live' AND invitation_state IS DISTINCT FROM 'live')
       OR (NEW.state = 'pending' AND invitation_state IS NOT DISTINCT FROM 'closed') THEN
        RAISE EXCEPTION 'a live token needs a live invitation, a pending one an open one'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER owner_access_tokens_need_open_invitation
    BEFORE INSERT ON owner_access_tokens
    FOR EACH ROW EXECUTE FUNCTION owner_access_token_needs_open_invitation();

-- ENFORCES: a token's state moves forward only: pending to live or revoked, live to
-- revoked or redeemed.
CREATE FUNCTION owner_access_token_moves_forward() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ((OLD.state = 'pending' AND NEW.state IN ('live', 'revoked'))
            OR (OLD.state = 'live' AND NEW.state IN ('revoked', 'redeemed'))) THEN
        RAISE EXCEPTION 'a token state only moves from pending to live or revoked, and from live to revoked or redeemed'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER owner_access_tokens_move_forward
    BEFORE UPDATE OF state ON owner_access_tokens
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION owner_access_token_moves_forward();

-- ENFORCES: an invitation moves forward only (pending to live or closed, live to
-- closed), and closing it revokes its pending and live tokens in the same statement.
CREATE FUNCTION owner_access_invitation_moves_forward() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ((OLD.state = 'pending' AND NEW.state IN ('live', 'closed'))
            OR (OLD.state = 'live' AND NEW.state = 'closed')) THEN
        RAISE EXCEPTION 'an invitation only moves from pending to live or closed, and from live to closed'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER owner_access_invitations_move_forward
    BEFORE UPDATE OF state ON owner_access_invitations
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION owner_access_invitation_moves_forward();

CREATE FUNCTION owner_access_invitation_close_revokes_tokens() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE owner_access_tokens SET state = 'revoked', state_at = NEW.closed_at
     WHERE invitation = NEW.id AND state IN ('live', 'pending');
    RETURN NULL;
END $$;

CREATE TRIGGER owner_access_invitations_close_revokes_tokens
    AFTER UPDATE OF state ON owner_access_invitations
    FOR EACH ROW WHEN (OLD.state <> 'closed' AND NEW.state = 'closed')
    EXECUTE FUNCTION owner_access_invitation_close_revokes_tokens();

-- A redeem whose token is spent and whose owner is not yet known to be marked
-- registered in the directory and settled. Normally empty.
CREATE TABLE owner_access_registrations_owed (
    -- ENFORCES: one owed registration per spent token.
    token   BYTEA PRIMARY KEY REFERENCES owner_access_tokens (hash),
    owner   TEXT NOT NULL,
    batch   TEXT NOT NULL,
    sent_to TEXT NOT NULL,
    at      BIGINT NOT NULL
);

-- Each owner's invitations (first, last, how many, when the latest link expires);
-- an owner never invited has no row.
CREATE TABLE owner_access_invitation_states (
    owner      TEXT PRIMARY KEY,
    first_at   BIGINT NOT NULL,
    last_at    BIGINT NOT NULL,
    count      BIGINT NOT NULL CHECK (count BETWEEN 1 AND 4294967295),
    expires_at BIGINT NOT NULL
);

CREATE TABLE owner_access_activity (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community TEXT NOT NULL,
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    -- The entry as JSON (the crate's serde form).
    details   TEXT NOT NULL
);

CREATE INDEX owner_access_activity_by_community ON owner_access_activity (community, at, seq);
