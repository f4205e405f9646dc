-- owner-access SQLite schema, version 8: the runs that left a delivery pending
-- because the mail server could not be reached.
--
-- The send engine fails a delivery once this reaches three (a message that makes the
-- server drop the connection every time would otherwise stop every run of its batch);
-- `requeue_failed` sets it back to 0. Existing deliveries start at 0.

ALTER TABLE deliveries
    ADD COLUMN unreachable_runs INTEGER NOT NULL DEFAULT 0 CHECK (unreachable_runs >= 0);
