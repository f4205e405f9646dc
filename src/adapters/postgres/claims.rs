//! The claim methods of [`PostgresStore`]: leases judged by one clock (the server's,
//! or the caller's: [`LeaseClock`](super::LeaseClock)), each method one statement
//! over the whole group (arrays), fenced on the holder.

use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::GenericClient;

use crate::domain::{BatchId, Delivery, DeliveryOutcome, OwnerId, SenderId, Timestamp};
use crate::repository::{ClaimHolder, HeldClaims, RepoResult};

use super::PostgresStore;
use super::connection::{Res, bad_row, exec, row, rows};
use super::rows::{big, delivery_columns, nanos, read_delivery, read_id, read_ts, ts};
use super::store::require_batch;

/// Claims a chunk in one statement: run-out leases by their end, then as many pending
/// deliveries (by owner) as the limit leaves room for, each row locked as it is
/// picked and skipped when another claimer holds its lock (`SKIP LOCKED`), so
/// concurrent claimers take disjoint rows without waiting for each other. `$3` is the
/// caller's now, or NULL for the server's.
const CLAIM: &str = concat!(
    "WITH clock AS (SELECT coalesce($3::int8, owner_access_now_ns()) AS now),
     expired AS (
         SELECT d.owner FROM owner_access_deliveries d, clock
          WHERE d.batch = $1 AND d.state = 'claimed' AND d.lease_until <= clock.now
          ORDER BY d.lease_until, d.owner LIMIT $2
          FOR UPDATE OF d SKIP LOCKED),
     pending AS (
         SELECT owner FROM owner_access_deliveries
          WHERE batch = $1 AND state = 'pending'
          ORDER BY lease_until, owner
          LIMIT greatest($2 - (SELECT count(*) FROM expired), 0)
          FOR UPDATE SKIP LOCKED),
     picked AS (SELECT owner FROM expired UNION ALL SELECT owner FROM pending)
     UPDATE owner_access_deliveries d
        SET state = 'claimed', state_at = clock.now, holder = $4, lease_until = clock.now + $5
       FROM picked, clock
      WHERE d.batch = $1 AND d.owner = picked.owner
        AND (d.state = 'pending' OR (d.state = 'claimed' AND d.lease_until <= clock.now))
     RETURNING ",
    "d.owner, d.to_addr, d.state, d.state_at, d.error, d.attempts, d.holder, d.lease_until, \
     d.unreachable_runs, d.skip_reason"
);

/// The statements that write a sender's claimed rows (a renewal, a release, a group's
/// outcomes) may run at once over the same rows: a run renews everything it holds
/// while a group of it is being recorded. Each first locks its rows in one order, by
/// owner (`ORDER BY owner FOR UPDATE` in a materialized step), so one waits for the
/// other instead of each holding rows the other needs: locked in the plans' own
/// orders, the server found deadlocks between a renewal and a record. `$1` is the
/// batch; the arguments name the parameters of the owners and of the holder.
macro_rules! locked_in_order {
    ($owners:literal, $holder:literal) => {
        concat!(
            "locked AS MATERIALIZED (
             SELECT owner FROM owner_access_deliveries
              WHERE batch = $1 AND owner = ANY(",
            $owners,
            ") AND state = 'claimed' AND holder = ",
            $holder,
            "
              ORDER BY owner FOR UPDATE)"
        )
    };
}

/// Renews a sender's leases on the listed deliveries.
const RENEW: &str = concat!(
    "WITH clock AS (SELECT coalesce($4::int8, owner_access_now_ns()) AS now), ",
    locked_in_order!("$2", "$3"),
    "
     UPDATE owner_access_deliveries d SET lease_until = clock.now + $5 FROM clock, locked
      WHERE d.batch = $1 AND d.owner = locked.owner AND d.state = 'claimed' AND d.holder = $3
     RETURNING d.owner"
);

/// Gives a sender's claims on the listed deliveries back.
const RELEASE: &str = concat!(
    "WITH ",
    locked_in_order!("$2", "$3"),
    "
     UPDATE owner_access_deliveries d
        SET state = 'pending', state_at = NULL, holder = NULL, lease_until = NULL
       FROM locked
      WHERE d.batch = $1 AND d.owner = locked.owner AND d.state = 'claimed' AND d.holder = $3
     RETURNING d.owner"
);

/// Records a group of outcomes, each only where `$2` holds the claim: sent, failed
/// and skipped settle the delivery; unreachable gives it back pending, one more run
/// counted.
const RECORD: &str = concat!(
    "WITH ",
    locked_in_order!("$4", "$2"),
    "
     UPDATE owner_access_deliveries d SET
         state = o.state,
         state_at = CASE WHEN o.state = 'pending' THEN NULL ELSE $3::int8 END,
         error = o.error,
         attempts = least(d.attempts + o.attempts, 4294967295),
         holder = NULL, lease_until = NULL,
         skip_reason = o.skip,
         unreachable_runs = CASE WHEN o.state = 'pending'
             THEN least(d.unreachable_runs + 1, 4294967295) ELSE d.unreachable_runs END
       FROM unnest($4::text[], $5::text[], $6::text[], $7::int8[], $8::text[])
            AS o(owner, state, error, attempts, skip), locked
      WHERE d.batch = $1 AND d.owner = o.owner AND d.owner = locked.owner
        AND d.state = 'claimed' AND d.holder = $2
     RETURNING d.owner"
);

/// The listed owners that a fenced write did not touch.
fn refused(listed: &[OwnerId], done: &[String]) -> Vec<OwnerId> {
    if done.len() == listed.len() {
        return Vec::new();
    }
    let done: HashSet<&str> = done.iter().map(String::as_str).collect();
    listed
        .iter()
        .filter(|o| !done.contains(o.as_str()))
        .cloned()
        .collect()
}

fn owners_of(found: &[tokio_postgres::Row]) -> Res<Vec<String>> {
    found.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// What recording sent messages does to their owners' links: each owner's live
/// invitation of another batch is closed (its tokens revoked at `at`, a trigger:
/// superseded), then the batch's pending invitation of the owner becomes live and
/// the pending tokens of its live invitation live. Two statements for the group, in
/// this order for the one-live-invitation index.
pub(super) async fn accept_invitations<C: GenericClient + Sync>(
    c: &C,
    batch: &BatchId,
    owners: &[&str],
    at: i64,
) -> Res<()> {
    if owners.is_empty() {
        return Ok(());
    }
    exec(
        c,
        "UPDATE owner_access_invitations SET state = 'closed', closed_at = $3
          WHERE state = 'live' AND batch <> $2 AND owner = ANY($1)",
        &[&owners, &batch.as_str(), &at],
    )
    .await?;
    exec(
        c,
        "WITH opened AS (
             UPDATE owner_access_invitations SET state = 'live'
              WHERE batch = $2 AND state = 'pending' AND owner = ANY($1)
             RETURNING id)
         UPDATE owner_access_tokens SET state = 'live'
          WHERE state = 'pending'
            AND invitation IN (SELECT id FROM opened
                               UNION ALL
                               SELECT id FROM owner_access_invitations
                                WHERE batch = $2 AND state = 'live' AND owner = ANY($1))",
        &[&owners, &batch.as_str()],
    )
    .await?;
    Ok(())
}

impl PostgresStore {
    pub(super) async fn claim(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        limit: usize,
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<Delivery>> {
        self.db
            .run(async {
                let c = self.db.client().await?;
                let found = rows(
                    &c,
                    CLAIM,
                    &[
                        &batch.as_str(),
                        &big(limit),
                        &self.db.lease_now(ts(now)?),
                        &sender.as_str(),
                        &nanos(lease),
                    ],
                )
                .await?;
                if found.is_empty() {
                    require_batch(&c, batch).await?;
                }
                found.iter().map(|r| read_delivery(batch, r)).collect()
            })
            .await
    }

    pub(super) async fn renew(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        let ids: Vec<&str> = owners.iter().map(OwnerId::as_str).collect();
        self.db
            .run(async {
                let c = self.db.client().await?;
                let renewed = owners_of(
                    &rows(
                        &c,
                        RENEW,
                        &[
                            &batch.as_str(),
                            &ids,
                            &sender.as_str(),
                            &self.db.lease_now(ts(now)?),
                            &nanos(lease),
                        ],
                    )
                    .await?,
                )?;
                if renewed.is_empty() {
                    require_batch(&c, batch).await?;
                }
                Ok(refused(owners, &renewed))
            })
            .await
    }

    /// One transaction for the group: the fenced update of every outcome in one
    /// statement, then the links and invitation states of the sent ones (three
    /// statements for the group).
    pub(super) async fn record(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        let mut owners = Vec::with_capacity(outcomes.len());
        let mut states = Vec::with_capacity(outcomes.len());
        let mut errors = Vec::with_capacity(outcomes.len());
        let mut attempts = Vec::with_capacity(outcomes.len());
        let mut skips = Vec::with_capacity(outcomes.len());
        for (owner, outcome) in outcomes {
            let (state, error, tries, skip) = match outcome {
                DeliveryOutcome::Sent { attempts, .. } => ("sent", None, *attempts, None),
                DeliveryOutcome::Failed { error, attempts } => {
                    ("failed", Some(error.as_str()), *attempts, None)
                }
                DeliveryOutcome::Unreachable { attempts } => ("pending", None, *attempts, None),
                DeliveryOutcome::Skipped { reason } => ("skipped", None, 0, Some(reason.code())),
            };
            owners.push(owner.as_str());
            states.push(state);
            errors.push(error);
            attempts.push(i64::from(tries));
            skips.push(skip);
        }
        let listed: Vec<OwnerId> = outcomes.iter().map(|(o, _)| o.clone()).collect();
        self.db
            .run(async {
                let at = ts(now)?;
                let mut c = self.db.client().await?;
                let tx = c.transaction().await?;
                let recorded = owners_of(
                    &rows(
                        &tx,
                        RECORD,
                        &[
                            &batch.as_str(),
                            &sender.as_str(),
                            &at,
                            &owners,
                            &states,
                            &errors,
                            &attempts,
                            &skips,
                        ],
                    )
                    .await?,
                )?;
                if recorded.is_empty() {
                    require_batch(&tx, batch).await?;
                }
                let recorded_set: HashSet<&str> = recorded.iter().map(String::as_str).collect();
                let mut sent: Vec<&str> = Vec::new();
                let mut expires: Vec<i64> = Vec::new();
                for (owner, outcome) in outcomes {
                    if let DeliveryOutcome::Sent { expires_at, .. } = outcome
                        && recorded_set.contains(owner.as_str())
                    {
                        sent.push(owner.as_str());
                        expires.push(ts(*expires_at)?);
                    }
                }
                if !sent.is_empty() {
                    accept_invitations(&tx, batch, &sent, at).await?;
                    exec(
                        &tx,
                        "INSERT INTO owner_access_invitation_states
                             (owner, first_at, last_at, count, expires_at)
                         SELECT o, $1, $1, 1, e FROM unnest($2::text[], $3::int8[]) AS s(o, e)
                         ON CONFLICT (owner) DO UPDATE SET
                             last_at = excluded.last_at,
                             count = least(owner_access_invitation_states.count + 1, 4294967295),
                             expires_at = excluded.expires_at",
                        &[&at, &sent, &expires],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(refused(&listed, &recorded))
            })
            .await
    }

    pub(super) async fn release(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<OwnerId>> {
        let ids: Vec<&str> = owners.iter().map(OwnerId::as_str).collect();
        self.db
            .run(async {
                let c = self.db.client().await?;
                let released = owners_of(
                    &rows(&c, RELEASE, &[&batch.as_str(), &ids, &sender.as_str()]).await?,
                )?;
                if released.is_empty() {
                    require_batch(&c, batch).await?;
                }
                Ok(refused(owners, &released))
            })
            .await
    }

    pub(super) async fn held(&self, batch: &BatchId, now: Timestamp) -> RepoResult<HeldClaims> {
        self.db
            .run(async {
                let c = self.db.client().await?;
                let head = row(
                    &c,
                    "SELECT EXISTS (SELECT 1 FROM owner_access_batches WHERE id = $1),
                            coalesce($2::int8, owner_access_now_ns())",
                    &[&batch.as_str(), &self.db.lease_now(ts(now)?)],
                )
                .await?
                .ok_or_else(|| bad_row("held claims", "no row"))?;
                if !head.try_get::<_, bool>(0)? {
                    return Err(super::connection::not_found("batch", batch));
                }
                let judged_now = read_ts(head.try_get(1)?)?;
                let mut holders = Vec::new();
                for r in rows(
                    &c,
                    "SELECT holder, count(*), min(lease_until), max(lease_until)
                       FROM owner_access_deliveries
                      WHERE batch = $1 AND state = 'claimed' GROUP BY holder",
                    &[&batch.as_str()],
                )
                .await?
                {
                    holders.push(ClaimHolder {
                        sender: read_id!(
                            SenderId,
                            r.try_get::<_, String>(0)?,
                            "deliveries.holder"
                        )?,
                        deliveries: usize::try_from(r.try_get::<_, i64>(1)?)
                            .map_err(|e| bad_row("claim count", e))?,
                        first_until: read_ts(r.try_get(2)?)?,
                        last_until: read_ts(r.try_get(3)?)?,
                    });
                }
                Ok(HeldClaims {
                    now: judged_now,
                    holders,
                })
            })
            .await
    }

    pub(super) async fn revoke(&self, batch: &BatchId) -> RepoResult<usize> {
        self.db
            .run(async {
                let c = self.db.client().await?;
                require_batch(&c, batch).await?;
                let n = exec(
                    &c,
                    "UPDATE owner_access_deliveries
                        SET state = 'pending', state_at = NULL, holder = NULL, lease_until = NULL
                      WHERE batch = $1 AND state = 'claimed'",
                    &[&batch.as_str()],
                )
                .await?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            })
            .await
    }

    pub(super) async fn requeue(&self, batch: &BatchId) -> RepoResult<usize> {
        self.db
            .run(async {
                let c = self.db.client().await?;
                require_batch(&c, batch).await?;
                let n = exec(
                    &c,
                    "UPDATE owner_access_deliveries
                        SET state = 'pending', state_at = NULL, error = NULL, unreachable_runs = 0
                      WHERE batch = $1 AND state = 'failed'",
                    &[&batch.as_str()],
                )
                .await?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            })
            .await
    }
}

/// The columns `CLAIM` returns are [`delivery_columns!`]'s, qualified.
const _: &str = delivery_columns!();
