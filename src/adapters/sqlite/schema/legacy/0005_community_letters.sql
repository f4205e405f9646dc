-- owner-access SQLite schema, version 5: what a community sets for its letters. All
-- NULL in rows written before: UTC, no logo, the default accent colour. Values are
-- checked by the crate when made and again when read.
ALTER TABLE communities ADD COLUMN time_zone TEXT;
ALTER TABLE communities ADD COLUMN logo_url TEXT;
ALTER TABLE communities ADD COLUMN accent_color TEXT;
