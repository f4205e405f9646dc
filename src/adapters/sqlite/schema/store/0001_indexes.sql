-- owner-access SQLite schema, store part, version 1: its indexes and triggers. Run
-- after the tables of a new file, and after the renamed tables of a file of the
-- whole-file schema (whose indexes and triggers had names without the prefix).

CREATE INDEX owner_access_drafts_by_community ON owner_access_drafts (community, updated_at);
CREATE INDEX owner_access_batches_by_community
    ON owner_access_batches (community, created_at, seq);

-- What claiming looks at: pending deliveries by owner (their lease_until is NULL, so
-- the index's order is the owner's), claims by the end of their lease.
CREATE INDEX owner_access_deliveries_by_state
    ON owner_access_deliveries (batch, state, lease_until, owner);

-- ENFORCES: at most one live invitation per owner: of all an owner's links, only
-- those of the batch whose message was accepted last work. Pending invitations (one
-- per owner and batch, below) coexist with it until their message is accepted.
CREATE UNIQUE INDEX owner_access_invitations_one_live_per_owner
    ON owner_access_invitations (owner) WHERE state = 'live';
-- ENFORCES: one open (pending or live) invitation per owner and batch: every token of
-- a batch's messages to an owner belongs to it.
CREATE UNIQUE INDEX owner_access_invitations_one_open_per_batch
    ON owner_access_invitations (owner, batch) WHERE state <> 'closed';
CREATE INDEX owner_access_invitations_by_owner ON owner_access_invitations (owner, batch);

CREATE INDEX owner_access_tokens_by_invitation ON owner_access_tokens (invitation, state);

CREATE INDEX owner_access_activity_feed ON owner_access_activity (community, at, seq);

-- ENFORCES: a live token belongs to a live invitation, a pending one to an open one.
CREATE TRIGGER owner_access_tokens_live_needs_live_invitation
BEFORE INSERT ON owner_access_tokens
WHEN (NEW.state = 'live'
      AND (SELECT state FROM owner_access_invitations WHERE id = NEW.invitation) IS NOT 'live')
  OR (NEW.state = 'pending'
      AND (SELECT state FROM owner_access_invitations WHERE id = NEW.invitation) IS 'closed')
BEGIN
    SELECT RAISE(ABORT, 'a live token needs a live invitation, a pending one an open one');
END;

-- ENFORCES: a token's state moves forward only: pending to live (its message was
-- accepted) or revoked; live to revoked or redeemed; never back, never out of
-- revoked or redeemed.
CREATE TRIGGER owner_access_tokens_state_moves_forward
BEFORE UPDATE OF state ON owner_access_tokens
WHEN OLD.state <> NEW.state
 AND NOT ((OLD.state = 'pending' AND (NEW.state = 'live' OR NEW.state = 'revoked'))
       OR (OLD.state = 'live' AND (NEW.state = 'revoked' OR NEW.state = 'redeemed')))
BEGIN
    SELECT RAISE(ABORT, 'a token state only moves from pending to live or revoked, and from live to revoked or redeemed');
END;

-- ENFORCES: an invitation moves forward only: pending to live or closed, live to
-- closed; a closed one never reopens.
CREATE TRIGGER owner_access_invitations_move_forward
BEFORE UPDATE OF state ON owner_access_invitations
WHEN OLD.state <> NEW.state
 AND NOT ((OLD.state = 'pending' AND (NEW.state = 'live' OR NEW.state = 'closed'))
       OR (OLD.state = 'live' AND NEW.state = 'closed'))
BEGIN
    SELECT RAISE(ABORT, 'an invitation only moves from pending to live or closed, and from live to closed');
END;

-- ENFORCES: closing an invitation revokes its pending and live tokens, in the same
-- statement.
CREATE TRIGGER owner_access_invitations_close_revokes_tokens
AFTER UPDATE OF state ON owner_access_invitations
WHEN OLD.state <> 'closed' AND NEW.state = 'closed'
BEGIN
    UPDATE owner_access_tokens SET state = 'revoked', state_at = NEW.closed_at
     WHERE invitation = NEW.id AND (state = 'live' OR state = 'pending');
END;
