-- owner-access SQLite schema, directory part, version 1: its indexes. Run after the
-- tables of a new file, and after the renamed tables of a file of the whole-file
-- schema (whose indexes had names without the prefix).

CREATE INDEX owner_access_owners_by_community ON owner_access_owners (community);
CREATE INDEX owner_access_owners_by_email_key ON owner_access_owners (email_key)
    WHERE email_key IS NOT NULL;
