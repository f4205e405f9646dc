-- owner-access SQLite schema, version 11: registrations owed.
--
-- A redeem crosses two ports without a shared transaction: the store spends the token
-- and records the registration owed here (one transaction), the directory (possibly a
-- host's own table) marks the owner registered, and the store clears the row and
-- appends the Registered entry (one transaction). A crash between the steps leaves the
-- row; the next redeem, verify, review or send completes it. Normally empty.
CREATE TABLE registrations_owed (
    -- ENFORCES: one owed registration per spent token.
    token   BLOB PRIMARY KEY NOT NULL REFERENCES tokens (hash),
    owner   TEXT NOT NULL,
    batch   TEXT NOT NULL,
    -- The address the link was sent to: what the directory's mark compares.
    sent_to TEXT NOT NULL,
    at      INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
