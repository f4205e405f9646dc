-- owner-access SQLite schema, version 10: a delivery can be skipped.
--
-- Just before sending, the send engine checks each claimed delivery's owner again
-- (still in the batch's community, not registered, the same address, not shared
-- now). One that fails the check is `skipped`, with the reason's code in
-- `skip_reason` (`unknown_owner`, `moved`, `registered`, `email_changed`,
-- `shared_email`): settled like `sent` and `failed`, and not a failure. The table is
-- rebuilt to change its CHECKs (ALTER TABLE cannot); every row keeps its state (the
-- code before this recorded such deliveries as `failed` with an error starting
-- "skipped: "; they stay failed, as they were reported).

CREATE TABLE deliveries_v3 (
    batch       TEXT NOT NULL REFERENCES batches (id),
    owner       TEXT NOT NULL,
    to_addr     TEXT NOT NULL,
    -- OR chains rather than IN lists: see owners.access.
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

INSERT INTO deliveries_v3
    (batch, owner, to_addr, state, state_at, error, attempts, holder, lease_until,
     unreachable_runs)
SELECT batch, owner, to_addr, state, state_at, error, attempts, holder, lease_until,
       unreachable_runs
  FROM deliveries;

DROP TABLE deliveries;
ALTER TABLE deliveries_v3 RENAME TO deliveries;

CREATE INDEX deliveries_by_state ON deliveries (batch, state, lease_until, owner);
