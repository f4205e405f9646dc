//! The rate of a whole batch: four senders resuming one batch at once over one SQLite
//! file (four handles, as four processes have) keep `rate_per_second` together, not
//! each; a store that cannot grant slots stops the run with nothing lost.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::paced::{Timed, four_senders_keep_the_batch_rate, pending_batch};
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
    four_senders_keep_the_batch_rate(open, "one SQLite file").await;
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
