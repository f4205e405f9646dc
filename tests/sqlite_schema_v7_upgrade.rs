//! A file written by the schema-7 code (before the count of unreachable runs,
//! `tests/fixtures/schema_v7.db`, see its README) opens with this build, is migrated
//! once, keeps its deliveries with no unreachable run counted, and its batch resumes:
//! a run against a dead server leaves every delivery pending with one run counted,
//! in the file, and a run against a live one settles the batch.
#![cfg(feature = "sqlite")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use owner_access::adapters::memory::Fault;
use owner_access::adapters::sqlite::{SCHEMA_VERSION, SqliteRepository};
use owner_access::domain::{BatchId, CommunityId, DeliveryState, Timestamp};
use owner_access::prelude::*;
use owner_access::{InMemoryTransport, ManualClock, OwnerAccess, SendOptions, StopReason};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema_v7.db");

fn copy_of_fixture(dir: &Path) -> PathBuf {
    let path = dir.join("upgraded.db");
    std::fs::copy(FIXTURE, &path).unwrap();
    path
}

fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

async fn the_batch(repo: &SqliteRepository) -> BatchId {
    let batches = repo
        .batches(&CommunityId::new("legacy").unwrap())
        .await
        .unwrap();
    assert_eq!(batches.len(), 1);
    batches[0].id.clone()
}

/// Each delivery: (owner, state name, unreachable runs).
async fn states(repo: &SqliteRepository, batch: &BatchId) -> Vec<(String, &'static str, u32)> {
    repo.deliveries(batch)
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            let state = match d.state {
                DeliveryState::Pending => "pending",
                DeliveryState::Claimed { .. } => "claimed",
                DeliveryState::Sent { .. } => "sent",
                DeliveryState::Failed { .. } => "failed",
                DeliveryState::Skipped { .. } => "skipped",
            };
            (d.owner.to_string(), state, d.unreachable_runs)
        })
        .collect()
}

fn service(repo: &SqliteRepository, transport: Arc<InMemoryTransport>) -> OwnerAccess {
    // Well past the dead sender's 20 s lease (it claimed o2 a minute after the start).
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_unix_seconds(1_795_701_600) + Duration::from_secs(600),
    ));
    OwnerAccess::builder(Arc::new(repo.clone()), transport)
        .sender("Owner Portal <no-reply@example.com>")
        .portal_url("https://portal.example.com/register")
        .clock(clock)
        .send_options(SendOptions {
            concurrency: 2,
            ..SendOptions::default()
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_schema_7_file_migrates_and_counts_unreachable_runs_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_of_fixture(dir.path());
    assert_eq!(user_version(&path), 7, "the fixture is of schema 7");
    let repo = SqliteRepository::open(&path).await.unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let batch = the_batch(&repo).await;
    assert_eq!(
        states(&repo, &batch).await,
        vec![
            ("o1".to_owned(), "sent", 0),
            ("o2".to_owned(), "claimed", 0),
            ("o3".to_owned(), "pending", 0),
            ("o4".to_owned(), "pending", 0),
        ],
        "the deliveries as the schema-7 code left them"
    );

    let dead = Arc::new(InMemoryTransport::new());
    dead.fail_all(Fault::Connection);
    let report = service(&repo, dead).resume(&batch).await.unwrap();
    assert!(
        matches!(report.stopped, Some(StopReason::Unreachable { .. })),
        "{report:?}"
    );
    assert_eq!((report.sent, report.pending), (1, 3), "{report:?}");
    drop(repo);
    let repo = SqliteRepository::open(&path).await.unwrap();
    assert_eq!(
        states(&repo, &batch).await,
        vec![
            ("o1".to_owned(), "sent", 0),
            ("o2".to_owned(), "pending", 1),
            ("o3".to_owned(), "pending", 1),
            ("o4".to_owned(), "pending", 1),
        ],
        "one unreachable run each, kept in the file"
    );

    let live = Arc::new(InMemoryTransport::new());
    let report = service(&repo, live.clone()).resume(&batch).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.sent, 4);
    assert_eq!(live.messages().len(), 3);
}
