//! A file written by the schema-6 code (before links waited for their message to be
//! accepted, `tests/fixtures/schema_v6.db`, see its README) opens with this build, is
//! migrated once, keeps every link as it was, and its batch resumes: a run that stops
//! before sending leaves the owners' links as they were; a run that sends makes the
//! new links live, keeps the links of the crashed sender's messages (they may have
//! been delivered) and revokes the older batch's.
#![cfg(feature = "sqlite")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use owner_access::adapters::memory::Fault;
use owner_access::adapters::sqlite::{SCHEMA_VERSION, SqliteRepository};
use owner_access::domain::{BatchId, DeliveryState, OwnerId, TokenRejection, TokenState};
use owner_access::prelude::*;
use owner_access::token::{hash_token, token_from_link};
use owner_access::{Error, InMemoryTransport, ManualClock, OwnerAccess};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema_v6.db");
const LINKS: &str = include_str!("fixtures/schema_v6_links.txt");

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

/// The fixture's links in clear: `(kind, owner)` → token, where kind is `first` (the
/// sent batch) or `crash` (the tokens the dead sender stored for the second batch).
fn link(kind: &str, owner: &str) -> String {
    LINKS
        .lines()
        .find_map(|l| {
            let mut words = l.split(' ');
            (words.next() == Some(kind) && words.next() == Some(owner))
                .then(|| words.next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("no {kind} link of {owner} in the fixture"))
}

fn second_batch() -> BatchId {
    let id = LINKS
        .lines()
        .find_map(|l| l.strip_prefix("batch "))
        .expect("the second batch's id");
    BatchId::new(id).unwrap()
}

async fn state_of(repo: &SqliteRepository, token: &str) -> TokenState {
    repo.token(&hash_token(token))
        .await
        .unwrap()
        .expect("a stored token")
        .state
}

fn service(repo: &SqliteRepository, transport: &Arc<InMemoryTransport>) -> OwnerAccess {
    // Two hours after the fixture's first batch: the dead sender's one-minute leases
    // (taken an hour in) have run out.
    let clock = Arc::new(ManualClock::new(
        owner_access::domain::Timestamp::from_unix_seconds(1_795_701_600 + 7_200),
    ));
    OwnerAccess::builder(Arc::new(repo.clone()), transport.clone())
        .sender("Owner Portal <no-reply@example.com>")
        .portal_url("https://portal.example.com/register")
        .clock(clock)
        .build()
        .unwrap()
}

fn token_in(message: &[u8]) -> String {
    let parsed = mailparse::parse_mail(message).unwrap();
    let mut stack = vec![parsed];
    while let Some(part) = stack.pop() {
        if part.ctype.mimetype == "text/plain" {
            let text = part.get_body().unwrap();
            return token_from_link(&text)
                .expect("a registration link")
                .to_owned();
        }
        stack.extend(part.subparts);
    }
    panic!("no text part");
}

#[tokio::test]
async fn a_schema_6_file_migrates_keeps_its_links_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_of_fixture(dir.path());
    assert_eq!(user_version(&path), 6, "the fixture is of schema 6");
    let repo = SqliteRepository::open(&path).await.unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);

    // Every link as schema 6 left it: o1's and o2's first links were revoked when
    // the dead sender claimed them (what that code did), their crash tokens are live,
    // o3 (never claimed) keeps its first link.
    let revoked_at_claim = |s: TokenState| matches!(s, TokenState::Revoked { .. });
    assert!(revoked_at_claim(
        state_of(&repo, &link("first", "o1")).await
    ));
    assert!(revoked_at_claim(
        state_of(&repo, &link("first", "o2")).await
    ));
    assert_eq!(
        state_of(&repo, &link("first", "o3")).await,
        TokenState::Live
    );
    assert_eq!(
        state_of(&repo, &link("crash", "o1")).await,
        TokenState::Live
    );
    assert_eq!(
        state_of(&repo, &link("crash", "o2")).await,
        TokenState::Live
    );
    let batch = second_batch();

    // A resume that stops at once (authentication refused) takes nothing away.
    let refusing = Arc::new(InMemoryTransport::new());
    refusing.fail_all(Fault::Fatal);
    let stopped = service(&repo, &refusing).resume(&batch).await.unwrap();
    assert!(stopped.stopped.is_some(), "{stopped:?}");
    assert_eq!(stopped.sent, 0, "{stopped:?}");
    let still = service(&repo, &refusing);
    assert_eq!(
        still.verify(&link("first", "o3")).await.unwrap().owner.id,
        OwnerId::new("o3").unwrap(),
        "o3's working link after a run that sent nothing"
    );
    for o in ["o1", "o2"] {
        still
            .verify(&link("crash", o))
            .await
            .unwrap_or_else(|e| panic!("{o}'s crash link after a stopped run: {e}"));
    }

    // A resume that sends: the new links work, the crashed sender's links keep
    // working (their messages may have been delivered), o3's first link is
    // superseded.
    let transport = Arc::new(InMemoryTransport::new());
    let service = service(&repo, &transport);
    let report = service.resume(&batch).await.unwrap();
    assert_eq!((report.sent, report.pending), (3, 0), "{report:?}");
    for d in repo.deliveries(&batch).await.unwrap() {
        assert!(matches!(d.state, DeliveryState::Sent { .. }), "{d:?}");
    }
    for m in transport.messages() {
        let owner = m.envelope.tag.clone().unwrap().owner.unwrap();
        let verified = service.verify(&token_in(&m.bytes)).await.unwrap();
        assert_eq!(verified.owner.id, owner, "the new link works");
    }
    for o in ["o1", "o2"] {
        service
            .verify(&link("crash", o))
            .await
            .unwrap_or_else(|e| panic!("{o}'s crash link after the resume: {e}"));
    }
    match service.verify(&link("first", "o3")).await {
        Err(Error::InvalidToken { reason }) => assert_eq!(reason, TokenRejection::Revoked),
        other => panic!("o3's first link must be superseded: {other:?}"),
    }
    drop(service);
    drop(repo);
    // Opened again: nothing left to migrate.
    let again = SqliteRepository::open(&path).await.unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(again.delivery_counts(&batch).await.unwrap().sent, 3);
}
