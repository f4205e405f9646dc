//! The batch's rate schedule of [`PostgresStore`]: one upsert takes a group of send
//! slots, judged by the clock that judges leases ([`LeaseClock`](super::LeaseClock)).

use std::time::Duration;

use crate::domain::{BatchId, Timestamp};
use crate::repository::{RepoResult, SendSlots};

use super::PostgresStore;
use super::connection::{not_found, row};
use super::rows::{read_ts, ts};

/// Takes a group of slots in one statement. The batch's row is made from its batch
/// (an unknown batch inserts nothing and returns no row), or, when it exists, moved on
/// from `greatest(next_at, now)` (`excluded.next_at` is `now + span`); the row lock of
/// the upsert orders concurrent senders, each seeing the row as the one before it left
/// it. `$2` is the caller's now, or NULL for the server's (its `now()`: the statement's
/// start, so a sender that waited on the lock is told an earlier now and waits a
/// little longer than it needs, never less). `$3` is the group's span. RETURNING gives
/// where the group starts and the judging now, both in nanoseconds.
const TAKE_SLOTS: &str = "INSERT INTO owner_access_send_schedules AS s (batch, next_at)
     SELECT id, coalesce($2::int8, owner_access_now_ns()) + $3
       FROM owner_access_batches WHERE id = $1
     ON CONFLICT (batch) DO UPDATE
        SET next_at = greatest(s.next_at + $3, excluded.next_at)
     RETURNING s.next_at - $3, coalesce($2::int8, owner_access_now_ns())";

impl PostgresStore {
    pub(super) async fn take_slots(
        &self,
        batch: &BatchId,
        interval: Duration,
        count: u32,
        now: Timestamp,
    ) -> RepoResult<SendSlots> {
        let span = SendSlots::check_request(interval, count)?;
        // At most a day, so it fits.
        let span_ns = i64::try_from(span.as_nanos()).unwrap_or(i64::MAX);
        self.db
            .run(async {
                let c = self.db.client().await?;
                let found = row(
                    &c,
                    TAKE_SLOTS,
                    &[&batch.as_str(), &self.db.lease_now(ts(now)?), &span_ns],
                )
                .await?
                .ok_or_else(|| not_found("batch", batch))?;
                Ok(SendSlots {
                    first: read_ts(found.try_get(0)?)?,
                    now: read_ts(found.try_get(1)?)?,
                    count,
                    interval,
                })
            })
            .await
    }
}
