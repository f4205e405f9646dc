//! The batch's rate over PostgreSQL: the schedule judged by the server's clock
//! whatever the callers' clocks say, grants of many pools at once never overlapping,
//! and four senders (four pools, as four processes have) keeping one batch's rate
//! together.
//!
//! Needs a server: `OWNER_ACCESS_PG_URL=postgres://user@host:port/db cargo test
//! --all-features --test rate_postgres -- --include-ignored`.

mod common;
mod pg_support;

use std::sync::Arc;
use std::time::Duration;

use common::paced::{four_senders_keep_the_batch_rate, pending_batch};
use owner_access::OwnerStorage;
use owner_access::adapters::postgres::{LeaseClock, PostgresRepository};
use owner_access::domain::{BatchId, Timestamp};
use owner_access::prelude::*;
use pg_support::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn slots_of_pools_whose_callers_disagree_on_the_time_follow_the_server_clock() {
    let db = TestDb::create().await;
    let settings = db.fresh().await.lease_clock(LeaseClock::Server);
    let pools: Vec<PostgresRepository> =
        futures::future::join_all((0..3).map(|_| PostgresRepository::connect(&settings)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let storage: Arc<dyn OwnerStorage> =
        Arc::new(PostgresRepository::connect(&settings).await.unwrap());
    let batch = pending_batch(storage, 3).await;
    let interval = Duration::from_millis(10);
    // Callers whose clocks read 1970, now, and next year: the server judges.
    let clocks = [
        Timestamp::from_unix_seconds(0),
        owner_access::Clock::now(&owner_access::SystemClock),
        Timestamp::from_unix_seconds(4_000_000_000),
    ];
    let grants = futures::future::join_all((0..30).map(|i| {
        let (pool, batch) = (&pools[i % 3], &batch);
        async move {
            pool.take_send_slots(batch, interval, 4, clocks[i % 3])
                .await
        }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .unwrap();
    let server_now = grants.iter().map(|g| g.now).min().unwrap();
    let system = owner_access::Clock::now(&owner_access::SystemClock);
    assert!(
        server_now.max(system) - server_now.min(system) < Duration::from_secs(60),
        "the judging now is the server's ({server_now}), not a caller's"
    );
    let mut slots: Vec<Timestamp> = grants
        .iter()
        .flat_map(|g| (0..g.count).map(move |k| g.slot(k)))
        .collect();
    slots.sort();
    for pair in slots.windows(2) {
        assert!(
            pair[1] - pair[0] >= interval,
            "slots of concurrent pools are an interval apart: {pair:?}"
        );
    }
    assert_eq!(slots.len(), 120);
    assert!(
        grants.iter().all(|g| g.first >= g.now),
        "no slot before its grant"
    );
    let unknown = pools[0]
        .take_send_slots(&BatchId::new("nope").unwrap(), interval, 1, clocks[1])
        .await;
    assert!(
        matches!(
            unknown,
            Err(owner_access::repository::RepositoryError::NotFound { .. })
        ),
        "{unknown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn four_senders_on_postgres_keep_the_batch_rate_together() {
    let db = TestDb::create().await;
    let settings = db.fresh().await.lease_clock(LeaseClock::Server);
    let open = || async {
        Arc::new(PostgresRepository::connect(&settings).await.unwrap()) as Arc<dyn OwnerStorage>
    };
    four_senders_keep_the_batch_rate(open, "PostgreSQL").await;
}
