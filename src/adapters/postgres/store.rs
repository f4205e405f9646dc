//! [`PostgresStore`]'s [`InvitationStore`]: drafts, batches and their reads, the
//! activity feed here; the claim methods in `claims`, the links in `tokens`.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use crate::domain::{
    ActivityEntry, Batch, BatchId, CommunityId, Delivery, DeliveryCounts, DeliveryOutcome, Draft,
    DraftId, InvitationState, Mailbox, NewBatch, OwnerId, Page, SenderId, Timestamp, TokenHash,
    TokenRecord,
};
use crate::invite::{Attachment, Invite};
use crate::repository::{
    HeldClaims, InvitationStore, OwedRegistration, RedeemOutcome, RepoResult, RepositoryError,
    SendSlots,
};
use crate::selection::Selection;

use super::PostgresStore;
use super::connection::{Fail, Res, bad_row, exec, not_found, row, rows};
use super::rows::{
    activity_columns, big, delivery_columns, read_activity, read_address, read_delivery, read_id,
    read_ts, ts,
};

/// How many rows go into one statement of a large write (a batch's deliveries, an
/// invite's selection): arrays of a few MB, statement overhead that does not count.
pub(super) const WRITE_CHUNK: usize = 50_000;

/// A read-only transaction on one snapshot (REPEATABLE READ): a draft or a batch and
/// its invite's rows take several statements, and a writer committing between them
/// must not give a draft of one version with the selection of another.
async fn snapshot(c: &mut deadpool_postgres::Object) -> Res<deadpool_postgres::Transaction<'_>> {
    Ok(c.build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await?)
}

async fn insert_invite<C: GenericClient + Sync>(c: &C, invite: &Invite) -> Res<i64> {
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
    let inserted = row(
        c,
        "INSERT INTO owner_access_invites (community, subject, text_body, text_from_html,
             html_body, reply_to, summary_to, draft, sender, portal_url)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        &[
            &community.as_str(),
            subject,
            &text_body.as_deref().unwrap_or_default(),
            &text_body.is_none(),
            html_body,
            reply_to,
            summary_to,
            &draft.as_ref().map(DraftId::as_str),
            from,
            portal_url,
        ],
    )
    .await?;
    let id: i64 = need_row(inserted, "invite id")?.try_get(0)?;
    let mut selected = selection.iter().peekable();
    while selected.peek().is_some() {
        let chunk: Vec<&str> = selected
            .by_ref()
            .take(WRITE_CHUNK)
            .map(OwnerId::as_str)
            .collect();
        exec(
            c,
            "INSERT INTO owner_access_invite_selection (invite, owner)
             SELECT $1, unnest($2::text[])",
            &[&id, &chunk],
        )
        .await?;
    }
    if !attachments.is_empty() {
        let names: Vec<&str> = attachments.iter().map(|a| a.file_name.as_str()).collect();
        let types: Vec<&str> = attachments
            .iter()
            .map(|a| a.content_type.as_str())
            .collect();
        let bytes: Vec<&[u8]> = attachments.iter().map(|a| a.bytes.as_slice()).collect();
        exec(
            c,
            "INSERT INTO owner_access_invite_attachments
                 (invite, position, file_name, content_type, bytes)
             SELECT $1, (n - 1)::int, f, t, b
             FROM unnest($2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS a(f, t, b, n)",
            &[&id, &names, &types, &bytes],
        )
        .await?;
    }
    Ok(id)
}

fn need_row(found: Option<tokio_postgres::Row>, what: &str) -> Res<tokio_postgres::Row> {
    found.ok_or_else(|| bad_row(what, "missing"))
}

async fn read_invite<C: GenericClient + Sync>(c: &C, id: i64) -> Res<Invite> {
    let head = need_row(
        row(
            c,
            "SELECT community, subject, text_body, html_body, reply_to, summary_to, draft,
                    sender, portal_url, text_from_html
             FROM owner_access_invites WHERE id = $1",
            &[&id],
        )
        .await?,
        "invite reference",
    )?;
    let mut selection = Vec::new();
    for r in rows(
        c,
        "SELECT owner FROM owner_access_invite_selection WHERE invite = $1 ORDER BY owner",
        &[&id],
    )
    .await?
    {
        selection.push(read_id!(
            OwnerId,
            r.try_get::<_, String>(0)?,
            "invite_selection.owner"
        )?);
    }
    let mut attachments = Vec::new();
    for r in rows(
        c,
        "SELECT file_name, content_type, bytes FROM owner_access_invite_attachments
         WHERE invite = $1 ORDER BY position",
        &[&id],
    )
    .await?
    {
        attachments.push(Attachment {
            file_name: r.try_get(0)?,
            content_type: r.try_get(1)?,
            bytes: r.try_get(2)?,
        });
    }
    let text_from_html: bool = head.try_get(9)?;
    Ok(Invite {
        community: read_id!(
            CommunityId,
            head.try_get::<_, String>(0)?,
            "invites.community"
        )?,
        selection: Selection::of(selection),
        subject: head.try_get(1)?,
        text_body: (!text_from_html)
            .then(|| head.try_get::<_, String>(2))
            .transpose()?,
        html_body: head.try_get(3)?,
        reply_to: head.try_get(4)?,
        summary_to: head.try_get(5)?,
        attachments,
        draft: head
            .try_get::<_, Option<String>>(6)?
            .map(|d| read_id!(DraftId, d, "invites.draft"))
            .transpose()?,
        from: head.try_get(7)?,
        portal_url: head.try_get(8)?,
    })
}

/// `SELECT id, invite, created_at, updated_at` of a draft.
async fn read_draft<C: GenericClient + Sync>(c: &C, r: &tokio_postgres::Row) -> Res<Draft> {
    Ok(Draft {
        id: read_id!(DraftId, r.try_get::<_, String>(0)?, "drafts.id")?,
        invite: read_invite(c, r.try_get(1)?).await?,
        created_at: read_ts(r.try_get(2)?)?,
        updated_at: read_ts(r.try_get(3)?)?,
    })
}

const BATCH_COLUMNS: &str = "id, community, invite, sender_name, sender_address, portal_url, \
     token_ttl_seconds, created_at, resend";

async fn read_batch<C: GenericClient + Sync>(c: &C, r: &tokio_postgres::Row) -> Res<Batch> {
    Ok(Batch {
        id: read_id!(BatchId, r.try_get::<_, String>(0)?, "batches.id")?,
        community: read_id!(CommunityId, r.try_get::<_, String>(1)?, "batches.community")?,
        invite: read_invite(c, r.try_get(2)?).await?,
        sender: Mailbox {
            name: r.try_get(3)?,
            address: read_address(&r.try_get::<_, String>(4)?, "batches.sender_address")?,
        },
        portal_url: r.try_get(5)?,
        token_ttl_seconds: u64::try_from(r.try_get::<_, i64>(6)?)
            .map_err(|e| bad_row("batches.token_ttl_seconds", e))?,
        created_at: read_ts(r.try_get(7)?)?,
        resend: r.try_get(8)?,
    })
}

/// `NotFound` unless the batch exists.
pub(super) async fn require_batch<C: GenericClient + Sync>(c: &C, batch: &BatchId) -> Res<()> {
    if row(
        c,
        "SELECT 1 FROM owner_access_batches WHERE id = $1",
        &[&batch.as_str()],
    )
    .await?
    .is_some()
    {
        Ok(())
    } else {
        Err(not_found("batch", batch))
    }
}

pub(super) async fn append_activity<C: GenericClient + Sync>(
    c: &C,
    entry: &ActivityEntry,
) -> Res<()> {
    let (kind, details) = activity_columns(entry)?;
    exec(
        c,
        "INSERT INTO owner_access_activity (community, at, kind, details) VALUES ($1, $2, $3, $4)",
        &[&entry.community.as_str(), &ts(entry.at)?, &kind, &details],
    )
    .await?;
    Ok(())
}

impl PostgresStore {
    async fn deliveries_in(
        &self,
        batch: &BatchId,
        state: Option<&str>,
    ) -> RepoResult<Vec<Delivery>> {
        self.db
            .run(async {
                let c = self.db.client().await?;
                require_batch(&c, batch).await?;
                let found = match state {
                    None => {
                        rows(
                            &c,
                            concat!(
                                "SELECT ",
                                delivery_columns!(),
                                " FROM owner_access_deliveries WHERE batch = $1 ORDER BY owner"
                            ),
                            &[&batch.as_str()],
                        )
                        .await?
                    }
                    Some(state) => {
                        rows(
                            &c,
                            concat!(
                                "SELECT ",
                                delivery_columns!(),
                                " FROM owner_access_deliveries WHERE batch = $1 AND state = $2
                                 ORDER BY owner"
                            ),
                            &[&batch.as_str(), &state],
                        )
                        .await?
                    }
                };
                found.iter().map(|r| read_delivery(batch, r)).collect()
            })
            .await
    }
}

#[async_trait]
impl InvitationStore for PostgresStore {
    async fn save_draft(&self, draft: &Draft) -> RepoResult<()> {
        self.db
            .run(async {
                let mut c = self.db.client().await?;
                let tx = c.transaction().await?;
                let old: Option<i64> = row(
                    &tx,
                    "SELECT invite FROM owner_access_drafts WHERE id = $1 FOR UPDATE",
                    &[&draft.id.as_str()],
                )
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
                let invite = insert_invite(&tx, &draft.invite).await?;
                exec(
                    &tx,
                    "INSERT INTO owner_access_drafts (id, invite, community, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (id) DO UPDATE SET invite = excluded.invite,
                         community = excluded.community, created_at = excluded.created_at,
                         updated_at = excluded.updated_at",
                    &[
                        &draft.id.as_str(),
                        &invite,
                        &draft.invite.community.as_str(),
                        &ts(draft.created_at)?,
                        &ts(draft.updated_at)?,
                    ],
                )
                .await?;
                if let Some(old) = old {
                    exec(
                        &tx,
                        "DELETE FROM owner_access_invites WHERE id = $1",
                        &[&old],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            })
            .await
    }

    async fn draft(&self, id: &DraftId) -> RepoResult<Option<Draft>> {
        self.db
            .run(async {
                let mut c = self.db.client().await?;
                let tx = snapshot(&mut c).await?;
                let found = row(
                    &tx,
                    "SELECT id, invite, created_at, updated_at FROM owner_access_drafts WHERE id = $1",
                    &[&id.as_str()],
                )
                .await?;
                let draft = match found {
                    Some(r) => Some(read_draft(&tx, &r).await?),
                    None => None,
                };
                tx.commit().await?;
                Ok(draft)
            })
            .await
    }

    async fn drafts(&self, community: &CommunityId) -> RepoResult<Vec<Draft>> {
        self.db
            .run(async {
                let mut c = self.db.client().await?;
                let tx = snapshot(&mut c).await?;
                let mut drafts = Vec::new();
                for r in rows(
                    &tx,
                    "SELECT id, invite, created_at, updated_at FROM owner_access_drafts
                     WHERE community = $1 ORDER BY updated_at DESC, id ASC",
                    &[&community.as_str()],
                )
                .await?
                {
                    drafts.push(read_draft(&tx, &r).await?);
                }
                tx.commit().await?;
                Ok(drafts)
            })
            .await
    }

    async fn delete_draft(&self, id: &DraftId) -> RepoResult<bool> {
        self.db
            .run(async {
                let mut c = self.db.client().await?;
                let tx = c.transaction().await?;
                let Some(r) = row(
                    &tx,
                    "DELETE FROM owner_access_drafts WHERE id = $1 RETURNING invite",
                    &[&id.as_str()],
                )
                .await?
                else {
                    return Ok(false);
                };
                let invite: i64 = r.try_get(0)?;
                exec(
                    &tx,
                    "DELETE FROM owner_access_invites WHERE id = $1",
                    &[&invite],
                )
                .await?;
                tx.commit().await?;
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
        self.db
            .run(async {
                let b = &new.batch;
                let mut c = self.db.client().await?;
                let tx = c.transaction().await?;
                let invite = insert_invite(&tx, &b.invite).await?;
                let inserted = row(
                    &tx,
                    "INSERT INTO owner_access_batches (id, community, invite, sender_name,
                         sender_address, portal_url, token_ttl_seconds, created_at, resend)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (id) DO NOTHING RETURNING id",
                    &[
                        &b.id.as_str(),
                        &b.community.as_str(),
                        &invite,
                        &b.sender.name,
                        &b.sender.address.as_str(),
                        &b.portal_url,
                        &i64::try_from(b.token_ttl_seconds).unwrap_or(i64::MAX),
                        &ts(b.created_at)?,
                        &b.resend,
                    ],
                )
                .await?;
                if inserted.is_none() {
                    // Dropping the transaction rolls the invite back.
                    return Err(Fail::Repo(RepositoryError::AlreadyExists {
                        what: "batch",
                        id: b.id.to_string(),
                    }));
                }
                for chunk in new.deliveries.chunks(WRITE_CHUNK) {
                    let owners: Vec<&str> = chunk.iter().map(|(o, _)| o.as_str()).collect();
                    let addresses: Vec<&str> = chunk.iter().map(|(_, a)| a.as_str()).collect();
                    exec(
                        &tx,
                        "INSERT INTO owner_access_deliveries (batch, owner, to_addr, state)
                         SELECT $1, o, a, 'pending' FROM unnest($2::text[], $3::text[]) AS d(o, a)",
                        &[&b.id.as_str(), &owners, &addresses],
                    )
                    .await?;
                }
                append_activity(&tx, &new.activity).await?;
                tx.commit().await?;
                Ok(())
            })
            .await
    }

    async fn batch(&self, id: &BatchId) -> RepoResult<Option<Batch>> {
        self.db
            .run(async {
                let mut c = self.db.client().await?;
                let tx = snapshot(&mut c).await?;
                let found = row(
                    &tx,
                    &format!("SELECT {BATCH_COLUMNS} FROM owner_access_batches WHERE id = $1"),
                    &[&id.as_str()],
                )
                .await?;
                let batch = match found {
                    Some(r) => Some(read_batch(&tx, &r).await?),
                    None => None,
                };
                tx.commit().await?;
                Ok(batch)
            })
            .await
    }

    async fn batches(&self, community: &CommunityId) -> RepoResult<Vec<Batch>> {
        self.db
            .run(async {
                let mut c = self.db.client().await?;
                let tx = snapshot(&mut c).await?;
                let mut batches = Vec::new();
                for r in rows(
                    &tx,
                    &format!(
                        "SELECT {BATCH_COLUMNS} FROM owner_access_batches WHERE community = $1
                         ORDER BY created_at DESC, seq DESC"
                    ),
                    &[&community.as_str()],
                )
                .await?
                {
                    batches.push(read_batch(&tx, &r).await?);
                }
                tx.commit().await?;
                Ok(batches)
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
        self.take_slots(batch, interval, count, now).await
    }

    async fn claim_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        limit: usize,
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<Delivery>> {
        self.claim(batch, sender, limit, lease, now).await
    }

    async fn renew_claims(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        self.renew(batch, sender, owners, lease, now).await
    }

    async fn record_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        self.record(batch, sender, outcomes, now).await
    }

    async fn release_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<OwnerId>> {
        self.release(batch, sender, owners).await
    }

    async fn held_claims(&self, batch: &BatchId, now: Timestamp) -> RepoResult<HeldClaims> {
        self.held(batch, now).await
    }

    async fn revoke_claims(&self, batch: &BatchId) -> RepoResult<usize> {
        self.revoke(batch).await
    }

    async fn invitation_states(
        &self,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<(OwnerId, InvitationState)>> {
        self.states(owners).await
    }

    async fn deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.deliveries_in(batch, None).await
    }

    async fn delivery_counts(&self, batch: &BatchId) -> RepoResult<DeliveryCounts> {
        self.db
            .run(async {
                let c = self.db.client().await?;
                require_batch(&c, batch).await?;
                let mut counts = DeliveryCounts::default();
                for r in rows(
                    &c,
                    "SELECT state, count(*) FROM owner_access_deliveries WHERE batch = $1
                     GROUP BY state",
                    &[&batch.as_str()],
                )
                .await?
                {
                    let (state, n): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
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

    async fn failed_deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.deliveries_in(batch, Some("failed")).await
    }

    async fn skipped_deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.deliveries_in(batch, Some("skipped")).await
    }

    async fn requeue_failed(&self, batch: &BatchId) -> RepoResult<usize> {
        self.requeue(batch).await
    }

    async fn issue_token(&self, token: &TokenRecord) -> RepoResult<()> {
        self.issue(std::slice::from_ref(token)).await
    }

    /// One transaction for the chunk, all or nothing; pending tokens (what the send
    /// engine issues) in two statements for the whole chunk.
    async fn issue_tokens(&self, tokens: &[TokenRecord]) -> RepoResult<()> {
        self.issue(tokens).await
    }

    async fn token(&self, hash: &TokenHash) -> RepoResult<Option<TokenRecord>> {
        self.read_token(hash).await
    }

    async fn redeem_token(&self, hash: &TokenHash, now: Timestamp) -> RepoResult<RedeemOutcome> {
        self.redeem(hash, now).await
    }

    async fn owed_registrations(&self) -> RepoResult<Vec<OwedRegistration>> {
        self.owed().await
    }

    async fn settle_registration(
        &self,
        token: &TokenHash,
        activity: Option<&ActivityEntry>,
    ) -> RepoResult<bool> {
        self.settle(token, activity).await
    }

    async fn answer_redeem(&self, token: &TokenHash, now: Timestamp) -> RepoResult<bool> {
        self.answer(token, now).await
    }

    async fn revoke_tokens(&self, owners: &[OwnerId], now: Timestamp) -> RepoResult<usize> {
        self.revoke_links(owners, now).await
    }

    async fn append_activity(&self, entry: &ActivityEntry) -> RepoResult<()> {
        self.db
            .run(async {
                let c = self.db.client().await?;
                append_activity(&c, entry).await
            })
            .await
    }

    async fn activity(
        &self,
        community: &CommunityId,
        page: Page,
    ) -> RepoResult<Vec<ActivityEntry>> {
        self.db
            .run(async {
                let c = self.db.client().await?;
                rows(
                    &c,
                    "SELECT at, details FROM owner_access_activity WHERE community = $1
                     ORDER BY at DESC, seq DESC LIMIT $2 OFFSET $3",
                    &[&community.as_str(), &big(page.limit), &big(page.offset)],
                )
                .await?
                .iter()
                .map(|r| read_activity(community, r))
                .collect()
            })
            .await
    }
}
