//! The rate of a whole batch: four senders resuming one batch at once over one SQLite
//! file (four handles, as four processes have) keep `rate_per_second` together, not
//! each; a store that cannot grant slots stops the run with nothing lost.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::paced::{Timed, pending_batch, per_second, resume_together};
use common::wrapped::{Hooks, Wrapped};
use owner_access::adapters::sqlite::SqliteRepository;
use owner_access::domain::{BatchId, Timestamp};
use owner_access::prelude::*;
use owner_access::repository::{RepoResult, RepositoryError, SendSlots};
use owner_access::{InMemoryRepository, SendOptions, StopReason, async_trait};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_senders_on_one_sqlite_file_keep_the_batch_rate_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let open = || async {
        Arc::new(SqliteRepository::open(&path).await.unwrap()) as Arc<dyn OwnerStorage>
    };
    const OWNERS: usize = 1200;
    const RATE: f64 = 200.0;
    let batch = pending_batch(open().await, OWNERS).await;
    // More than 3 claim chunks (256 each), so all four senders hold deliveries
    // and send at once.
    let mut handles = Vec::new();
    for _ in 0..4 {
        handles.push(open().await);
    }
    let transport = Timed::new(Duration::from_millis(5));
    resume_together(handles, &batch, RATE, 4, transport.clone()).await;
    let copies = transport.copies();
    assert_eq!(copies.len(), OWNERS);
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");
    let buckets = per_second(&transport.accepted());
    println!("accepted per second, 4 senders at --rate {RATE}: {buckets:?}");
    assert!(buckets.len() >= 3, "{buckets:?}");
    assert!(
        buckets.iter().all(|n| *n as f64 <= RATE),
        "no second above the batch's rate: {buckets:?}"
    );
    let mean = buckets.iter().sum::<usize>() as f64 / buckets.len() as f64;
    // Slots are 5% wider than 1/RATE, and the tail of the batch (one sender left with
    // the last chunk, on a loaded machine) may dip: the mean is checked loosely.
    assert!(
        mean >= 0.75 * RATE,
        "the rate is used: mean {mean} in {buckets:?}"
    );
}

/// A store whose schedule cannot be reached.
#[derive(Debug)]
struct NoSlots;

#[async_trait]
impl Hooks for NoSlots {
    async fn take_send_slots(
        &self,
        _inner: &InMemoryRepository,
        _batch: &BatchId,
        _interval: Duration,
        _count: u32,
        _now: Timestamp,
    ) -> RepoResult<SendSlots> {
        Err(RepositoryError::Unavailable {
            store: "schedule".into(),
            source: "injected: the schedule is unreachable".into(),
        })
    }
}

#[tokio::test]
async fn a_store_that_cannot_grant_slots_stops_the_run_with_everything_pending() {
    let storage: Arc<dyn OwnerStorage> = Arc::new(Wrapped::new(NoSlots));
    let batch = pending_batch(storage.clone(), 5).await;
    let transport = Timed::new(Duration::ZERO);
    let service = owner_access::OwnerAccess::builder(storage.clone(), transport.clone())
        .sender("Owner Portal <no-reply@portal.example.com>")
        .portal_url(common::PORTAL)
        .send_options(SendOptions {
            rate_per_second: Some(10.0),
            ..SendOptions::default()
        })
        .build()
        .unwrap();
    let report = service.resume(&batch).await.unwrap();
    assert!(
        matches!(report.stopped, Some(StopReason::StoreUnavailable { .. })),
        "{report:?}"
    );
    assert_eq!(report.sent, 0);
    assert_eq!(report.pending, 5);
    assert!(transport.accepted().is_empty(), "nothing was sent");
    let counts = storage.delivery_counts(&batch).await.unwrap();
    assert_eq!(counts.pending, 5, "{counts:?}");
}
