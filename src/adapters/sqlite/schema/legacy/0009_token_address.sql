-- owner-access SQLite schema, version 9: a token keeps the address it was sent to.
--
-- A link works only while the owner's primary email is the address its message went
-- to (compared by delivered_key when it is checked), so the owners' side (which may be
-- a host's own table) never has to revoke anything in the store. Tokens stored before
-- this version have NULL here: their delivery's `to_addr` is the same address, and the
-- read falls back to it.
ALTER TABLE tokens ADD COLUMN sent_to TEXT;
