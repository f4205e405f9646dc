-- From the whole-file schema 13 to the schema versioned per part: every table is
-- renamed with the `owner_access_` prefix (SQLite rewrites the foreign keys that name
-- it), and the indexes and triggers, which cannot be renamed, are dropped here and
-- created again under prefixed names by each part's 0001_indexes.sql. Rows are not
-- touched. Then `owner_access_schema` records both parts at version 1.

DROP TRIGGER tokens_live_needs_live_invitation;
DROP TRIGGER tokens_state_moves_forward;
DROP TRIGGER invitations_move_forward;
DROP TRIGGER invitations_close_revokes_tokens;

DROP INDEX owners_by_community;
DROP INDEX owners_by_email_key;
DROP INDEX drafts_by_community;
DROP INDEX batches_by_community;
DROP INDEX deliveries_by_state;
DROP INDEX invitations_one_live_per_owner;
DROP INDEX invitations_one_open_per_batch;
DROP INDEX invitations_by_owner;
DROP INDEX tokens_by_invitation;
DROP INDEX activity_feed;

ALTER TABLE communities RENAME TO owner_access_communities;
ALTER TABLE owners RENAME TO owner_access_owners;
ALTER TABLE invites RENAME TO owner_access_invites;
ALTER TABLE invite_selection RENAME TO owner_access_invite_selection;
ALTER TABLE invite_attachments RENAME TO owner_access_invite_attachments;
ALTER TABLE drafts RENAME TO owner_access_drafts;
ALTER TABLE batches RENAME TO owner_access_batches;
ALTER TABLE deliveries RENAME TO owner_access_deliveries;
ALTER TABLE invitations RENAME TO owner_access_invitations;
ALTER TABLE tokens RENAME TO owner_access_tokens;
ALTER TABLE registrations_owed RENAME TO owner_access_registrations_owed;
ALTER TABLE invitation_states RENAME TO owner_access_invitation_states;
ALTER TABLE activity RENAME TO owner_access_activity;
