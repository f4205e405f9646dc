//! The batch's rate schedule against a model written from the history of grants
//! rather than from a stored "next" slot: a grant starts at the caller's now or at the
//! end of the latest-ending grant before it, whichever is later. Random sequences of
//! calls (time moving on by random steps, random counts and intervals, two batches)
//! on the in-memory store and on a SQLite file.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::paced::pending_batch;
use owner_access::InMemoryRepository;
use owner_access::OwnerStorage;
use owner_access::adapters::sqlite::SqliteRepository;
use owner_access::domain::{BatchId, Timestamp};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Call {
    /// Which of the two batches.
    batch: usize,
    /// How far the caller's clock moved on since the call before.
    step_ms: u64,
    count: u32,
    interval_ms: u64,
}

fn call() -> impl Strategy<Value = Call> {
    (0..2usize, 0..3_000u64, 1..20u32, 1..400u64).prop_map(
        |(batch, step_ms, count, interval_ms)| Call {
            batch,
            step_ms,
            count,
            interval_ms,
        },
    )
}

/// The grant the model expects: from every earlier grant of the batch (first, end).
fn expected(history: &[(Timestamp, Timestamp)], now: Timestamp) -> Timestamp {
    history
        .iter()
        .map(|(_, end)| *end)
        .fold(now, Timestamp::max)
}

async fn run(storage: Arc<dyn OwnerStorage>, calls: &[Call]) -> Result<(), TestCaseError> {
    let first = pending_batch(storage.clone(), 1).await;
    // A second batch of its own, from the same owners.
    let second = pending_batch(storage.clone(), 1).await;
    let batches: [BatchId; 2] = [first, second];
    let mut histories: [Vec<(Timestamp, Timestamp)>; 2] = [Vec::new(), Vec::new()];
    let mut now = Timestamp::from_unix_seconds(1_800_000_000);
    for c in calls {
        now = now + Duration::from_millis(c.step_ms);
        let interval = Duration::from_millis(c.interval_ms);
        let got = storage
            .take_send_slots(&batches[c.batch], interval, c.count, now)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = expected(&histories[c.batch], now);
        prop_assert_eq!(got.first, want, "{:?}", c);
        prop_assert_eq!(got.now, now);
        prop_assert_eq!(got.count, c.count);
        let end = got.first + interval * c.count;
        // No slot of this grant falls inside an earlier grant of the batch.
        for (f, e) in &histories[c.batch] {
            prop_assert!(
                got.first >= *e || end <= *f,
                "overlap with {:?}..{:?}",
                f,
                e
            );
        }
        histories[c.batch].push((got.first, end));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn the_schedule_matches_the_model(calls in proptest::collection::vec(call(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            run(Arc::new(InMemoryRepository::new()), &calls).await?;
            let dir = tempfile::tempdir().unwrap();
            let sqlite = SqliteRepository::open(dir.path().join("rate.db")).await.unwrap();
            run(Arc::new(sqlite), &calls).await
        })?;
    }
}
