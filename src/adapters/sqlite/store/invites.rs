//! Writing an invite (of a draft or a batch): its record, its selection a statement
//! per chunk, its attachments.

use super::super::fail::Res;
use super::super::rows::{Db, WRITE_CHUNK, json_list, limit};
use crate::domain::{DraftId, OwnerId};
use crate::invite::Invite;

pub(super) fn insert_invite(db: &Db<'_>, invite: &Invite) -> Res<i64> {
    // Destructured so a new field of `Invite` cannot be forgotten here.
    let Invite {
        community,
        selection,
        subject,
        text_body,
        html_body,
        reply_to,
        summary_to,
        attachments,
        draft,
        from,
        portal_url,
    } = invite;
    db.exec(
        "INSERT INTO owner_access_invites (community, subject, text_body, html_body, reply_to, summary_to, draft,
                              sender, portal_url, text_from_html)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        rusqlite::params![
            community.as_str(),
            subject,
            text_body.as_deref().unwrap_or_default(),
            html_body,
            reply_to,
            summary_to,
            draft.as_ref().map(DraftId::as_str),
            from,
            portal_url,
            text_body.is_none(),
        ],
    )?;
    let id = db.last_insert_rowid();
    // A statement per chunk of the selection, as for a batch's deliveries.
    let mut selected = selection.iter().peekable();
    while selected.peek().is_some() {
        let chunk = json_list(selected.by_ref().take(WRITE_CHUNK).map(OwnerId::as_str));
        db.exec(
            "INSERT INTO owner_access_invite_selection (invite, owner) SELECT ?1, value FROM json_each(?2)",
            rusqlite::params![id, chunk],
        )?;
    }
    for (position, a) in attachments.iter().enumerate() {
        db.exec(
            "INSERT INTO owner_access_invite_attachments (invite, position, file_name, content_type, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![id, limit(position), a.file_name, a.content_type, a.bytes],
        )?;
    }
    Ok(id)
}
