//! A file written by the schema-1 code (before claims were leases,
//! `tests/fixtures/schema_v1.db`, see its README) opens with this build, is migrated
//! once, and its batch resumes: the crashed sender's claims are kept for the ten
//! minutes that version promised them, then taken over, and the batch is settled.
#![cfg(all(feature = "sqlite", feature = "testing"))]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use owner_access::adapters::sqlite::{SCHEMA_VERSION, SqliteRepository};
use owner_access::domain::{BatchId, CommunityId, DeliveryState, OwnerId, SenderId, Timestamp};
use owner_access::prelude::*;
use owner_access::repository::{ClaimHolder, HeldClaims};
use owner_access::{Clock, InMemoryTransport, ManualClock, OwnerAccess, Progress, RunControl};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema_v1.db");

/// When the crashed sender of the fixture claimed `o5` and `o6`.
fn claimed_at() -> Timestamp {
    Timestamp::from_unix_seconds(1_795_701_660)
}

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

async fn the_batch(repo: &SqliteRepository) -> BatchId {
    let batches = repo
        .batches(&CommunityId::new("legacy").unwrap())
        .await
        .unwrap();
    assert_eq!(batches.len(), 1);
    batches[0].id.clone()
}

#[tokio::test]
async fn a_schema_1_file_opens_migrates_and_keeps_its_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_of_fixture(dir.path());
    assert_eq!(user_version(&path), 1, "the fixture is of schema 1");
    let repo = SqliteRepository::open(&path).await.unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let batch = the_batch(&repo).await;
    let legacy = SenderId::new("pre-lease").unwrap();
    let states: Vec<(String, DeliveryState)> = repo
        .deliveries(&batch)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.owner.to_string(), d.state))
        .collect();
    let lease_of_schema_1 = Duration::from_secs(600);
    for (owner, state) in &states {
        match owner.as_str() {
            "o1" | "o2" | "o4" => assert!(matches!(state, DeliveryState::Sent { .. }), "{owner}"),
            "o3" => assert!(matches!(state, DeliveryState::Failed { .. }), "{owner}"),
            "o5" | "o6" => assert_eq!(
                state,
                &DeliveryState::Claimed {
                    at: claimed_at(),
                    holder: legacy.clone(),
                    until: claimed_at() + lease_of_schema_1,
                },
                "a claim of schema 1 keeps the lease that version gave it"
            ),
            "o7" | "o8" => assert_eq!(state, &DeliveryState::Pending, "{owner}"),
            other => panic!("unexpected delivery {other}"),
        }
    }
    assert_eq!(states.len(), 8);
    assert_eq!(
        repo.held_claims(&batch, claimed_at()).await.unwrap(),
        HeldClaims {
            now: claimed_at(),
            holders: vec![ClaimHolder {
                sender: legacy.clone(),
                deliveries: 2,
                first_until: claimed_at() + lease_of_schema_1,
                last_until: claimed_at() + lease_of_schema_1,
            }],
        }
    );
    drop(repo);
    // Opened again: nothing left to migrate, the same deliveries.
    let again = SqliteRepository::open(&path).await.unwrap();
    let reread: Vec<(String, DeliveryState)> = again
        .deliveries(&batch)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.owner.to_string(), d.state))
        .collect();
    assert_eq!(reread, states);
}

#[tokio::test]
async fn a_batch_of_a_schema_1_file_resumes_once_its_old_claims_ran_out() {
    let dir = tempfile::tempdir().unwrap();
    let repo = SqliteRepository::open(copy_of_fixture(dir.path()))
        .await
        .unwrap();
    let batch = the_batch(&repo).await;
    // Resumed a minute after the crash: the old claims still have nine minutes.
    let clock = Arc::new(ManualClock::new(claimed_at() + Duration::from_secs(60)));
    let transport = Arc::new(InMemoryTransport::new());
    let service = OwnerAccess::builder(Arc::new(repo.clone()), transport.clone())
        .sender("Owner Portal <no-reply@example.com>")
        .portal_url("https://portal.example.com/register")
        .clock(clock.clone())
        .build()
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let control = RunControl::new().with_progress(move |p| sink.lock().unwrap().push(p.clone()));
    let report = service.resume_with(&batch, control).await.unwrap();
    assert_eq!(
        (
            report.sent,
            report.failed.len(),
            report.pending,
            &report.stopped
        ),
        (7, 1, 0, &None),
        "{report:?}"
    );
    let mut to: Vec<OwnerId> = transport
        .messages()
        .into_iter()
        .map(|m| m.envelope.tag.unwrap().owner.unwrap())
        .collect();
    to.sort();
    let want: Vec<OwnerId> = ["o5", "o6", "o7", "o8"]
        .iter()
        .map(|o| OwnerId::new(o).unwrap())
        .collect();
    assert_eq!(to, want, "only what was open is sent");
    assert!(clock.now() >= claimed_at() + Duration::from_secs(600));
    let waits: Vec<Progress> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Progress::Waiting { .. }))
        .cloned()
        .collect();
    assert_eq!(
        waits,
        vec![Progress::Waiting {
            held: 2,
            senders: 1,
            until: claimed_at() + Duration::from_secs(600),
        }]
    );
}
