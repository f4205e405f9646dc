//! The links of [`PostgresStore`]: issuing tokens (a chunk of pending ones in two
//! statements), the redeem's compare-and-set, the registrations owed, revocation,
//! and the invitation states.

use std::collections::HashSet;

use deadpool_postgres::GenericClient;

use crate::domain::{
    ActivityEntry, InvitationState, OwnerId, Timestamp, TokenHash, TokenRecord, TokenRejection,
    TokenState,
};
use crate::repository::{OwedRegistration, RedeemOutcome, RepoResult, RepositoryError};

use super::PostgresStore;
use super::claims::accept_invitations;
use super::connection::{Fail, Res, exec, row, rows};
use super::rows::{TOKEN, read_hash, read_id, read_invitation_state, read_token, read_ts, ts};
use super::store::append_activity;

fn taken(token: &TokenRecord) -> Fail {
    Fail::Repo(RepositoryError::AlreadyExists {
        what: "token",
        id: token.hash.to_hex(),
    })
}

/// Stores pending tokens, the send engine's chunk: each joins its owner's open
/// invitation of its batch, opened pending where there is none, and closes nothing.
/// Two statements whatever the chunk's size; a hash already stored (or twice in the
/// chunk) fails the whole chunk as `AlreadyExists` of the first such token.
async fn issue_pending<C: GenericClient + Sync>(c: &C, tokens: &[TokenRecord]) -> Res<()> {
    let owners: Vec<&str> = tokens.iter().map(|t| t.owner.as_str()).collect();
    let batches: Vec<&str> = tokens.iter().map(|t| t.batch.as_str()).collect();
    exec(
        c,
        "INSERT INTO owner_access_invitations (owner, batch, state)
         SELECT DISTINCT o, b, 'pending' FROM unnest($1::text[], $2::text[]) AS t(o, b)
         ON CONFLICT (owner, batch) WHERE state <> 'closed' DO NOTHING",
        &[&owners, &batches],
    )
    .await?;
    let hashes: Vec<&[u8]> = tokens.iter().map(|t| &t.hash.0[..]).collect();
    let mut issued = Vec::with_capacity(tokens.len());
    let mut expires = Vec::with_capacity(tokens.len());
    for t in tokens {
        issued.push(ts(t.issued_at)?);
        expires.push(ts(t.expires_at)?);
    }
    let sent_to: Vec<&str> = tokens.iter().map(|t| t.sent_to.as_str()).collect();
    let stored = rows(
        c,
        "INSERT INTO owner_access_tokens (hash, invitation, issued_at, expires_at, state, sent_to)
         SELECT t.h, i.id, t.issued, t.expires, 'pending', t.sent_to
           FROM unnest($1::bytea[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[])
                AS t(h, o, b, issued, expires, sent_to)
           JOIN owner_access_invitations i
             ON i.owner = t.o AND i.batch = t.b AND i.state <> 'closed'
         ON CONFLICT (hash) DO NOTHING
         RETURNING hash",
        &[&hashes, &owners, &batches, &issued, &expires, &sent_to],
    )
    .await?;
    if stored.len() == tokens.len() {
        return Ok(());
    }
    let mut stored: HashSet<Vec<u8>> = stored
        .iter()
        .map(|r| r.try_get::<_, Vec<u8>>(0))
        .collect::<Result<_, _>>()?;
    for token in tokens {
        if !stored.remove(&token.hash.0[..]) {
            return Err(taken(token));
        }
    }
    Ok(())
}

/// The owner's open invitation of a batch, opened in `state` when there is none.
async fn open_invitation<C: GenericClient + Sync>(
    c: &C,
    owner: &str,
    batch: &str,
    state: &str,
) -> Res<i64> {
    if let Some(r) = row(
        c,
        "SELECT id FROM owner_access_invitations
          WHERE owner = $1 AND batch = $2 AND state <> 'closed'",
        &[&owner, &batch],
    )
    .await?
    {
        return Ok(r.try_get(0)?);
    }
    let r = row(
        c,
        "INSERT INTO owner_access_invitations (owner, batch, state) VALUES ($1, $2, $3)
         RETURNING id",
        &[&owner, &batch, &state],
    )
    .await?;
    Ok(r.map(|r| r.try_get(0)).transpose()?.unwrap_or_default())
}

/// Stores one token of any state (see `issue_token`'s contract).
async fn issue_one<C: GenericClient + Sync>(c: &C, token: &TokenRecord) -> Res<()> {
    let owner = token.owner.as_str();
    let batch = token.batch.as_str();
    let (state, state_at) = match token.state {
        TokenState::Pending => ("pending", None),
        TokenState::Live => ("live", None),
        TokenState::Revoked { at } => ("revoked", Some(ts(at)?)),
        TokenState::Redeemed { at } => ("redeemed", Some(ts(at)?)),
    };
    let invitation = match token.state {
        TokenState::Pending => open_invitation(c, owner, batch, "pending").await?,
        // Accepted already: it supersedes the owner's live invitation of another
        // batch and joins, or makes live, this batch's.
        TokenState::Live => {
            accept_invitations(c, &token.batch, &[owner], ts(token.issued_at)?).await?;
            open_invitation(c, owner, batch, "live").await?
        }
        // A token stored already spent gets an invitation of its own, closed.
        TokenState::Revoked { at } | TokenState::Redeemed { at } => {
            let r = row(
                c,
                "INSERT INTO owner_access_invitations (owner, batch, state, closed_at)
                 VALUES ($1, $2, 'closed', $3) RETURNING id",
                &[&owner, &batch, &ts(at)?],
            )
            .await?;
            r.map(|r| r.try_get(0)).transpose()?.unwrap_or_default()
        }
    };
    let inserted = exec(
        c,
        "INSERT INTO owner_access_tokens
             (hash, invitation, issued_at, expires_at, state, state_at, sent_to)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (hash) DO NOTHING",
        &[
            &&token.hash.0[..],
            &invitation,
            &ts(token.issued_at)?,
            &ts(token.expires_at)?,
            &state,
            &state_at,
            &token.sent_to,
        ],
    )
    .await?;
    if inserted == 0 {
        return Err(taken(token));
    }
    Ok(())
}

impl PostgresStore {
    pub(super) async fn issue(&self, tokens: &[TokenRecord]) -> RepoResult<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        self.db
            .run(async {
                let mut c = self.db.client().await?;
                let tx = c.transaction().await?;
                if tokens.iter().all(|t| t.state == TokenState::Pending) {
                    issue_pending(&tx, tokens).await?;
                } else {
                    for token in tokens {
                        issue_one(&tx, token).await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            })
            .await
    }

    pub(super) async fn read_token(&self, hash: &TokenHash) -> RepoResult<Option<TokenRecord>> {
        self.db
            .run(async {
                let c = self.db.client().await?;
                row(&c, TOKEN, &[&&hash.0[..]])
                    .await?
                    .map(|r| read_token(*hash, &r))
                    .transpose()
            })
            .await
    }

    /// The token's invitation is locked first, so two redeems of one owner's links
    /// (which share their live invitation) queue instead of deadlocking; then the
    /// token's step is one conditional statement.
    pub(super) async fn redeem(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> RepoResult<RedeemOutcome> {
        self.db
            .run(async {
                let at = ts(now)?;
                let mut c = self.db.client().await?;
                let tx = c.transaction().await?;
                let locked = row(
                    &tx,
                    "SELECT i.id FROM owner_access_tokens t
                       JOIN owner_access_invitations i ON i.id = t.invitation
                      WHERE t.hash = $1 FOR UPDATE OF i",
                    &[&&hash.0[..]],
                )
                .await?;
                if locked.is_none() {
                    return Ok(RedeemOutcome::Rejected(TokenRejection::Unknown));
                }
                // The compare-and-set: of two redeems of one token, one changes the row.
                let won = exec(
                    &tx,
                    "UPDATE owner_access_tokens SET state = 'redeemed', state_at = $2
                      WHERE hash = $1 AND state = 'live' AND expires_at > $2",
                    &[&&hash.0[..], &at],
                )
                .await?
                    == 1;
                let Some(found) = row(&tx, TOKEN, &[&&hash.0[..]]).await? else {
                    return Ok(RedeemOutcome::Rejected(TokenRejection::Unknown));
                };
                let token = read_token(*hash, &found)?;
                if !won {
                    return Ok(RedeemOutcome::Rejected(
                        token
                            .check(now)
                            .err()
                            .unwrap_or(TokenRejection::AlreadyUsed),
                    ));
                }
                // Closing the owner's open invitations revokes their other tokens (a
                // trigger).
                exec(
                    &tx,
                    "UPDATE owner_access_invitations SET state = 'closed', closed_at = $2
                      WHERE owner = $1 AND state <> 'closed'",
                    &[&token.owner.as_str(), &at],
                )
                .await?;
                exec(
                    &tx,
                    "INSERT INTO owner_access_registrations_owed (token, owner, batch, sent_to, at)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &&hash.0[..],
                        &token.owner.as_str(),
                        &token.batch.as_str(),
                        &token.sent_to,
                        &at,
                    ],
                )
                .await?;
                tx.commit().await?;
                Ok(RedeemOutcome::Redeemed { token })
            })
            .await
    }

    pub(super) async fn owed(&self) -> RepoResult<Vec<OwedRegistration>> {
        self.db
            .run(async {
                let c = self.db.client().await?;
                rows(
                    &c,
                    "SELECT token, owner, batch, sent_to, at FROM owner_access_registrations_owed
                     ORDER BY at",
                    &[],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(OwedRegistration {
                        token: read_hash(r.try_get(0)?, "registrations_owed.token")?,
                        owner: read_id!(
                            OwnerId,
                            r.try_get::<_, String>(1)?,
                            "registrations_owed.owner"
                        )?,
                        batch: read_id!(
                            crate::domain::BatchId,
                            r.try_get::<_, String>(2)?,
                            "registrations_owed.batch"
                        )?,
                        sent_to: r.try_get(3)?,
                        at: read_ts(r.try_get(4)?)?,
                    })
                })
                .collect()
            })
            .await
    }

    pub(super) async fn settle(
        &self,
        token: &TokenHash,
        activity: Option<&ActivityEntry>,
    ) -> RepoResult<bool> {
        self.db
            .run(async {
                let mut c = self.db.client().await?;
                let tx = c.transaction().await?;
                let settled = exec(
                    &tx,
                    "DELETE FROM owner_access_registrations_owed WHERE token = $1",
                    &[&&token.0[..]],
                )
                .await?
                    == 1;
                if settled && let Some(entry) = activity {
                    append_activity(&tx, entry).await?;
                }
                tx.commit().await?;
                Ok(settled)
            })
            .await
    }

    pub(super) async fn answer(&self, token: &TokenHash, now: Timestamp) -> RepoResult<bool> {
        self.db
            .run(async {
                let c = self.db.client().await?;
                Ok(exec(
                    &c,
                    "UPDATE owner_access_tokens SET answered_at = $2
                      WHERE hash = $1 AND state = 'redeemed' AND answered_at IS NULL",
                    &[&&token.0[..], &ts(now)?],
                )
                .await?
                    == 1)
            })
            .await
    }

    /// One statement: closing the owners' open invitations revokes their tokens (a
    /// trigger); the count is of the tokens live or pending before it.
    pub(super) async fn revoke_links(
        &self,
        owners: &[OwnerId],
        now: Timestamp,
    ) -> RepoResult<usize> {
        let ids: Vec<&str> = owners.iter().map(OwnerId::as_str).collect();
        self.db
            .run(async {
                let c = self.db.client().await?;
                let r = row(
                    &c,
                    "WITH closed AS (
                         UPDATE owner_access_invitations SET state = 'closed', closed_at = $2
                          WHERE state <> 'closed' AND owner = ANY($1)
                         RETURNING id)
                     SELECT count(*) FROM owner_access_tokens
                      WHERE invitation IN (SELECT id FROM closed) AND state IN ('live', 'pending')",
                    &[&ids, &ts(now)?],
                )
                .await?;
                let n: i64 = r.map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
                Ok(usize::try_from(n).unwrap_or(0))
            })
            .await
    }

    pub(super) async fn states(
        &self,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<(OwnerId, InvitationState)>> {
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = owners.iter().map(OwnerId::as_str).collect();
        self.db
            .run(async {
                let c = self.db.client().await?;
                rows(
                    &c,
                    "SELECT owner, first_at, last_at, count, expires_at
                       FROM owner_access_invitation_states WHERE owner = ANY($1)",
                    &[&ids],
                )
                .await?
                .iter()
                .map(read_invitation_state)
                .collect()
            })
            .await
    }
}
