//! One SQLite file holding a host's own tables, the crate's directory and the crate's
//! store: each part's tables are its own (`owner_access_…`), with its version in
//! `owner_access_schema`; the host's tables, rows, `application_id` and
//! `user_version` are left as they were; a name the crate needs that the host took
//! is refused with the file untouched, as is a part written by a newer version; and
//! handles opening one fresh file at once, in tasks or in processes, migrate it once.
#![cfg(all(feature = "sqlite", feature = "testing"))]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use owner_access::adapters::sqlite::{
    DIRECTORY_VERSION, STORE_VERSION, SqliteDirectory, SqliteRepository, SqliteStore,
};
use owner_access::domain::{Community, CommunityId, Draft, DraftId, Owner, OwnerId, PropertyId};
use owner_access::eligibility::OwnerFilter;
use owner_access::prelude::*;
use owner_access::repository::RepositoryError;
use owner_access::testing::{DIRECTORY_CHECKS, directory_conformance, seed_through_upserts};
use owner_access::token::token_from_link;
use owner_access::{Clock, InMemoryTransport, OwnerAccess, Selection, SystemClock};
use rusqlite::Connection;

const PORTAL: &str = "https://portal.example.com/register";

/// A host's database: its own `owners` and `units` tables (the first with a name the
/// crate's tables had before they were prefixed), rows, an index, a view, a trigger,
/// and its own `application_id` and `user_version`.
fn host_file(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA application_id = 0x484F5354;
         PRAGMA user_version = 7;
         CREATE TABLE owners (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE units (code TEXT PRIMARY KEY, owner INTEGER REFERENCES owners (id));
         CREATE INDEX units_by_owner ON units (owner);
         CREATE VIEW owned AS SELECT o.name, u.code FROM owners o JOIN units u ON u.owner = o.id;
         CREATE TRIGGER owners_named BEFORE INSERT ON owners WHEN NEW.name = ''
         BEGIN SELECT RAISE(ABORT, 'a name'); END;
         INSERT INTO owners (id, name) VALUES (1, 'Ann'), (2, 'Bo');
         INSERT INTO units (code, owner) VALUES ('1A', 1), ('1B', 2), ('2A', NULL);",
    )
    .unwrap();
}

/// What the host owns in a file.
#[derive(Debug, PartialEq)]
struct HostState {
    /// Each of its objects' name and SQL.
    objects: Vec<(String, Option<String>)>,
    /// Its rows, as text.
    rows: Vec<String>,
    application_id: i64,
    user_version: i64,
}

fn host_state(path: &Path) -> HostState {
    let conn = Connection::open(path).unwrap();
    let objects = conn
        .prepare(
            "SELECT name, sql FROM sqlite_schema
             WHERE name NOT LIKE 'owner_access_%' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let rows = conn
        .prepare(
            "SELECT 'owner ' || id || ' ' || name FROM owners
             UNION ALL SELECT 'unit ' || code || ' ' || coalesce(owner, '-') FROM units
             ORDER BY 1",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let app: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    HostState {
        objects,
        rows,
        application_id: app,
        user_version: version,
    }
}

/// The crate's objects in a file (type and name), sorted.
fn crate_objects(path: &Path) -> Vec<(String, String)> {
    Connection::open(path)
        .unwrap()
        .prepare(
            "SELECT type, name FROM sqlite_schema WHERE name LIKE 'owner\\_access\\_%' ESCAPE '\\'
             ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn part_versions(path: &Path) -> BTreeMap<String, i64> {
    Connection::open(path)
        .unwrap()
        .prepare("SELECT part, version FROM owner_access_schema")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn tables(objects: &[(String, String)]) -> Vec<&str> {
    objects
        .iter()
        .filter(|(kind, _)| kind == "table")
        .map(|(_, name)| name.as_str())
        .collect()
}

fn community() -> CommunityId {
    CommunityId::new("maple-grove").unwrap()
}

fn owners(n: usize) -> Vec<Owner> {
    (0..n)
        .map(|i| {
            Owner::new(
                OwnerId::new(format!("o{i}")).unwrap(),
                community(),
                PropertyId::new(format!("unit-{i}")).unwrap(),
                format!("First{i}"),
                format!("Last{i}"),
            )
            .with_primary_email(format!("owner{i}@example.org"))
        })
        .collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opens_beside_a_hosts_tables_and_leaves_them_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.db");
    host_file(&path);
    let before = host_state(&path);

    let store = SqliteStore::open(&path).await.unwrap();
    let draft = Draft {
        id: DraftId::new("d1").unwrap(),
        invite: owner_access::invite::Invite {
            community: community(),
            selection: Selection::of([OwnerId::new("o1").unwrap()]),
            subject: "Register".into(),
            text_body: Some("{{registration_link}}".into()),
            html_body: None,
            reply_to: None,
            summary_to: None,
            attachments: Vec::new(),
            draft: None,
            from: None,
            portal_url: None,
        },
        created_at: SystemClock.now(),
        updated_at: SystemClock.now(),
    };
    store.save_draft(&draft).await.unwrap();
    drop(store);

    assert_eq!(
        host_state(&path),
        before,
        "the host's objects, rows and pragmas"
    );
    let objects = crate_objects(&path);
    let tables = tables(&objects);
    assert!(tables.contains(&"owner_access_tokens"), "{tables:?}");
    assert!(tables.contains(&"owner_access_deliveries"), "{tables:?}");
    assert!(tables.contains(&"owner_access_schema"), "{tables:?}");
    assert!(
        !tables.contains(&"owner_access_owners") && !tables.contains(&"owner_access_communities"),
        "a store alone creates no directory tables: {tables:?}"
    );
    assert_eq!(
        part_versions(&path),
        BTreeMap::from([("store".to_owned(), STORE_VERSION)])
    );
    // Reopened: nothing to migrate, the draft is there.
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.draft(&draft.id).await.unwrap().unwrap().id, draft.id);
    assert_eq!(
        store.to_string(),
        format!("SQLite store {}", path.display())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_and_a_store_share_one_file_with_a_host() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    host_file(&path);
    let before = host_state(&path);
    let directory = Arc::new(SqliteDirectory::open(&path).await.unwrap());
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    directory
        .upsert_community(&Community::new(community(), "Maple Grove HOA"))
        .await
        .unwrap();
    directory
        .upsert_owners(&owners(3), SystemClock.now())
        .await
        .unwrap();
    let transport = Arc::new(InMemoryTransport::new());
    let service = OwnerAccess::builder_with(directory.clone(), store.clone(), transport.clone())
        .sender("Owner Portal <no-reply@example.com>")
        .portal_url(PORTAL)
        .build()
        .unwrap();
    let roster = service
        .roster(&community(), &OwnerFilter::unregistered_with_email())
        .await
        .unwrap();
    let invite = service
        .compose(&community(), &Selection::all_eligible(&roster))
        .await
        .unwrap();
    let report = service
        .send(service.review(&invite).await.unwrap())
        .await
        .unwrap();
    assert_eq!(report.sent, 3);
    let token = token_in(&transport.messages()[0].bytes);
    let registration = service.redeem(&token).await.unwrap();
    assert!(
        directory
            .owners(std::slice::from_ref(&registration.owner.id))
            .await
            .unwrap()[0]
            .is_registered(),
        "the directory's table holds the registration"
    );

    // The same file as one repository: both parts, already at their versions.
    let both = SqliteRepository::open(&path).await.unwrap();
    let roster = OwnerAccess::builder(Arc::new(both), transport.clone())
        .sender("Owner Portal <no-reply@example.com>")
        .portal_url(PORTAL)
        .build()
        .unwrap()
        .roster(&community(), &OwnerFilter::all())
        .await
        .unwrap();
    assert_eq!(
        (roster.counts.invited, roster.counts.registered),
        (2, 1),
        "{:?}",
        roster.counts
    );
    assert_eq!(
        part_versions(&path),
        BTreeMap::from([
            ("directory".to_owned(), DIRECTORY_VERSION),
            ("store".to_owned(), STORE_VERSION)
        ])
    );
    assert_eq!(host_state(&path), before);
}

/// The registration token in a captured message's text part (at any depth).
fn token_in(bytes: &[u8]) -> String {
    fn text(part: &mailparse::ParsedMail<'_>) -> Option<String> {
        if part.ctype.mimetype == "text/plain" {
            return part.get_body().ok();
        }
        part.subparts.iter().find_map(text)
    }
    let message = mailparse::parse_mail(bytes).unwrap();
    let text = text(&message).unwrap();
    token_from_link(&text)
        .expect("a link in the message")
        .to_owned()
}

/// The directory suite against a directory that shares its file with a store and a
/// host's tables, and against one alone in its file (which has no store table to
/// touch: an upsert that changes an address leaves the links to the store's check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_suite_passes_beside_a_store_and_a_host_and_alone() {
    let dir = tempfile::tempdir().unwrap();
    for beside_a_store in [true, false] {
        let made = std::sync::atomic::AtomicUsize::new(0);
        let root = dir.path().to_path_buf();
        directory_conformance(|seed| {
            let n = made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = root.join(format!("suite-{beside_a_store}-{n}.db"));
            async move {
                if beside_a_store {
                    host_file(&path);
                    drop(SqliteStore::open(&path).await.unwrap());
                }
                let directory = SqliteDirectory::open(&path).await.unwrap();
                seed_through_upserts(&directory, &seed).await.unwrap();
                // A second address for every owner, through the upsert: the path that
                // closes invitations when the store is in the same handle.
                let mut moved = seed.owners.clone();
                for owner in &mut moved {
                    owner.primary_email = owner.primary_email.as_ref().map(|e| format!("x{e}"));
                }
                directory
                    .upsert_owners(&moved, SystemClock.now())
                    .await
                    .unwrap();
                seed_through_upserts(&directory, &seed).await.unwrap();
                directory
            }
        })
        .await
        .unwrap_or_else(|failures| panic!("beside a store: {beside_a_store}: {failures:#?}"));
        assert_eq!(
            made.load(std::sync::atomic::Ordering::SeqCst),
            DIRECTORY_CHECKS.len()
        );
    }
}

/// A file of the whole-file schema opened by a directory alone (or a store alone) is
/// converted whole: both parts at version 1 (the opened one then migrated to this
/// build's), every pending batch kept for the store.
#[tokio::test]
async fn a_whole_file_schema_opened_by_one_part_is_converted_whole() {
    let dir = tempfile::tempdir().unwrap();
    for handle in ["directory", "store"] {
        let path = dir.path().join(format!("v12-{handle}.db"));
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema_v12.db"),
            &path,
        )
        .unwrap();
        let batches: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM batches", [], |r| r.get(0))
            .unwrap();
        assert!(batches > 0, "the fixture has batches");
        match handle {
            "directory" => drop(SqliteDirectory::open(&path).await.unwrap()),
            _ => drop(SqliteStore::open(&path).await.unwrap()),
        }
        // Converted at version 1, then the opened part migrated on: the other part
        // is migrated by the first handle that opens it.
        let store_version = if handle == "store" { STORE_VERSION } else { 1 };
        assert_eq!(
            part_versions(&path),
            BTreeMap::from([
                ("directory".to_owned(), DIRECTORY_VERSION),
                ("store".to_owned(), store_version)
            ]),
            "{handle}"
        );
        let after: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM owner_access_batches", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(after, batches, "{handle}");
        let store = SqliteStore::open(&path).await.unwrap();
        let community = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT community FROM owner_access_batches LIMIT 1",
                [],
                |r| r.get::<_, String>(0),
            )
            .unwrap();
        assert_eq!(
            store
                .batches(&CommunityId::new(community).unwrap())
                .await
                .unwrap()
                .len() as i64,
            batches,
            "{handle}: the store reads the converted batches"
        );
    }
}

/// A host object that has a name a part needs: refused with `NameTaken`, the file
/// byte-identical and nothing created beside it.
#[tokio::test]
async fn a_taken_name_is_refused_and_the_file_left_as_it_was() {
    let cases = [
        (
            "CREATE VIEW owner_access_tokens AS SELECT 1 AS hash",
            "store",
            "owner_access_tokens",
        ),
        (
            "CREATE TABLE owner_access_schema (name TEXT, value TEXT)",
            "store",
            "owner_access_schema",
        ),
        (
            "CREATE TABLE owner_access_owners (id INTEGER PRIMARY KEY)",
            "directory",
            "owner_access_owners",
        ),
        (
            "CREATE INDEX owner_access_deliveries_by_state ON units (owner)",
            "both",
            "owner_access_deliveries_by_state",
        ),
    ];
    for (sql, handle, taken) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.db");
        host_file(&path);
        Connection::open(&path).unwrap().execute_batch(sql).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let result = match handle {
            "store" => SqliteStore::open(&path).await.map(drop),
            "directory" => SqliteDirectory::open(&path).await.map(drop),
            _ => SqliteRepository::open(&path).await.map(drop),
        };
        match result {
            Err(RepositoryError::NameTaken { store, name }) => {
                assert_eq!(name, taken, "{sql}");
                assert!(store.contains("host.db"), "{store}");
            }
            other => panic!("{sql}: {other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{sql}");
        assert_eq!(names_in(dir.path()), ["host.db"], "{sql}");
    }
}

/// A part at a version this build does not know is refused unchanged; the other
/// part of the same file is the other handle's, and opens.
#[tokio::test]
async fn a_newer_part_is_refused_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.db");
    drop(SqliteStore::open(&path).await.unwrap());
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE owner_access_schema SET version = ?1 WHERE part = 'store'",
            [STORE_VERSION + 1],
        )
        .unwrap();
        conn.pragma_update(None, "journal_mode", "DELETE").unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    for result in [
        SqliteStore::open(&path).await.map(drop),
        SqliteRepository::open(&path).await.map(drop),
    ] {
        match result {
            Err(RepositoryError::Corrupt { message }) => {
                assert!(
                    message.contains("store part") && message.contains("newer owner-access"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(names_in(dir.path()), ["newer.db"]);
    }
    let directory = SqliteDirectory::open(&path).await.unwrap();
    directory
        .upsert_community(&Community::new(community(), "Maple Grove HOA"))
        .await
        .unwrap();
    assert_eq!(
        part_versions(&path),
        BTreeMap::from([
            ("directory".to_owned(), DIRECTORY_VERSION),
            ("store".to_owned(), STORE_VERSION + 1)
        ])
    );
}

/// Opens of one fresh file at once, in tasks: every one succeeds (a second migration
/// of a part would fail on its first `CREATE TABLE`), and each part is recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opens_of_one_fresh_file_at_once_migrate_it_once() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let path = dir.path().join(format!("race-{round}.db"));
        if round % 2 == 1 {
            host_file(&path);
        }
        let (a, b, c, d) = tokio::join!(
            SqliteStore::open(&path),
            SqliteStore::open(&path),
            SqliteDirectory::open(&path),
            SqliteRepository::open(&path),
        );
        a.unwrap();
        b.unwrap();
        c.unwrap();
        d.unwrap();
        assert_eq!(
            part_versions(&path),
            BTreeMap::from([
                ("directory".to_owned(), DIRECTORY_VERSION),
                ("store".to_owned(), STORE_VERSION)
            ]),
            "round {round}"
        );
    }
}

/// The child side of the next test: opens the file it is given with the handle it is
/// given, and exits. A no-op when run as a test of its own.
#[tokio::test]
async fn child_opens_a_file() {
    let (Ok(path), Ok(handle)) = (
        std::env::var("SQLITE_PARTS_CHILD_PATH"),
        std::env::var("SQLITE_PARTS_CHILD_HANDLE"),
    ) else {
        return;
    };
    match handle.as_str() {
        "store" => drop(SqliteStore::open(&path).await.unwrap()),
        "directory" => drop(SqliteDirectory::open(&path).await.unwrap()),
        _ => drop(SqliteRepository::open(&path).await.unwrap()),
    }
}

/// Processes opening one fresh host file at once: each succeeds, the parts are set up
/// once, the host's rows stay.
#[test]
fn processes_opening_one_fresh_file_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    for round in 0..4 {
        let path: PathBuf = dir.path().join(format!("processes-{round}.db"));
        host_file(&path);
        let before = host_state(&path);
        let children: Vec<_> = ["store", "directory", "store", "both"]
            .iter()
            .map(|handle| {
                std::process::Command::new(&exe)
                    .args(["--exact", "child_opens_a_file", "--test-threads=1"])
                    .env("SQLITE_PARTS_CHILD_PATH", &path)
                    .env("SQLITE_PARTS_CHILD_HANDLE", handle)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success(), "round {round}");
        }
        assert_eq!(
            part_versions(&path),
            BTreeMap::from([
                ("directory".to_owned(), DIRECTORY_VERSION),
                ("store".to_owned(), STORE_VERSION)
            ])
        );
        assert_eq!(host_state(&path), before);
    }
}

/// A file of the whole-file schema (the schema-12 fixture) becomes the two parts: the
/// same tables, indexes and triggers as a new file's, no table left unprefixed, both
/// parts recorded at version 1, `user_version` 1000.
#[tokio::test]
async fn a_whole_file_schema_becomes_the_parts_of_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("v12.db");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema_v12.db"),
        &old,
    )
    .unwrap();
    drop(SqliteRepository::open(&old).await.unwrap());
    let new = dir.path().join("new.db");
    drop(SqliteRepository::open(&new).await.unwrap());
    assert_eq!(normalised_schema(&old), normalised_schema(&new));
    let unprefixed: Vec<String> = Connection::open(&old)
        .unwrap()
        .prepare(
            "SELECT name FROM sqlite_schema
             WHERE name NOT LIKE 'owner_access_%' AND name NOT LIKE 'sqlite_%'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(unprefixed.is_empty(), "{unprefixed:?}");
    assert_eq!(part_versions(&old), part_versions(&new));
    let version: i64 = Connection::open(&old)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, owner_access::adapters::sqlite::SCHEMA_VERSION);
}

/// Each object's SQL with comments, quotes and layout taken out: a table renamed from
/// the whole-file schema keeps its text, with quotes around the new name and the
/// columns that `ALTER TABLE … ADD COLUMN` appended on one line.
fn normalised_schema(path: &Path) -> BTreeMap<String, (String, String)> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT type, name, coalesce(sql, '') FROM sqlite_schema")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .map(|(kind, name, sql)| {
        let without_comments: String = sql
            .lines()
            .map(|line| line.split("--").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(" ");
        let mut text = without_comments
            .replace('"', "")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for punctuation in ["(", ")", ","] {
            text = text
                .replace(&format!(" {punctuation}"), punctuation)
                .replace(&format!("{punctuation} "), punctuation);
        }
        (name, (kind, text))
    })
    .collect()
}
