//! SQLite failures keep their cause: a full disk, a write lock held by another
//! connection and a dropped table each come back as a `RepositoryError` whose source
//! chain says what happened and ends in the `rusqlite::Error`, and nothing of the
//! failed call is kept. (A read-only file is driven through the CLI, in
//! `tests/cli_failures.rs`, where it can run without root's override.)
#![cfg(feature = "sqlite")]

mod small_disk;

use std::time::{Duration, Instant};

use owner_access::SqliteRepository;
use owner_access::domain::{Community, CommunityId, Owner, OwnerId, Page, PropertyId, Timestamp};
use owner_access::prelude::*;
use owner_access::repository::RepositoryError;

fn chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        out.push(cause.to_string());
        next = cause.source();
    }
    out
}

fn sqlite_code(e: &dyn std::error::Error) -> Option<rusqlite::ErrorCode> {
    let mut next = e.source();
    while let Some(cause) = next {
        if let Some(found) = cause.downcast_ref::<rusqlite::Error>() {
            return found.sqlite_error_code();
        }
        next = cause.source();
    }
    None
}

fn owners(from: usize, n: usize) -> Vec<Owner> {
    (from..from + n)
        .map(|i| {
            Owner::new(
                OwnerId::new(format!("o{i:06}")).unwrap(),
                CommunityId::new("maple").unwrap(),
                PropertyId::new(format!("u{i:06}")).unwrap(),
                "Ann-Marie Josephine",
                "Lee-Whitaker",
            )
            .with_property_address(format!("{i} Elm Street, Springfield"))
            .with_primary_email(format!("owner{i}@example.org"))
        })
        .collect()
}

async fn stored(repo: &SqliteRepository) -> usize {
    repo.community_owners(
        &CommunityId::new("maple").unwrap(),
        &owner_access::eligibility::OwnerFilter::all(),
    )
    .await
    .unwrap()
    .len()
}

#[tokio::test]
async fn a_full_disk_says_disk_full_and_keeps_nothing_of_the_call() {
    let Some(disk) = small_disk::SmallDisk::mount(640) else {
        return;
    };
    let repo = SqliteRepository::open(disk.path().join("state.db"))
        .await
        .unwrap();
    repo.upsert_community(&Community::new(CommunityId::new("maple").unwrap(), "Maple"))
        .await
        .unwrap();
    let mut written = 0;
    let err = loop {
        assert!(written < 100_000, "640 KB never filled up");
        match repo
            .upsert_owners(&owners(written, 500), Timestamp::from_unix_seconds(0))
            .await
        {
            Ok(()) => written += 500,
            Err(e) => break e,
        }
    };
    let text = chain(&err);
    assert!(
        matches!(err, RepositoryError::Unavailable { .. }),
        "{text:?}"
    );
    assert!(text.iter().any(|t| t == "disk full"), "{text:?}");
    assert_eq!(
        sqlite_code(&err),
        Some(rusqlite::ErrorCode::DiskFull),
        "{text:?}"
    );
    assert_eq!(stored(&repo).await, written, "the failed call kept nothing");
}

/// An import session that fills the disk keeps nothing: not its communities, not the
/// owners of its earlier chunks.
#[tokio::test]
async fn an_import_that_fills_the_disk_keeps_nothing() {
    let Some(disk) = small_disk::SmallDisk::mount(640) else {
        return;
    };
    let repo = SqliteRepository::open(disk.path().join("state.db"))
        .await
        .unwrap();
    let mut session = repo
        .begin_import(Timestamp::from_unix_seconds(0))
        .await
        .unwrap();
    session
        .upsert_communities(&[Community::new(CommunityId::new("maple").unwrap(), "Maple")])
        .await
        .unwrap();
    let mut written = 0;
    let err = loop {
        assert!(written < 100_000, "640 KB never filled up");
        match session.upsert_owners(&owners(written, 500)).await {
            Ok(()) => written += 500,
            Err(e) => break e,
        }
    };
    assert!(written > 0, "some chunks went in before the disk filled");
    let text = chain(&err);
    assert!(text.iter().any(|t| t == "disk full"), "{text:?}");
    // The session has ended: a commit now fails, and keeps nothing.
    assert!(session.commit().await.is_err());
    assert_eq!(stored(&repo).await, 0);
    assert!(
        repo.community(&CommunityId::new("maple").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_held_write_lock_says_database_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let repo = SqliteRepository::open(&path).await.unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let err = repo
        .upsert_owners(&owners(0, 3), Timestamp::from_unix_seconds(0))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "it waited for the lock first"
    );
    other.execute_batch("ROLLBACK").unwrap();
    let text = chain(&err);
    assert!(
        matches!(err, RepositoryError::Unavailable { .. }),
        "{text:?}"
    );
    assert!(
        text[1].starts_with("database is locked"),
        "the cause says what happened: {text:?}"
    );
    assert_eq!(
        sqlite_code(&err),
        Some(rusqlite::ErrorCode::DatabaseBusy),
        "{text:?}"
    );
    assert_eq!(stored(&repo).await, 0);
}

#[tokio::test]
async fn a_dropped_table_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let repo = SqliteRepository::open(&path).await.unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch("DROP TABLE owner_access_activity")
        .unwrap();
    let err = repo
        .activity(&CommunityId::new("maple").unwrap(), Page::first(10))
        .await
        .unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, RepositoryError::Backend { .. }), "{text:?}");
    assert!(
        text.iter()
            .any(|t| t.contains("no such table: owner_access_activity")),
        "{text:?}"
    );
    assert!(sqlite_code(&err).is_some(), "{text:?}");
}
