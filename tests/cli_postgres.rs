//! The `owner_access` command line over PostgreSQL (`--db postgres://…`): import,
//! roster, send into an outbox, redeem, as over SQLite; a server that is down is a
//! plain error naming it.
//!
//! Needs a server: `OWNER_ACCESS_PG_URL=… cargo test --all-features --test
//! cli_postgres -- --include-ignored` (see `tests/repository_postgres.rs`).
#![cfg(all(feature = "smtp", feature = "sqlite", feature = "postgres"))]

mod cli_support;
mod pg_support;

use std::process::{Command, Output, Stdio};

use pg_support::TestDb;
use serde_json::Value;

fn run(dir: &std::path::Path, db: &str, args: &[&str]) -> Output {
    Command::new(cli_support::binary())
        .arg("--db")
        .arg(db)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the example runs")
}

fn ok(dir: &std::path::Path, db: &str, args: &[&str]) -> String {
    let out = run(dir, db, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn import_send_roster_redeem_over_postgres() {
    let db = TestDb::create().await;
    let url = db.fresh().await.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut owners = String::from(
        "community_id,owner_id,property_id,first_name,last_name,property_address,primary_email,registered\n",
    );
    for i in 0..25 {
        owners.push_str(&format!(
            "maple,a{i:02},u{i:02},Ann,Lee{i},{i} Elm St,a{i:02}@example.org,false\n"
        ));
    }
    owners.push_str("maple,r1,u99,Reg,Istered,99 Elm St,reg@example.org,true\n");
    std::fs::write(dir.path().join("owners.csv"), owners).unwrap();
    std::fs::write(
        dir.path().join("communities.csv"),
        "community_id,name,reply_to\nmaple,Maple Grove HOA,board@maple.example.org\n",
    )
    .unwrap();
    let d = dir.path();
    ok(
        d,
        &url,
        &[
            "import",
            "--communities",
            "communities.csv",
            "--owners",
            "owners.csv",
        ],
    );
    let send = ok(
        d,
        &url,
        &[
            "send",
            "--community",
            "maple",
            "--outbox",
            "outbox",
            "--json",
        ],
    );
    let report: Value = serde_json::from_str(&send).expect("JSON report");
    assert_eq!(report["sent"], 25, "{report}");
    let files: Vec<_> = std::fs::read_dir(d.join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "eml")
                && std::fs::read_to_string(p).unwrap().contains("token=")
        })
        .collect();
    assert_eq!(files.len(), 25, "one invitation per owner");
    let roster: Value =
        serde_json::from_str(&ok(d, &url, &["roster", "--community", "maple", "--json"])).unwrap();
    assert_eq!(roster["counts"]["invited"], 25, "{}", roster["counts"]);
    assert_eq!(roster["counts"]["registered"], 1, "{}", roster["counts"]);
    let token = cli_support::token_in(&files[0]);
    ok(d, &url, &["redeem", "--token", &token]);
    let again = run(d, &url, &["redeem", "--token", &token]);
    assert_ne!(again.status.code(), Some(0), "a link works once");
    let roster: Value =
        serde_json::from_str(&ok(d, &url, &["roster", "--community", "maple", "--json"])).unwrap();
    assert_eq!(roster["counts"]["registered"], 2, "{}", roster["counts"]);
}

#[test]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
fn a_server_that_is_down_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        "postgres://app:secret@127.0.0.1:1/hoa?sslmode=disable",
        &["roster", "--community", "maple"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("127.0.0.1:1/hoa"),
        "names the server: {stderr}"
    );
    assert!(!stderr.contains("secret"), "never the password: {stderr}");
}
