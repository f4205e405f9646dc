//! Repository checks: the batch's rate schedule ([`take_send_slots`]).
//!
//! [`take_send_slots`]: crate::repository::InvitationStore::take_send_slots

use std::time::Duration;

use futures::future::join_all;

use crate::domain::Timestamp;
use crate::repository::{OwnerStorage, SendSlots};

use super::fixtures::*;
use super::harness::*;

const MS: Duration = Duration::from_millis(1);

async fn take(
    c: Ctx,
    repo: &dyn OwnerStorage,
    batch: &str,
    interval: Duration,
    count: u32,
    now: Timestamp,
) -> Result<SendSlots, Failure> {
    c.ok(
        repo.take_send_slots(&bid(batch), interval, count, now)
            .await,
        "take_send_slots",
    )
}

/// `take_send_slots`: the first grant starts at `now`; each next one where the one
/// before ended (`count * interval` later), even when the caller's `now` is behind;
/// a schedule that fell behind the clock starts again at `now` (no burst after idle
/// time); each batch has its own schedule; `NotFound` for a missing batch and
/// `Precondition` for a count of 0, a zero interval or more than a day.
pub async fn send_slots_rules(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("send_slots_rules");
    c.err(
        repo.take_send_slots(&bid("zz"), MS, 1, t(0)).await,
        "NotFound",
        is_not_found,
        "taking slots of a missing batch",
    )?;
    create_batch(c, repo, "b1", "c1", &["o1"], t(0)).await?;
    create_batch(c, repo, "b2", "c1", &["o1"], t(0)).await?;
    for (interval, count, what) in [
        (MS, 0, "a count of 0"),
        (Duration::ZERO, 4, "a zero interval"),
        (Duration::from_secs(3600), 25, "25 hours"),
    ] {
        c.err(
            repo.take_send_slots(&bid("b1"), interval, count, t(100))
                .await,
            "Precondition",
            is_precondition,
            &format!("taking {what}"),
        )?;
    }
    // Refused calls changed nothing: the first grant starts at now.
    let interval = 250 * MS;
    let first = take(c, repo, "b1", interval, 4, t(100)).await?;
    c.eq(
        (first.now, first.first, first.count, first.interval),
        (t(100), t(100), 4, interval),
        "the first grant: (now, first, count, interval)",
    )?;
    c.eq(
        first.end(),
        t(101),
        "4 slots 250 ms apart end a second later",
    )?;
    let second = take(c, repo, "b1", interval, 2, t(100)).await?;
    c.eq(
        second.first,
        t(101),
        "the next grant starts where the first ended",
    )?;
    let behind = take(c, repo, "b1", interval, 2, t(50)).await?;
    c.eq(
        behind.first,
        t(101) + 500 * MS,
        "a caller whose now is behind still starts after the last grant",
    )?;
    c.eq(
        behind.starts_in(),
        Duration::from_millis(51_500),
        "starts_in: first - now",
    )?;
    let idle = take(c, repo, "b1", interval, 4, t(1000)).await?;
    c.eq(
        idle.first,
        t(1000),
        "after idle time the schedule starts at now, with no credit for the idle time",
    )?;
    let after_idle = take(c, repo, "b1", interval, 1, t(1000)).await?;
    c.eq(
        after_idle.first,
        t(1001),
        "and goes on from there at the interval",
    )?;
    let other = take(c, repo, "b2", interval, 1, t(100)).await?;
    c.eq(
        other.first,
        t(100),
        "another batch has a schedule of its own",
    )?;
    Ok(())
}

/// `take_send_slots` by many callers at once: their grants never overlap and, all
/// together, are the slots of one schedule, `interval` apart from the first, none
/// missing, none twice (a read-then-write store hands two callers the same slots).
pub async fn send_slots_concurrently(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("send_slots_concurrently");
    create_batch(c, repo, "b1", "c1", &["o1"], t(0)).await?;
    let interval = 20 * MS;
    let batch = bid("b1");
    let grants = join_all((0..8).map(|_| repo.take_send_slots(&batch, interval, 3, t(100))))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| c.fail(format!("take_send_slots: unexpected error: {e}")))?;
    let mut slots: Vec<Timestamp> = grants
        .iter()
        .flat_map(|g| (0..g.count).map(move |k| g.slot(k)))
        .collect();
    slots.sort();
    let want: Vec<Timestamp> = (0..24).map(|k| t(100) + interval * k).collect();
    c.eq(
        slots,
        want,
        "8 grants of 3 slots from one schedule, 20 ms apart",
    )
}
