//! Tokens and the invitations they belong to: storing a token (pending at claim, live
//! once accepted, or already spent), opening an owner's invitation of a batch,
//! accepting the sent messages' invitations and closing an owner's open ones (the
//! schema's triggers revoke their tokens).

use super::super::fail::{Fail, Res};
use super::super::rows::{Db, json_list, ts};
use crate::domain::{BatchId, OwnerId, TokenRecord, TokenState};
use crate::repository::RepositoryError;

/// Closes the owner's open (pending and live) invitations: the schema's trigger
/// revokes their tokens at `at` in the same statement.
pub(in crate::adapters::sqlite) fn close_open_invitations(
    db: &Db<'_>,
    owner: &OwnerId,
    at: i64,
) -> Res<()> {
    db.exec(
        "UPDATE owner_access_invitations SET state = 'closed', closed_at = ?2
         WHERE owner = ?1 AND state <> 'closed'",
        rusqlite::params![owner.as_str(), at],
    )?;
    Ok(())
}

/// What recording sent messages does to their owners' links: each owner's live
/// invitation of another batch is closed (its tokens revoked at `at`, a trigger:
/// superseded), the batch's pending invitation of the owner becomes live, and its
/// pending tokens live. In this order, for the one-live-invitation index; three
/// statements for a whole group of outcomes.
pub(super) fn accept_invitations(
    db: &Db<'_>,
    batch: &BatchId,
    owners: &[&OwnerId],
    at: i64,
) -> Res<()> {
    if owners.is_empty() {
        return Ok(());
    }
    let owners = json_list(owners.iter().map(|o| o.as_str()));
    db.exec(
        "UPDATE owner_access_invitations SET state = 'closed', closed_at = ?3
         WHERE state = 'live' AND batch <> ?2
           AND owner IN (SELECT value FROM json_each(?1))",
        rusqlite::params![owners, batch.as_str(), at],
    )?;
    db.exec(
        "UPDATE owner_access_invitations SET state = 'live'
         WHERE batch = ?2 AND state = 'pending'
           AND owner IN (SELECT value FROM json_each(?1))",
        [owners.as_str(), batch.as_str()],
    )?;
    db.exec(
        "UPDATE owner_access_tokens SET state = 'live'
         WHERE state = 'pending' AND invitation IN (SELECT id FROM owner_access_invitations
                 WHERE batch = ?2 AND state = 'live'
                   AND owner IN (SELECT value FROM json_each(?1)))",
        [owners.as_str(), batch.as_str()],
    )?;
    Ok(())
}

/// The owner's open invitation of a batch, opened in `state` when there is none.
pub(super) fn open_invitation(db: &Db<'_>, owner: &str, batch: &str, state: &str) -> Res<i64> {
    let open = db.row(
        "SELECT id FROM owner_access_invitations WHERE owner = ?1 AND batch = ?2 AND state <> 'closed'",
        [owner, batch],
        |r| Ok(r.get::<_, i64>(0)?),
    )?;
    if let Some(id) = open {
        return Ok(id);
    }
    db.exec(
        "INSERT INTO owner_access_invitations (owner, batch, state) VALUES (?1, ?2, ?3)",
        [owner, batch, state],
    )?;
    Ok(db.last_insert_rowid())
}

pub(super) fn issue_token_in(db: &Db<'_>, token: &TokenRecord) -> Res<()> {
    let owner = token.owner.as_str();
    let batch = token.batch.as_str();
    let (state, state_at) = match token.state {
        TokenState::Pending => ("pending", None),
        TokenState::Live => ("live", None),
        TokenState::Revoked { at } => ("revoked", Some(ts(at)?)),
        TokenState::Redeemed { at } => ("redeemed", Some(ts(at)?)),
    };
    let invitation = match token.state {
        // Stored at claim: it joins the owner's open invitation of this batch (the
        // schema allows one), or opens a pending one, and closes nothing.
        TokenState::Pending => open_invitation(db, owner, batch, "pending")?,
        // Accepted already: it supersedes the owner's live invitation of another
        // batch (closing it revokes its tokens, a trigger) and joins, or makes live,
        // this batch's.
        TokenState::Live => {
            let at = ts(token.issued_at)?;
            accept_invitations(db, &token.batch, &[&token.owner], at)?;
            open_invitation(db, owner, batch, "live")?
        }
        // A token stored already spent gets an invitation of its own, closed.
        TokenState::Revoked { at } | TokenState::Redeemed { at } => {
            db.exec(
                "INSERT INTO owner_access_invitations (owner, batch, state, closed_at)
                 VALUES (?1, ?2, 'closed', ?3)",
                rusqlite::params![owner, batch, ts(at)?],
            )?;
            db.last_insert_rowid()
        }
    };
    // A known hash is refused here rather than looked up first: the error rolls the
    // whole call back, invitation changes included.
    let inserted = db.exec(
        "INSERT INTO owner_access_tokens (hash, invitation, issued_at, expires_at, state, state_at, sent_to)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (hash) DO NOTHING",
        rusqlite::params![
            &token.hash.0[..],
            invitation,
            ts(token.issued_at)?,
            ts(token.expires_at)?,
            state,
            state_at,
            token.sent_to
        ],
    )?;
    if inserted == 0 {
        return Err(Fail::Repo(RepositoryError::AlreadyExists {
            what: "token",
            id: token.hash.to_hex(),
        }));
    }
    Ok(())
}
