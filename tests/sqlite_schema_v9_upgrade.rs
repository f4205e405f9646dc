//! A file written by the schema-9 code (before a delivery could be skipped,
//! `tests/fixtures/schema_v9.db`, see its README) opens with this build, is migrated
//! once, keeps every delivery's state, and its stopped batch resumes: an owner moved
//! to another community since is skipped (stored as `skipped` with its reason), the
//! other is sent.
#![cfg(feature = "sqlite")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use owner_access::adapters::sqlite::{SCHEMA_VERSION, SqliteRepository};
use owner_access::domain::{BatchId, CommunityId, DeliveryState, OwnerId, SkipReason, Timestamp};
use owner_access::prelude::*;
use owner_access::{InMemoryTransport, ManualClock, OwnerAccess};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema_v9.db");
const BATCH: &str = "b-90c57a336ac11e94ece64d71a69c2505";

/// A copy of the fixture, so the committed file is never changed.
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

#[tokio::test]
async fn a_schema_9_file_migrates_keeps_its_deliveries_and_resumes_with_skips() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_of_fixture(dir.path());
    assert_eq!(user_version(&path), 9, "the fixture is of schema 9");
    let repo = SqliteRepository::open(&path).await.unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let batch = BatchId::new(BATCH).unwrap();

    let deliveries = repo.deliveries(&batch).await.unwrap();
    let runs: Vec<u32> = deliveries.iter().map(|d| d.unreachable_runs).collect();
    assert_eq!(runs, [0, 0, 1, 1], "the unreachable runs are kept");
    let states: Vec<(String, DeliveryState)> = deliveries
        .into_iter()
        .map(|d| (d.owner.to_string(), d.state))
        .collect();
    assert!(
        matches!(&states[0], (o, DeliveryState::Failed { error, .. }) if o == "o1" && error.starts_with("550")),
        "{states:?}"
    );
    assert!(matches!(&states[1], (o, DeliveryState::Sent { .. }) if o == "o2"));
    assert_eq!(states[2], ("o3".to_owned(), DeliveryState::Pending));
    assert_eq!(states[3], ("o4".to_owned(), DeliveryState::Pending));

    // o4 moved to pine after the batch stopped.
    let mut o4 = repo
        .owner(&OwnerId::new("o4").unwrap())
        .await
        .unwrap()
        .unwrap();
    o4.community = CommunityId::new("pine").unwrap();
    let now = Timestamp::from_unix_seconds(1_796_126_400 + 3_600);
    repo.upsert_owners(&[o4], now).await.unwrap();

    let transport = Arc::new(InMemoryTransport::new());
    let service = OwnerAccess::builder(Arc::new(repo.clone()), transport.clone())
        .sender("Owner Portal <no-reply@example.com>")
        .portal_url("https://portal.example.com/register")
        .clock(Arc::new(ManualClock::new(now)))
        .build()
        .unwrap();
    let report = service.resume(&batch).await.unwrap();
    assert_eq!(report.sent, 2, "{report:?}");
    assert_eq!(report.pending, 0, "{report:?}");
    assert_eq!(report.failed.len(), 1, "o1's failure is kept: {report:?}");
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(report.skipped[0].owner.as_str(), "o4");
    assert_eq!(report.skipped[0].reason, SkipReason::Moved);
    assert_eq!(transport.messages().len(), 1, "only o3 was sent");

    // Stored, and read back after reopening the file.
    drop(service);
    drop(repo);
    let repo = SqliteRepository::open(&path).await.unwrap();
    let counts = repo.delivery_counts(&batch).await.unwrap();
    assert_eq!(
        (counts.sent, counts.failed, counts.skipped, counts.pending),
        (2, 1, 1, 0)
    );
    let skipped = repo.skipped_deliveries(&batch).await.unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(matches!(
        skipped[0].state,
        DeliveryState::Skipped {
            reason: SkipReason::Moved,
            ..
        }
    ));
}
