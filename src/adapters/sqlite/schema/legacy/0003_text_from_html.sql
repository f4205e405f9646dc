-- owner-access SQLite schema, version 3: an invite may have no text body of its own
-- (its text part is made from the HTML body). text_body stays NOT NULL, so that
-- column's old rows need no rewrite; such an invite has text_body '' and this flag 1.
ALTER TABLE invites ADD COLUMN text_from_html INTEGER NOT NULL DEFAULT 0
    CHECK (text_from_html = 0 OR text_from_html = 1);
