-- owner-access SQLite schema, version 7: a link works until a newer message to its
-- owner has been accepted.
--
-- The send engine stores a message's token when it claims the delivery, before the
-- message goes out. Such a token is now `pending`, and so is the invitation it opens:
-- it cannot be redeemed and closes nothing. When the delivery is recorded as sent, in
-- the same transaction, the owner's live invitation of another batch is closed (its
-- tokens revoked), the pending invitation becomes live, and the invitation's pending
-- tokens become live. A run that stops, fails or crashes before that leaves the
-- owner's older link working. (A pending token may join an invitation that is live
-- already: one of a file of schema 6, whose code made tokens live at claim.)
--
-- Both tables are rebuilt to change their CHECKs (ALTER TABLE cannot). Rows keep their
-- ids and states: `live = 1` becomes `live`, `live = 0` becomes `closed`. Tokens that
-- the schema-6 code issued live at claim stay live (their message may have gone out
-- before a crash); links it closed at claim stay revoked (a link never comes back).

CREATE TABLE invitations_v2 (
    id        INTEGER PRIMARY KEY,
    owner     TEXT NOT NULL,
    batch     TEXT NOT NULL,
    -- OR chains rather than IN lists: see owners.access.
    state     TEXT NOT NULL
        CHECK (state = 'pending' OR state = 'live' OR state = 'closed'),
    closed_at INTEGER,
    CHECK ((state = 'closed') = (closed_at IS NOT NULL))
) STRICT;

INSERT INTO invitations_v2 (id, owner, batch, state, closed_at)
SELECT id, owner, batch, CASE live WHEN 1 THEN 'live' ELSE 'closed' END, closed_at
  FROM invitations;

CREATE TABLE tokens_v2 (
    hash       BLOB PRIMARY KEY NOT NULL CHECK (length(hash) = 32),
    invitation INTEGER NOT NULL REFERENCES invitations_v2 (id),
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state      TEXT NOT NULL
        CHECK (state = 'pending' OR state = 'live' OR state = 'revoked'
               OR state = 'redeemed'),
    state_at   INTEGER,
    CHECK ((state = 'pending' OR state = 'live') = (state_at IS NULL))
) STRICT, WITHOUT ROWID;

INSERT INTO tokens_v2 (hash, invitation, issued_at, expires_at, state, state_at)
SELECT hash, invitation, issued_at, expires_at, state, state_at FROM tokens;

-- The child first, so that no foreign key names the table being dropped; the triggers
-- go with their tables. Renaming rewrites tokens_v2's reference to `invitations`.
DROP TABLE tokens;
DROP TABLE invitations;
ALTER TABLE invitations_v2 RENAME TO invitations;
ALTER TABLE tokens_v2 RENAME TO tokens;

-- ENFORCES: at most one live invitation per owner: of all an owner's links, only
-- those of the batch whose message was accepted last work. Pending invitations (one
-- per owner and batch, below) coexist with it until their message is accepted.
CREATE UNIQUE INDEX invitations_one_live_per_owner ON invitations (owner)
    WHERE state = 'live';
-- ENFORCES: one open (pending or live) invitation per owner and batch: every token of
-- a batch's messages to an owner belongs to it.
CREATE UNIQUE INDEX invitations_one_open_per_batch ON invitations (owner, batch)
    WHERE state <> 'closed';
CREATE INDEX invitations_by_owner ON invitations (owner, batch);

CREATE INDEX tokens_by_invitation ON tokens (invitation, state);

-- ENFORCES: a live token belongs to a live invitation, a pending one to an open one.
CREATE TRIGGER tokens_live_needs_live_invitation
BEFORE INSERT ON tokens
WHEN (NEW.state = 'live'
      AND (SELECT state FROM invitations WHERE id = NEW.invitation) IS NOT 'live')
  OR (NEW.state = 'pending'
      AND (SELECT state FROM invitations WHERE id = NEW.invitation) IS 'closed')
BEGIN
    SELECT RAISE(ABORT, 'a live token needs a live invitation, a pending one an open one');
END;

-- ENFORCES: a token's state moves forward only: pending to live (its message was
-- accepted) or revoked; live to revoked or redeemed; never back, never out of
-- revoked or redeemed.
CREATE TRIGGER tokens_state_moves_forward
BEFORE UPDATE OF state ON tokens
WHEN OLD.state <> NEW.state
 AND NOT ((OLD.state = 'pending' AND (NEW.state = 'live' OR NEW.state = 'revoked'))
       OR (OLD.state = 'live' AND (NEW.state = 'revoked' OR NEW.state = 'redeemed')))
BEGIN
    SELECT RAISE(ABORT, 'a token state only moves from pending to live or revoked, and from live to revoked or redeemed');
END;

-- ENFORCES: an invitation moves forward only: pending to live or closed, live to
-- closed; a closed one never reopens.
CREATE TRIGGER invitations_move_forward
BEFORE UPDATE OF state ON invitations
WHEN OLD.state <> NEW.state
 AND NOT ((OLD.state = 'pending' AND (NEW.state = 'live' OR NEW.state = 'closed'))
       OR (OLD.state = 'live' AND NEW.state = 'closed'))
BEGIN
    SELECT RAISE(ABORT, 'an invitation only moves from pending to live or closed, and from live to closed');
END;

-- ENFORCES: closing an invitation revokes its pending and live tokens, in the same
-- statement.
CREATE TRIGGER invitations_close_revokes_tokens
AFTER UPDATE OF state ON invitations
WHEN OLD.state <> 'closed' AND NEW.state = 'closed'
BEGIN
    UPDATE tokens SET state = 'revoked', state_at = NEW.closed_at
     WHERE invitation = NEW.id AND (state = 'live' OR state = 'pending');
END;
