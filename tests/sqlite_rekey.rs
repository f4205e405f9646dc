//! A database written before the delivered-address key (schema versions 1 to 3,
//! keys the trimmed lower-cased text) is re-keyed when opened: each file is made here
//! with the earlier schema's SQL exactly as shipped and rows keyed as those versions
//! keyed them, then opened by this build.
#![cfg(feature = "sqlite")]

use std::path::Path;

use owner_access::adapters::sqlite::{SCHEMA_VERSION, SqliteRepository};
use owner_access::domain::{CommunityId, OwnerId, PropertyId, delivered_key};
use owner_access::eligibility::{Ineligible, OwnerFilter};
use owner_access::prelude::*;
use owner_access::repository::EmailEdit;
use owner_access::{Error, InMemoryTransport, OwnerAccess};

/// The SQL of the schema versions before the re-key, in order.
const EARLIER_SCHEMA: [&str; 3] = [
    include_str!("../src/adapters/sqlite/schema/legacy/0001_initial.sql"),
    include_str!("../src/adapters/sqlite/schema/legacy/0002_invite_sender.sql"),
    include_str!("../src/adapters/sqlite/schema/legacy/0003_text_from_html.sql"),
];

/// (owner id, primary email) as the host stored them.
const OWNERS: [(&str, Option<&str>); 12] = [
    ("o0", Some("y@example.org")),
    ("o1", Some("y@ｅｘａｍｐｌｅ.org")),
    ("o2", Some("z@example.org")),
    ("o3", Some("z@exam\u{AD}ple.org")),
    ("o4", Some("x@bücher.example")),
    ("o5", Some("x@xn--bcher-kva.example")),
    ("o6", Some("\"q\"@example.org")),
    ("o7", Some("q@example.org")),
    ("o8", Some(" A@Example.org ")),
    ("o9", Some("NOT AN ADDRESS")),
    ("o10", Some("   ")),
    ("o11", None),
];

/// The key schema versions 1 to 3 stored: `trim().to_lowercase()`, NULL when blank.
fn old_key(email: Option<&str>) -> Option<String> {
    email
        .map(|e| e.trim().to_lowercase())
        .filter(|k| !k.is_empty())
}

/// A file at schema `version` (1 to 3), with the owners keyed as it keyed them.
fn write_earlier_file(path: &Path, version: usize) {
    let conn = rusqlite::Connection::open(path).unwrap();
    for sql in &EARLIER_SCHEMA[..version] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "application_id", 0x4F41_6363_i64)
        .unwrap();
    conn.pragma_update(None, "user_version", version as i64)
        .unwrap();
    conn.execute(
        "INSERT INTO communities (id, name, reply_to) VALUES ('c1', 'Maple', NULL)",
        [],
    )
    .unwrap();
    for (id, email) in OWNERS {
        conn.execute(
            "INSERT INTO owners (id, community, property, first_name, last_name,
                 property_address, primary_email, email_key, access)
             VALUES (?1, 'c1', ?2, 'F', 'L', '', ?3, ?4, 'not_invited')",
            rusqlite::params![id, format!("unit-{id}"), email, old_key(email)],
        )
        .unwrap();
    }
}

/// Each owner's stored key, from `table` (`owners` before the file is opened,
/// `owner_access_owners` after).
fn stored_keys(path: &Path, table: &str) -> Vec<(String, Option<String>)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT id, email_key FROM {table} ORDER BY rowid"))
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn a_version_1_file_is_rekeyed_by_the_delivered_address() {
    rekeyed_from(1).await;
}

#[tokio::test]
async fn a_file_of_the_version_before_is_rekeyed_by_the_delivered_address() {
    rekeyed_from(EARLIER_SCHEMA.len()).await;
}

async fn rekeyed_from(version: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("v{version}.db"));
    write_earlier_file(&path, version);
    // The earlier keys saw no sharing among the pairs.
    let before = stored_keys(&path, "owners");
    assert_ne!(before[0].1, before[1].1);

    let repo = SqliteRepository::open(&path).await.unwrap();
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    const { assert!(SCHEMA_VERSION >= 2) };
    let after = stored_keys(&path, "owner_access_owners");
    let want: Vec<(String, Option<String>)> = OWNERS
        .iter()
        .map(|(id, email)| {
            let key = email.map(delivered_key).filter(|k| !k.is_empty());
            (id.to_string(), key)
        })
        .collect();
    assert_eq!(after, want);
    assert_eq!(after[1].1.as_deref(), Some("y@example.org"));
    assert_eq!(after[9].1.as_deref(), Some("not an address"));
    assert_eq!(after[10].1, None);

    // The roster reads the new keys: each pair is shared, naming the partner.
    let service = OwnerAccess::builder(
        std::sync::Arc::new(repo.clone()),
        std::sync::Arc::new(InMemoryTransport::new()),
    )
    .sender("no-reply@portal.example.com")
    .portal_url("https://portal.example.com/register")
    .build()
    .unwrap();
    let roster = service
        .roster(&CommunityId::new("c1").unwrap(), &OwnerFilter::all())
        .await
        .unwrap();
    for row in &roster.rows {
        let n: usize = row.owner.id.as_str()[1..].parse().unwrap();
        if n < 8 {
            assert_eq!(
                row.eligibility.reason(),
                Some(&Ineligible::SharedEmail {
                    with: vec![PropertyId::new(format!("unit-o{}", n ^ 1)).unwrap()]
                }),
                "{}",
                row.owner.id
            );
        }
    }
    let eligible: Vec<&str> = roster.eligible().map(|r| r.owner.id.as_str()).collect();
    assert_eq!(eligible, ["o8"]);
    // Mass edit sees the re-keyed index.
    let err = service
        .mass_edit_emails(
            &CommunityId::new("c1").unwrap(),
            &[EmailEdit {
                owner: OwnerId::new("o11").unwrap(),
                email: Some("a@ｅxample.org".into()),
            }],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MassEditRejected { .. }), "{err:?}");
    drop(service);
    drop(repo);

    // Opening again changes nothing more, and the file is sound.
    let bytes_keys = stored_keys(&path, "owner_access_owners");
    let again = SqliteRepository::open(&path).await.unwrap();
    assert_eq!(stored_keys(&path, "owner_access_owners"), bytes_keys);
    let holders = again
        .email_holders(&["q@example.org".into()])
        .await
        .unwrap();
    assert_eq!(holders.len(), 2);
    let check: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
