//! When the store fails, the CLI says why: a read-only file, a write lock held by
//! another connection, a dropped table and a full disk each print their cause (exit 1),
//! and nothing is sent. A failure of a port names it: the invitation store (the
//! batch, the activity feed) or the owner directory (an import of owners), even though
//! one SQLite file holds both.
#![cfg(all(feature = "smtp", feature = "sqlite"))]

mod cli_support;
mod small_disk;

use std::process::{Command, Output, Stdio};

use cli_support::*;

/// Runs the CLI without root's override of file permissions (as root, through
/// `setpriv` with `CAP_DAC_OVERRIDE` dropped), so a read-only file is read-only.
fn run_unprivileged(s: &Session, args: &[&str]) -> Output {
    let mut command = if small_disk::is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--bounding-set=-dac_override,-dac_read_search", "--"])
            .arg(binary());
        c
    } else {
        Command::new(binary())
    };
    command
        .arg("--db")
        .arg(s.path("state.db"))
        .args(args)
        .current_dir(s.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux) runs the example")
}

#[test]
fn a_read_only_file_says_so_and_nothing_is_sent() {
    let s = Session::new().imported();
    let db = s.path("state.db");
    let mut perms = std::fs::metadata(&db).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&db, perms).unwrap();
    let out = run_unprivileged(&s, &["send", "--community", "maple", "--outbox", "out"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: the invitation store failed: SQLite repository"),
        "{err}"
    );
    assert!(err.contains("read-only file"), "{err}");
    assert!(s.outbox_files("out").is_empty(), "nothing was sent");
}

#[test]
fn a_held_write_lock_says_database_is_locked() {
    let s = Session::new();
    // The schema exists, then another connection takes the write lock and keeps it.
    s.ok(&["activity", "--community", "maple"]);
    let other = rusqlite::Connection::open(s.path("state.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let out = s.run(&[
        "import",
        "--communities",
        "communities.csv",
        "--owners",
        "owners.csv",
    ]);
    other.execute_batch("ROLLBACK").unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // Opening the file already needs the lock (it checks the schema): the line says
    // so, before any port is called.
    assert!(err.contains("error: cannot open the database"), "{err}");
    assert!(err.contains("database is locked"), "{err}");
}

#[test]
fn a_dropped_table_is_named() {
    let s = Session::new().imported();
    let conn = rusqlite::Connection::open(s.path("state.db")).unwrap();
    conn.execute_batch("DROP TABLE owner_access_activity")
        .unwrap();
    drop(conn);
    let out = s.run(&["activity", "--community", "maple"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: the invitation store failed: "),
        "{err}"
    );
    assert!(
        err.contains("no such table: owner_access_activity"),
        "{err}"
    );
}

#[test]
fn a_full_disk_says_disk_full_and_imports_nothing() {
    let Some(disk) = small_disk::SmallDisk::mount(640) else {
        return;
    };
    let s = Session::new();
    let mut owners = String::from(
        "owner_id,community_id,property_id,first_name,last_name,property_address,primary_email,registered\n",
    );
    for i in 0..20_000 {
        owners.push_str(&format!(
            "o{i},maple,u{i},Ann-Marie,Lee-Whitaker,{i} Elm Street Springfield,owner{i}@example.org,false\n"
        ));
    }
    s.write("big.csv", &owners);
    let db = disk.path().join("state.db");
    let run = |args: &[&str]| {
        Command::new(binary())
            .arg("--db")
            .arg(&db)
            .args(args)
            .current_dir(s.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&[
        "import",
        "--communities",
        "communities.csv",
        "--owners",
        "big.csv",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error: the owner directory failed: "), "{err}");
    assert!(err.contains("disk full"), "{err}");
    // One transaction: not even the community, written before the owners, was kept.
    let roster = run(&["roster", "--community", "maple", "--json"]);
    let err = stderr(&roster);
    assert_eq!(roster.status.code(), Some(1), "{err}");
    assert!(err.contains("community `maple` not found"), "{err}");
}
