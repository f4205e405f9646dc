//! The batch's rate schedule on SQLite: one upsert takes a group of send slots.

use std::time::Duration;

use super::super::fail::{Res, not_found};
use super::super::rows::{Db, read_ts, ts};
use crate::domain::{BatchId, Timestamp};
use crate::repository::SendSlots;

/// Takes a group of slots in one statement: the batch's row is made from its batch
/// (so an unknown batch inserts nothing and returns no row), or moved on from
/// `max(next_at, now)`; RETURNING gives where the group starts. SQLite serialises
/// writers, so two senders' groups never overlap. `?2` is now, `?3` the group's span,
/// both in nanoseconds.
const TAKE_SLOTS: &str = "INSERT INTO owner_access_send_schedules (batch, next_at)
     SELECT id, ?2 + ?3 FROM owner_access_batches WHERE id = ?1
     ON CONFLICT (batch) DO UPDATE SET next_at = max(next_at, ?2) + ?3
     RETURNING next_at - ?3";

pub(super) fn take_send_slots(
    db: &Db<'_>,
    batch: &BatchId,
    interval: Duration,
    count: u32,
    now: Timestamp,
) -> Res<SendSlots> {
    let span = SendSlots::check_request(interval, count)?;
    // At most a day, so it fits.
    let span_ns = i64::try_from(span.as_nanos()).unwrap_or(i64::MAX);
    let first = db.row(
        TAKE_SLOTS,
        rusqlite::params![batch.as_str(), ts(now)?, span_ns],
        |r| read_ts(r.get(0)?),
    )?;
    let first = first.ok_or_else(|| not_found("batch", batch))?;
    Ok(SendSlots {
        now,
        first,
        count,
        interval,
    })
}
