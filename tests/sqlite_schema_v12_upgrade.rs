//! A file written by the schema-12 code (each owner's invitation state on their row
//! of `owners`, `tests/fixtures/schema_v12.db`, see its README) opens with this build,
//! is migrated once, and every owner keeps their history: an invited owner's state is
//! the store's now, a registered owner stays registered at the same time. The roster,
//! its Invited tab and the resend to the invited see them, and a new message counts on
//! from the migrated state.
#![cfg(feature = "sqlite")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use owner_access::adapters::sqlite::{SCHEMA_VERSION, SqliteRepository};
use owner_access::domain::{
    AccessState, CommunityId, InvitationState, OwnerId, Registered, Timestamp,
};
use owner_access::eligibility::{AccessFilter, OwnerFilter};
use owner_access::prelude::*;
use owner_access::{InMemoryTransport, ManualClock, OwnerAccess, Selection};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema_v12.db");
/// When the fixture's first batch was sent: 2026-12-01T12:00:00Z.
const START: i64 = 1_796_126_400;
const TTL: Duration = Duration::from_secs(14 * 24 * 3600);

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_seconds(START + seconds)
}

fn oid(id: &str) -> OwnerId {
    OwnerId::new(id).unwrap()
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

/// The columns of the owners' table: `owners` in the whole-file schema,
/// `owner_access_owners` once the file is in parts.
fn owner_columns(path: &Path, table: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn service(repo: &SqliteRepository, clock: &Arc<ManualClock>) -> OwnerAccess {
    OwnerAccess::builder(Arc::new(repo.clone()), Arc::new(InMemoryTransport::new()))
        .sender("Owner Portal <no-reply@example.com>")
        .portal_url("https://portal.example.com/register")
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn ids(selection: &Selection) -> Vec<String> {
    selection.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn a_schema_12_file_keeps_every_owners_invitation_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_of_fixture(dir.path());
    assert_eq!(user_version(&path), 12, "the fixture is of schema 12");
    assert!(owner_columns(&path, "owners").contains(&"invited_count".to_owned()));
    let repo = SqliteRepository::open(&path).await.unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let columns = owner_columns(&path, "owner_access_owners");
    assert!(
        columns.contains(&"registered".to_owned()) && !columns.contains(&"access".to_owned()),
        "the owners keep only the host's fields: {columns:?}"
    );

    let everyone: Vec<OwnerId> = ["o1", "o2", "o3", "o4", "o5"].map(oid).into();
    let mut states = repo.invitation_states(&everyone).await.unwrap();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    let o1 = InvitationState {
        first_at: at(0),
        last_at: at(3600),
        count: 2,
        expires_at: at(3600) + TTL,
    };
    let o2 = InvitationState {
        first_at: at(0),
        last_at: at(0),
        count: 1,
        expires_at: at(0) + TTL,
    };
    assert_eq!(states, [(oid("o1"), o1), (oid("o2"), o2)]);
    let registered: Vec<(String, Option<Registered>)> = repo
        .owners(&everyone)
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.id.to_string(), o.registered))
        .collect();
    assert_eq!(
        registered,
        [
            ("o1".to_owned(), None),
            ("o2".to_owned(), None),
            ("o3".to_owned(), Some(Registered { at: Some(at(600)) })),
            ("o4".to_owned(), Some(Registered { at: None })),
            ("o5".to_owned(), None),
        ]
    );

    let community = CommunityId::new("twelve").unwrap();
    let clock = Arc::new(ManualClock::new(at(4000)));
    let service = service(&repo, &clock);
    let roster = service
        .roster(&community, &OwnerFilter::all())
        .await
        .unwrap();
    let c = roster.counts;
    assert_eq!(
        (c.not_invited, c.invited, c.expired, c.registered),
        (1, 2, 0, 2)
    );
    let row = roster
        .rows
        .iter()
        .find(|r| r.owner.id == oid("o1"))
        .unwrap();
    assert_eq!(
        (row.state, row.invitation),
        (AccessState::Invited, Some(o1))
    );
    let invited_tab = service
        .roster(
            &community,
            &OwnerFilter::all().with_access(AccessFilter::Invited),
        )
        .await
        .unwrap();
    let mut tab: Vec<String> = invited_tab
        .rows
        .iter()
        .map(|r| r.owner.id.to_string())
        .collect();
    tab.sort();
    assert_eq!(tab, ["o1", "o2"]);
    let resend = service.compose_resend_to_invited(&community).await.unwrap();
    assert_eq!(ids(&resend.selection), ["o1", "o2"]);

    // Past o2's link (and before o1's): o2 shows as expired; a new message to o2
    // counts on from the migrated state.
    clock.set(at(0) + TTL + Duration::from_secs(1));
    let roster = service
        .roster(&community, &OwnerFilter::all())
        .await
        .unwrap();
    let row = roster
        .rows
        .iter()
        .find(|r| r.owner.id == oid("o2"))
        .unwrap();
    assert_eq!(row.state, AccessState::Expired);
    let invite = service
        .compose(&community, &Selection::single(oid("o2")))
        .await
        .unwrap();
    let report = service
        .send(service.review(&invite).await.unwrap())
        .await
        .unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    drop(service);
    drop(repo);
    let repo = SqliteRepository::open(&path).await.unwrap();
    let now = clock.now();
    assert_eq!(
        repo.invitation_states(&[oid("o2")]).await.unwrap(),
        [(
            oid("o2"),
            InvitationState {
                first_at: at(0),
                last_at: now,
                count: 2,
                expires_at: now + TTL,
            }
        )]
    );
}
