//! The workflow's port on SQLite, [`InvitationStore`]: drafts, batches and their
//! deliveries, tokens, invitation states, the registrations owed and the activity
//! feed. The claim statements and a delivery's outcome are in `claims`, tokens and
//! the invitations they belong to in `tokens`, writing an invite in `invites`.

mod claims;
mod invites;
mod rate;
mod tokens;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;

use super::SqliteHandle;
use super::fail::{Fail, Res, bad_row, not_found};
use super::parts::HoldsStore;
use super::rows::{
    BATCH_COLUMNS, DELIVERY_COLUMNS, Db, WRITE_CHUNK, batch_row, json_list, json_pairs, limit,
    read_batch, read_delivery, read_draft, read_id, read_invitation_state, read_token, read_ts, ts,
};
use crate::domain::{
    ActivityEntry, Batch, BatchId, CommunityId, Delivery, DeliveryCounts, DeliveryOutcome, Draft,
    DraftId, InvitationState, NewBatch, OwnerId, Page, SenderId, Timestamp, TokenHash, TokenRecord,
    TokenRejection,
};
use crate::repository::{
    ClaimHolder, HeldClaims, InvitationStore, OwedRegistration, RedeemOutcome, RepoResult,
    RepositoryError, SendSlots,
};
pub(super) use claims::{CLAIM, HELD_CLAIMS, RELEASE, RENEW};
use claims::{count_invitations, record_outcome, refused};
use invites::insert_invite;
pub(super) use tokens::close_open_invitations;
use tokens::{accept_invitations, issue_token_in};

#[async_trait]
impl<P: HoldsStore> InvitationStore for SqliteHandle<P> {
    async fn save_draft(&self, draft: &Draft) -> RepoResult<()> {
        let draft = draft.clone();
        self.write(move |db| {
            let old: Option<i64> = db.row(
                "SELECT invite FROM owner_access_drafts WHERE id = ?1",
                [draft.id.as_str()],
                |r| Ok(r.get(0)?),
            )?;
            let invite = insert_invite(db, &draft.invite)?;
            db.exec(
                "INSERT INTO owner_access_drafts (id, invite, community, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET invite = excluded.invite,
                     community = excluded.community, created_at = excluded.created_at,
                     updated_at = excluded.updated_at",
                rusqlite::params![
                    draft.id.as_str(),
                    invite,
                    draft.invite.community.as_str(),
                    ts(draft.created_at)?,
                    ts(draft.updated_at)?,
                ],
            )?;
            if let Some(old) = old {
                db.exec("DELETE FROM owner_access_invites WHERE id = ?1", [old])?;
            }
            Ok(())
        })
        .await
    }

    async fn draft(&self, id: &DraftId) -> RepoResult<Option<Draft>> {
        let id = id.clone();
        self.read(move |db| {
            let row = db.row(
                "SELECT id, invite, created_at, updated_at FROM owner_access_drafts WHERE id = ?1",
                [id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            row.map(|row| read_draft(db, row)).transpose()
        })
        .await
    }

    async fn drafts(&self, community: &CommunityId) -> RepoResult<Vec<Draft>> {
        let community = community.clone();
        self.read(move |db| {
            let rows = db.rows(
                "SELECT id, invite, created_at, updated_at FROM owner_access_drafts WHERE community = ?1
                 ORDER BY updated_at DESC, id ASC",
                [community.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            rows.into_iter().map(|row| read_draft(db, row)).collect()
        })
        .await
    }

    async fn delete_draft(&self, id: &DraftId) -> RepoResult<bool> {
        let id = id.clone();
        self.write(move |db| {
            let Some(invite) = db.row(
                "SELECT invite FROM owner_access_drafts WHERE id = ?1",
                [id.as_str()],
                |r| Ok(r.get::<_, i64>(0)?),
            )?
            else {
                return Ok(false);
            };
            db.exec(
                "DELETE FROM owner_access_drafts WHERE id = ?1",
                [id.as_str()],
            )?;
            db.exec("DELETE FROM owner_access_invites WHERE id = ?1", [invite])?;
            Ok(true)
        })
        .await
    }

    async fn create_batch(&self, new: &NewBatch) -> RepoResult<()> {
        let mut seen = HashSet::new();
        for (owner, _) in &new.deliveries {
            if !seen.insert(owner) {
                return Err(RepositoryError::Precondition {
                    message: format!("owner `{owner}` appears twice in batch `{}`", new.batch.id),
                });
            }
        }
        drop(seen);
        // The deliveries go in as a statement per chunk over a JSON array of [owner,
        // address] pairs: a statement per delivery spent a third of the store's time
        // on statement overhead, and one array for a million deliveries had SQLite
        // copy and parse 40 MB of JSON at once. Only the pairs (as compact JSON) and
        // the batch's own record are copied into the closure, not the whole batch.
        let chunks: Vec<String> = new
            .deliveries
            .chunks(WRITE_CHUNK)
            .map(|chunk| {
                json_pairs(
                    chunk
                        .iter()
                        .map(|(owner, to)| (owner.as_str(), to.as_str())),
                )
            })
            .collect();
        let batch = new.batch.clone();
        let activity = new.activity.clone();
        self.write(move |db| {
            let b = &batch;
            if db.exists("SELECT 1 FROM owner_access_batches WHERE id = ?1", [b.id.as_str()])? {
                return Err(Fail::Repo(RepositoryError::AlreadyExists {
                    what: "batch",
                    id: b.id.to_string(),
                }));
            }
            let invite = insert_invite(db, &b.invite)?;
            db.exec(
                "INSERT INTO owner_access_batches (id, community, invite, sender_name, sender_address,
                     portal_url, token_ttl_seconds, created_at, resend)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                rusqlite::params![
                    b.id.as_str(),
                    b.community.as_str(),
                    invite,
                    b.sender.name,
                    b.sender.address.as_str(),
                    b.portal_url,
                    i64::try_from(b.token_ttl_seconds).unwrap_or(i64::MAX),
                    ts(b.created_at)?,
                    b.resend,
                ],
            )?;
            for deliveries in chunks {
                db.exec(
                    "INSERT INTO owner_access_deliveries (batch, owner, to_addr, state)
                     SELECT ?1, value ->> 0, value ->> 1, 'pending' FROM json_each(?2)",
                    rusqlite::params![b.id.as_str(), deliveries],
                )?;
            }
            append_activity(db, &activity)?;
            Ok(())
        })
        .await
    }

    async fn batch(&self, id: &BatchId) -> RepoResult<Option<Batch>> {
        let id = id.clone();
        self.read(move |db| {
            let row = db.row(
                &format!("SELECT {BATCH_COLUMNS} FROM owner_access_batches WHERE id = ?1"),
                [id.as_str()],
                batch_row,
            )?;
            row.map(|row| read_batch(db, row)).transpose()
        })
        .await
    }

    async fn batches(&self, community: &CommunityId) -> RepoResult<Vec<Batch>> {
        let community = community.clone();
        self.read(move |db| {
            let rows = db.rows(
                &format!(
                    "SELECT {BATCH_COLUMNS} FROM owner_access_batches WHERE community = ?1
                     ORDER BY created_at DESC, seq DESC"
                ),
                [community.as_str()],
                batch_row,
            )?;
            rows.into_iter().map(|row| read_batch(db, row)).collect()
        })
        .await
    }

    async fn take_send_slots(
        &self,
        batch: &BatchId,
        interval: Duration,
        count: u32,
        now: Timestamp,
    ) -> RepoResult<SendSlots> {
        let batch = batch.clone();
        self.write(move |db| rate::take_send_slots(db, &batch, interval, count, now))
            .await
    }

    async fn claim_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        limit_to: usize,
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<Delivery>> {
        let (batch, sender) = (batch.clone(), sender.clone());
        self.write(move |db| {
            let claimed = db.rows_at_most(
                CLAIM,
                rusqlite::params![
                    batch.as_str(),
                    limit(limit_to),
                    ts(now)?,
                    sender.as_str(),
                    ts(now + lease)?
                ],
                limit_to,
                |r| read_delivery(&batch, r),
            )?;
            if claimed.is_empty() {
                require_batch(db, &batch)?;
            }
            Ok(claimed)
        })
        .await
    }

    async fn renew_claims(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        let (batch, sender, owners) = (batch.clone(), sender.clone(), owners.to_vec());
        self.write(move |db| {
            let renewed = db.rows_at_most(
                RENEW,
                rusqlite::params![
                    batch.as_str(),
                    json_list(owners.iter().map(OwnerId::as_str)),
                    sender.as_str(),
                    ts(now + lease)?
                ],
                owners.len(),
                |r| Ok(r.get::<_, String>(0)?),
            )?;
            if renewed.is_empty() {
                require_batch(db, &batch)?;
            }
            Ok(refused(owners, &renewed))
        })
        .await
    }

    /// All the outcomes in one transaction: one commit (and one disk sync) for the
    /// group.
    async fn record_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        let (batch, sender, outcomes) = (batch.clone(), sender.clone(), outcomes.to_vec());
        self.write(move |db| {
            require_batch(db, &batch)?;
            let mut refused = Vec::new();
            let mut sent = Vec::new();
            for (owner, outcome) in &outcomes {
                if !record_outcome(db, &batch, &sender, owner, outcome, now)? {
                    refused.push(owner.clone());
                } else if let DeliveryOutcome::Sent { expires_at, .. } = outcome {
                    sent.push((owner, *expires_at));
                }
            }
            let at = ts(now)?;
            // The recorded messages' links supersede their owners' older ones, and
            // count as one more invitation each.
            let owners: Vec<&OwnerId> = sent.iter().map(|(o, _)| *o).collect();
            accept_invitations(db, &batch, &owners, at)?;
            count_invitations(db, &sent, at)?;
            Ok(refused)
        })
        .await
    }

    async fn release_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<OwnerId>> {
        let (batch, sender, owners) = (batch.clone(), sender.clone(), owners.to_vec());
        self.write(move |db| {
            let released = db.rows_at_most(
                RELEASE,
                rusqlite::params![
                    batch.as_str(),
                    json_list(owners.iter().map(OwnerId::as_str)),
                    sender.as_str()
                ],
                owners.len(),
                |r| Ok(r.get::<_, String>(0)?),
            )?;
            if released.is_empty() {
                require_batch(db, &batch)?;
            }
            Ok(refused(owners, &released))
        })
        .await
    }

    async fn held_claims(&self, batch: &BatchId, now: Timestamp) -> RepoResult<HeldClaims> {
        let batch = batch.clone();
        self.read(move |db| {
            require_batch(db, &batch)?;
            let holders = db.rows(HELD_CLAIMS, [batch.as_str()], |r| {
                Ok(ClaimHolder {
                    sender: read_id!(SenderId, r.get::<_, String>(0)?, "deliveries.holder")?,
                    deliveries: usize::try_from(r.get::<_, i64>(1)?)
                        .map_err(|e| bad_row("claim count", e))?,
                    first_until: read_ts(r.get(2)?)?,
                    last_until: read_ts(r.get(3)?)?,
                })
            })?;
            Ok(HeldClaims { now, holders })
        })
        .await
    }

    async fn revoke_claims(&self, batch: &BatchId) -> RepoResult<usize> {
        let batch = batch.clone();
        self.write(move |db| {
            require_batch(db, &batch)?;
            db.exec(
                "UPDATE owner_access_deliveries SET state = 'pending', state_at = NULL, holder = NULL,
                     lease_until = NULL
                 WHERE batch = ?1 AND state = 'claimed'",
                [batch.as_str()],
            )
        })
        .await
    }

    async fn deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        let batch = batch.clone();
        self.read(move |db| {
            require_batch(db, &batch)?;
            db.rows(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM owner_access_deliveries WHERE batch = ?1 ORDER BY owner"
                ),
                [batch.as_str()],
                |r| read_delivery(&batch, r),
            )
        })
        .await
    }

    async fn failed_deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.deliveries_in_state(batch, "failed").await
    }

    async fn skipped_deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.deliveries_in_state(batch, "skipped").await
    }

    async fn delivery_counts(&self, batch: &BatchId) -> RepoResult<DeliveryCounts> {
        let batch = batch.clone();
        self.read(move |db| {
            require_batch(db, &batch)?;
            let mut counts = DeliveryCounts::default();
            for (state, n) in db.rows(
                "SELECT state, count(*) FROM owner_access_deliveries WHERE batch = ?1 GROUP BY state",
                [batch.as_str()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )? {
                let n = usize::try_from(n).map_err(|e| bad_row("delivery count", e))?;
                match state.as_str() {
                    "pending" => counts.pending = n,
                    "claimed" => counts.claimed = n,
                    "sent" => counts.sent = n,
                    "failed" => counts.failed = n,
                    "skipped" => counts.skipped = n,
                    other => return Err(bad_row("deliveries.state", other)),
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn requeue_failed(&self, batch: &BatchId) -> RepoResult<usize> {
        let batch = batch.clone();
        self.write(move |db| {
            require_batch(db, &batch)?;
            db.exec(
                "UPDATE owner_access_deliveries SET state = 'pending', state_at = NULL, error = NULL,
                     unreachable_runs = 0
                 WHERE batch = ?1 AND state = 'failed'",
                [batch.as_str()],
            )
        })
        .await
    }

    async fn issue_token(&self, token: &TokenRecord) -> RepoResult<()> {
        let token = token.clone();
        self.write(move |db| issue_token_in(db, &token)).await
    }

    /// All the tokens in one transaction: one commit for the chunk, all or nothing.
    async fn issue_tokens(&self, tokens: &[TokenRecord]) -> RepoResult<()> {
        let tokens = tokens.to_vec();
        self.write(move |db| {
            for token in &tokens {
                issue_token_in(db, token)?;
            }
            Ok(())
        })
        .await
    }

    async fn invitation_states(
        &self,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<(OwnerId, InvitationState)>> {
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let expected = owners.len();
        let ids = json_list(owners.iter().map(OwnerId::as_str));
        self.read(move |db| {
            db.rows_at_most(
                "SELECT owner, first_at, last_at, count, expires_at FROM owner_access_invitation_states
                 WHERE owner IN (SELECT value FROM json_each(?1))",
                [ids],
                expected,
                read_invitation_state,
            )
        })
        .await
    }

    async fn token(&self, hash: &TokenHash) -> RepoResult<Option<TokenRecord>> {
        let hash = *hash;
        self.read(move |db| read_token(db, &hash)).await
    }

    async fn redeem_token(&self, hash: &TokenHash, now: Timestamp) -> RepoResult<RedeemOutcome> {
        let hash = *hash;
        self.write(move |db| {
            let at = ts(now)?;
            // The compare-and-set: of two redeems of one token, one changes the row.
            let won = db.exec(
                "UPDATE owner_access_tokens SET state = 'redeemed', state_at = ?2
                 WHERE hash = ?1 AND state = 'live' AND expires_at > ?2",
                rusqlite::params![&hash.0[..], at],
            )? == 1;
            let Some(token) = read_token(db, &hash)? else {
                return Ok(RedeemOutcome::Rejected(TokenRejection::Unknown));
            };
            if !won {
                return Ok(RedeemOutcome::Rejected(
                    token
                        .check(now)
                        .err()
                        .unwrap_or(TokenRejection::AlreadyUsed),
                ));
            }
            // Closing the owner's open invitations (this token's, live, and any
            // pending one) revokes their other tokens (the schema's trigger).
            close_open_invitations(db, &token.owner, at)?;
            db.exec(
                "INSERT INTO owner_access_registrations_owed (token, owner, batch, sent_to, at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    &hash.0[..],
                    token.owner.as_str(),
                    token.batch.as_str(),
                    token.sent_to,
                    at
                ],
            )?;
            Ok(RedeemOutcome::Redeemed { token })
        })
        .await
    }

    async fn owed_registrations(&self) -> RepoResult<Vec<OwedRegistration>> {
        self.read(|db| {
            db.rows(
                "SELECT token, owner, batch, sent_to, at FROM owner_access_registrations_owed ORDER BY at",
                [],
                |r| {
                    let token: Vec<u8> = r.get(0)?;
                    let token: [u8; 32] = token
                        .try_into()
                        .map_err(|_| bad_row("registrations_owed.token", "not 32 bytes"))?;
                    Ok(OwedRegistration {
                        token: TokenHash(token),
                        owner: read_id!(
                            OwnerId,
                            r.get::<_, String>(1)?,
                            "registrations_owed.owner"
                        )?,
                        batch: read_id!(
                            BatchId,
                            r.get::<_, String>(2)?,
                            "registrations_owed.batch"
                        )?,
                        sent_to: r.get(3)?,
                        at: read_ts(r.get(4)?)?,
                    })
                },
            )
        })
        .await
    }

    async fn settle_registration(
        &self,
        token: &TokenHash,
        activity: Option<&ActivityEntry>,
    ) -> RepoResult<bool> {
        let token = *token;
        let activity = activity.cloned();
        self.write(move |db| {
            let settled = db.exec(
                "DELETE FROM owner_access_registrations_owed WHERE token = ?1",
                [&token.0[..]],
            )? == 1;
            if settled && let Some(entry) = &activity {
                append_activity(db, entry)?;
            }
            Ok(settled)
        })
        .await
    }

    async fn answer_redeem(&self, token: &TokenHash, now: Timestamp) -> RepoResult<bool> {
        let token = *token;
        self.write(move |db| {
            Ok(db.exec(
                "UPDATE owner_access_tokens SET answered_at = ?2
                 WHERE hash = ?1 AND state = 'redeemed' AND answered_at IS NULL",
                rusqlite::params![&token.0[..], ts(now)?],
            )? == 1)
        })
        .await
    }

    async fn revoke_tokens(&self, owners: &[OwnerId], now: Timestamp) -> RepoResult<usize> {
        let owners = json_list(owners.iter().map(OwnerId::as_str));
        self.write(move |db| {
            // Closing an invitation revokes its pending and live tokens (the schema's
            // trigger).
            let revoked = db.row(
                "SELECT count(*) FROM owner_access_tokens t JOIN owner_access_invitations i ON i.id = t.invitation
                 WHERE i.state <> 'closed' AND (t.state = 'live' OR t.state = 'pending')
                   AND i.owner IN (SELECT value FROM json_each(?1))",
                [&owners],
                |r| Ok(r.get::<_, i64>(0)?),
            )?;
            db.exec(
                "UPDATE owner_access_invitations SET state = 'closed', closed_at = ?2
                 WHERE state <> 'closed' AND owner IN (SELECT value FROM json_each(?1))",
                rusqlite::params![owners, ts(now)?],
            )?;
            Ok(usize::try_from(revoked.unwrap_or(0)).unwrap_or(0))
        })
        .await
    }

    async fn append_activity(&self, entry: &ActivityEntry) -> RepoResult<()> {
        let entry = entry.clone();
        self.write(move |db| append_activity(db, &entry)).await
    }

    async fn activity(
        &self,
        community: &CommunityId,
        page: Page,
    ) -> RepoResult<Vec<ActivityEntry>> {
        let community = community.clone();
        self.read(move |db| {
            db.rows(
                "SELECT at, details FROM owner_access_activity WHERE community = ?1
                 ORDER BY at DESC, seq DESC LIMIT ?2 OFFSET ?3",
                rusqlite::params![community.as_str(), limit(page.limit), limit(page.offset)],
                |r| {
                    let details: String = r.get(1)?;
                    Ok(ActivityEntry {
                        community: community.clone(),
                        at: read_ts(r.get(0)?)?,
                        kind: serde_json::from_str(&details)
                            .map_err(|e| bad_row("activity.details", e))?,
                    })
                },
            )
        })
        .await
    }
}

impl<P: HoldsStore> SqliteHandle<P> {
    /// A batch's deliveries in one settled state (`failed`, `skipped`), by owner: the
    /// state index answers it without reading the rest of the batch.
    async fn deliveries_in_state(
        &self,
        batch: &BatchId,
        state: &'static str,
    ) -> RepoResult<Vec<Delivery>> {
        let batch = batch.clone();
        self.read(move |db| {
            require_batch(db, &batch)?;
            db.rows(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM owner_access_deliveries
                     WHERE batch = ?1 AND state = ?2 ORDER BY owner"
                ),
                [batch.as_str(), state],
                |r| read_delivery(&batch, r),
            )
        })
        .await
    }
}

fn require_batch(db: &Db<'_>, batch: &BatchId) -> Res<()> {
    if db.exists(
        "SELECT 1 FROM owner_access_batches WHERE id = ?1",
        [batch.as_str()],
    )? {
        Ok(())
    } else {
        Err(not_found("batch", batch))
    }
}

fn append_activity(db: &Db<'_>, entry: &ActivityEntry) -> Res<()> {
    let details = serde_json::to_value(&entry.kind).map_err(|e| {
        Fail::Repo(RepositoryError::Backend {
            store: "SQLite repository".into(),
            source: Box::new(e),
        })
    })?;
    let kind = details
        .get("kind")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    db.exec(
        "INSERT INTO owner_access_activity (community, at, kind, details) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![
            entry.community.as_str(),
            ts(entry.at)?,
            kind,
            details.to_string()
        ],
    )?;
    Ok(())
}
