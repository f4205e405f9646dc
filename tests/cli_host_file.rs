//! The CLI's `--db` on a host's own SQLite file: the crate's tables go in beside the
//! host's, which keep their rows, and the commands answer exactly as on a file of
//! their own; a file where a name the crate needs is taken is refused, unchanged.
#![cfg(all(feature = "smtp", feature = "sqlite"))]

mod cli_support;

use cli_support::*;

/// Puts a host's tables and rows into the session's `state.db` before the CLI first
/// opens it; one of them is called `owners`, as a table of the crate was before its
/// tables were prefixed.
fn host_tables(s: &Session, extra: &str) {
    let conn = rusqlite::Connection::open(s.path("state.db")).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA user_version = 42;
         CREATE TABLE owners (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE leases (unit TEXT PRIMARY KEY, owner INTEGER REFERENCES owners (id));
         INSERT INTO owners (id, name) VALUES (1, 'Ann'), (2, 'Bo');
         INSERT INTO leases (unit, owner) VALUES ('1A', 1), ('1B', 2);
         {extra}"
    ))
    .unwrap();
}

fn host_rows(s: &Session) -> (Vec<String>, i64) {
    let conn = rusqlite::Connection::open(s.path("state.db")).unwrap();
    let rows = conn
        .prepare(
            "SELECT id || ' ' || name FROM owners
             UNION ALL SELECT unit || ' ' || owner FROM leases ORDER BY 1",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let version = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    (rows, version)
}

#[test]
fn a_host_file_answers_as_a_file_of_its_own_and_keeps_its_rows() {
    let own = Session::new().imported();
    let host = Session::new();
    host_tables(&host, "");
    let before = host_rows(&host);
    let host = host.imported();
    for args in [
        &["roster", "--community", "maple", "--json"][..],
        &["roster", "--community", "maple"][..],
        &["activity", "--community", "maple"][..],
    ] {
        let (a, b) = (own.run(args), host.run(args));
        assert_eq!(a.status.code(), Some(0), "{args:?}");
        assert_eq!(b.status.code(), a.status.code(), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&b.stdout),
            String::from_utf8_lossy(&a.stdout),
            "{args:?}"
        );
    }
    assert_eq!(host_rows(&host), before);
}

#[test]
fn a_host_file_with_a_taken_name_is_refused_unchanged() {
    let s = Session::new();
    host_tables(
        &s,
        "CREATE VIEW owner_access_owners AS SELECT id, name FROM owners;",
    );
    let bytes = std::fs::read(s.path("state.db")).unwrap();
    let out = s.run(&[
        "import",
        "--communities",
        "communities.csv",
        "--owners",
        "owners.csv",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("owner_access_owners"), "{err}");
    assert_eq!(std::fs::read(s.path("state.db")).unwrap(), bytes);
    assert!(!s.path("state.db-wal").exists());
}
