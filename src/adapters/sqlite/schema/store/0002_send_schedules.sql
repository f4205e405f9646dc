-- The store part, version 2: each batch's rate schedule, the next free send slot
-- that every sender of the batch takes its slots from
-- (InvitationStore::take_send_slots). A batch gets its row when slots are first
-- taken; a batch sent without a rate has none.
CREATE TABLE owner_access_send_schedules (
    batch   TEXT PRIMARY KEY NOT NULL REFERENCES owner_access_batches (id),
    next_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
