-- owner-access SQLite schema, version 12: a redeem is answered once.
--
-- Two redeems of one link at once could both answer with the registration: the
-- second found the first one's registration owed, completed it and answered as if
-- the first had crashed. The answer is now taken by a compare-and-set on this column
-- (InvitationStore::answer_redeem), so exactly one call answers.
ALTER TABLE tokens ADD COLUMN answered_at INTEGER;

-- Every redeem before this version answered, except one whose registration is still
-- owed (its call crashed between the steps): the next redeem of that link answers.
UPDATE tokens SET answered_at = state_at
WHERE state = 'redeemed' AND hash NOT IN (SELECT token FROM registrations_owed);
