//! Tests of the adapter's insides: error causes, query plans, and the cost of a
//! row's CHECK constraints.

use rusqlite::{Connection, ErrorCode};

use super::directory::{EMAIL_HOLDERS, SHARED_EMAIL_HOLDERS};
use super::rows::OWNER_COLUMNS;
use super::schema::{Part, SCHEMA_TABLE};
use super::store::{CLAIM, HELD_CLAIMS, RELEASE, RENEW};
use super::{SqliteDirectory, SqliteRepository, SqliteStore};
use crate::domain::{Community, CommunityId, Owner, OwnerId, PropertyId, Timestamp};
use crate::eligibility::OwnerFilter;
use crate::repository::{OwnerDirectory, OwnerRepository, RepositoryError};

/// The text of an error and every cause beneath it.
fn chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        out.push(cause.to_string());
        next = cause.source();
    }
    out
}

/// A database that reaches its size limit (SQLite's `max_page_count`, which fails
/// a write exactly as a full disk does) says "disk full", keeps SQLite's error as
/// the cause, and keeps nothing of the call.
#[tokio::test]
async fn a_full_database_says_disk_full_and_keeps_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let repo = SqliteRepository::open(dir.path().join("full.db"))
        .await
        .unwrap();
    let community = Community::new(CommunityId::new("c").unwrap(), "C");
    repo.upsert_community(&community).await.unwrap();
    {
        let conn = repo.inner.writer.lock().unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .unwrap();
    }
    let owners: Vec<Owner> = (0..2000)
        .map(|i| {
            Owner::new(
                OwnerId::new(format!("o{i}")).unwrap(),
                community.id.clone(),
                PropertyId::new(format!("u{i}")).unwrap(),
                "A long enough first name",
                "and a last name",
            )
            .with_primary_email(format!("owner{i}@example.org"))
        })
        .collect();
    let err = repo
        .upsert_owners(&owners, Timestamp::from_unix_seconds(0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RepositoryError::Unavailable { .. }),
        "{err:?}"
    );
    let text = chain(&err);
    assert_eq!(text[1], "disk full", "{text:?}");
    let mut found = None;
    let mut next = std::error::Error::source(&err);
    while let Some(cause) = next {
        found = found.or(cause.downcast_ref::<rusqlite::Error>());
        next = cause.source();
    }
    assert_eq!(
        found.and_then(rusqlite::Error::sqlite_error_code),
        Some(ErrorCode::DiskFull),
        "the rusqlite error is in the chain: {text:?}"
    );
    let stored = repo
        .community_owners(&community.id, &OwnerFilter::all())
        .await
        .unwrap();
    assert!(stored.is_empty(), "nothing of the failed call is kept");
}

/// The plan SQLite picks for a statement, one line per step.
/// Parameters are bound as NULL, so the statements the adapter runs can be
/// planned as they are written.
fn plan(conn: &Connection, sql: &str) -> String {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
    stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn set_based_lookups_use_the_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = SqliteRepository::open(dir.path().join("plan.db"))
        .await
        .unwrap();
    let conn = repo.inner.writer.lock().unwrap();
    let holders = plan(&conn, EMAIL_HOLDERS);
    assert!(
        holders.contains("INDEX owner_access_owners_by_email_key"),
        "{holders}"
    );
    let shared = plan(&conn, SHARED_EMAIL_HOLDERS);
    assert!(
        shared.contains("SEARCH o2")
            && shared.contains("COVERING INDEX owner_access_owners_by_email_key"),
        "the second holder is found in the index alone: {shared}"
    );
    let roster = plan(
        &conn,
        &format!("SELECT {OWNER_COLUMNS} FROM owner_access_owners WHERE community = 'c'"),
    );
    assert!(
        roster.contains("INDEX owner_access_owners_by_community"),
        "{roster}"
    );
    let claim = plan(&conn, CLAIM);
    assert!(
        claim.contains("USING PRIMARY KEY (batch=? AND owner=?)"),
        "the chosen rows are updated by key: {claim}"
    );
    assert_eq!(
        claim
            .matches("INDEX owner_access_deliveries_by_state")
            .count(),
        2,
        "pending ones and run-out leases are both found in the index: {claim}"
    );
    assert!(
        !claim.contains("TEMP B-TREE FOR ORDER BY"),
        "claims need no sort: {claim}"
    );
    for sql in [RENEW, RELEASE] {
        let plan = plan(&conn, sql);
        assert!(
            plan.contains("USING PRIMARY KEY (batch=? AND owner=?)"),
            "{sql}: {plan}"
        );
    }
    let held = plan(&conn, HELD_CLAIMS);
    assert!(
        held.contains("INDEX owner_access_deliveries_by_state"),
        "{held}"
    );
}

/// Writing a row checks the table's CHECK constraints; an `IN` list of three or
/// more values there makes SQLite build a temporary index on every write, which
/// cost a tenth of a send's CPU. No table's insert may open one.
#[tokio::test]
async fn writing_a_row_opens_no_temporary_index() {
    let dir = tempfile::tempdir().unwrap();
    let repo = SqliteRepository::open(dir.path().join("checks.db"))
        .await
        .unwrap();
    let conn = repo.inner.writer.lock().unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(tables.len() >= 8, "{tables:?}");
    for table in tables {
        let columns: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let sql = format!(
            "EXPLAIN INSERT INTO {table} ({}) VALUES ({})",
            columns.join(", "),
            vec!["?"; columns.len()].join(", ")
        );
        let opcodes: Vec<String> = conn
            .prepare(&sql)
            .unwrap()
            .query_map(
                rusqlite::params_from_iter(vec![rusqlite::types::Null; columns.len()]),
                |r| r.get(1),
            )
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            !opcodes.iter().any(|op| op == "OpenEphemeral"),
            "{table}: an insert opens a temporary index: {opcodes:?}"
        );
    }
}

/// Each part lists every table, index and trigger its migrations create (the names
/// that must be free before it is set up), and a new file holds nothing else but
/// `owner_access_schema`: every name starts with the prefix.
#[tokio::test]
async fn each_part_lists_the_objects_it_creates() {
    let dir = tempfile::tempdir().unwrap();
    for (parts, path) in [
        (vec![Part::Directory], dir.path().join("directory.db")),
        (vec![Part::Store], dir.path().join("store.db")),
        (
            vec![Part::Directory, Part::Store],
            dir.path().join("both.db"),
        ),
    ] {
        match parts.as_slice() {
            [Part::Directory] => drop(SqliteDirectory::open(&path).await.unwrap()),
            [Part::Store] => drop(SqliteStore::open(&path).await.unwrap()),
            _ => drop(SqliteRepository::open(&path).await.unwrap()),
        }
        let conn = Connection::open(&path).unwrap();
        let mut found: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        found.sort();
        let mut listed: Vec<String> = parts
            .iter()
            .flat_map(|p| p.objects().iter().map(|n| (*n).to_owned()))
            .chain([SCHEMA_TABLE.to_owned()])
            .collect();
        listed.sort();
        assert_eq!(found, listed, "{parts:?}");
        assert!(found.iter().all(|n| n.starts_with("owner_access_")));
    }
}
