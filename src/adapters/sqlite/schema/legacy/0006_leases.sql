-- owner-access SQLite schema, version 6: claims are leases held by a sender.
--
-- A claimed delivery names the run of the send engine that holds it (`holder`) and
-- when its lease runs out (`lease_until`, nanoseconds like every timestamp): a live
-- sender keeps renewing it, another sender may take it only once it has run out, and
-- every write about it is fenced on `holder`. The table is rebuilt to add the CHECKs
-- that tie both columns to the claimed state (ALTER TABLE cannot add table CHECKs).

CREATE TABLE deliveries_v2 (
    batch       TEXT NOT NULL REFERENCES batches (id),
    owner       TEXT NOT NULL,
    to_addr     TEXT NOT NULL,
    -- OR chains rather than IN lists: see owners.access.
    state       TEXT NOT NULL
        CHECK (state = 'pending' OR state = 'claimed' OR state = 'sent' OR state = 'failed'),
    state_at    INTEGER,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    holder      TEXT CHECK (holder IS NULL OR holder <> ''),
    lease_until INTEGER,
    PRIMARY KEY (batch, owner),
    CHECK ((state = 'pending') = (state_at IS NULL)),
    CHECK ((state = 'failed') = (error IS NOT NULL)),
    -- ENFORCES: a claim names its holder and the end of its lease; no other state does.
    CHECK ((state = 'claimed') = (holder IS NOT NULL)),
    CHECK ((state = 'claimed') = (lease_until IS NOT NULL))
) STRICT, WITHOUT ROWID;

-- A claim made by the code before leases (schemas 1 to 5) has no holder: it gets one
-- that no run is named (`pre-lease`) and the lease that code gave every claim, ten
-- minutes from the claim, so a claim made just before the upgrade is not taken from
-- under a sender of the old version (whose writes the new CHECKs refuse: it stops at
-- its next one).
INSERT INTO deliveries_v2
    (batch, owner, to_addr, state, state_at, error, attempts, holder, lease_until)
SELECT batch, owner, to_addr, state, state_at, error, attempts,
       CASE WHEN state = 'claimed' THEN 'pre-lease' END,
       CASE WHEN state = 'claimed' THEN state_at + 600000000000 END
  FROM deliveries;

DROP TABLE deliveries;
ALTER TABLE deliveries_v2 RENAME TO deliveries;

-- What claiming looks at: pending deliveries by owner (their lease_until is NULL, so
-- the index's order is the owner's), claims by the end of their lease.
CREATE INDEX deliveries_by_state ON deliveries (batch, state, lease_until, owner);
