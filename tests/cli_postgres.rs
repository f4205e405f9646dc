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

// ----- Several processes on one batch: `resume --batch ID` run by each.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use owner_access::FileOutbox;

/// Imports `n` eligible owners of `maple` (`a0000`, …) over `url`.
fn community_of(dir: &std::path::Path, url: &str, n: usize) {
    let mut owners = String::from(
        "community_id,owner_id,property_id,first_name,last_name,property_address,primary_email,registered\n",
    );
    for i in 0..n {
        owners.push_str(&format!(
            "maple,a{i:04},u{i:04},Ann,Lee{i},{i} Elm St,a{i:04}@example.org,false\n"
        ));
    }
    std::fs::write(dir.join("owners.csv"), owners).unwrap();
    std::fs::write(
        dir.join("communities.csv"),
        "community_id,name,reply_to\nmaple,Maple Grove HOA,board@maple.example.org\n",
    )
    .unwrap();
    ok(
        dir,
        url,
        &[
            "import",
            "--communities",
            "communities.csv",
            "--owners",
            "owners.csv",
        ],
    );
}

fn spawn(dir: &std::path::Path, db: &str, args: &[&str]) -> std::process::Child {
    Command::new(cli_support::binary())
        .arg("--db")
        .arg(db)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts")
}

/// The batch the first `send` created, read from the database once it exists.
async fn batch_id(db: &TestDb, url: &str) -> String {
    let schema = url.rsplit("search_path%3D").next().unwrap().to_owned();
    let client = db.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = client
            .query(
                &format!("SELECT id FROM {schema}.owner_access_batches"),
                &[],
            )
            .await
            .unwrap_or_default();
        if let Some(row) = rows.first() {
            return row.get(0);
        }
        assert!(Instant::now() < deadline, "no batch was created");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every invitation in the outboxes: owner's address → the Message-IDs of its copies.
fn invitations(dir: &std::path::Path, outboxes: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in outboxes {
        let Ok(outbox) = FileOutbox::new(dir.join(name)) else {
            continue;
        };
        for (envelope, bytes) in outbox.messages().unwrap() {
            let parsed = mailparse::parse_mail(&bytes).unwrap();
            let message_id =
                mailparse::MailHeaderMap::get_first_value(parsed.headers.as_slice(), "Message-ID")
                    .expect("a Message-ID");
            // Invitations only (the recap goes to the sender's address).
            if envelope.to.as_str().ends_with("@example.org") {
                ids.entry(envelope.to.as_str().to_owned())
                    .or_default()
                    .push(message_id);
            }
        }
    }
    ids
}

fn sent_of(out: &Output) -> u64 {
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    report["sent"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn three_processes_share_one_batch_each_owner_once() {
    const OWNERS: usize = 600;
    let db = TestDb::create().await;
    let url = db.fresh().await.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    community_of(d, &url, OWNERS);
    let rate = ["--rate", "40"];
    let first = spawn(
        d,
        &url,
        &[
            &["send", "--community", "maple", "--outbox", "out0", "--json"][..],
            &rate,
        ]
        .concat(),
    );
    let batch = batch_id(&db, &url).await;
    let others: Vec<_> = (1..3)
        .map(|i| {
            let outbox = format!("out{i}");
            spawn(
                d,
                &url,
                &[
                    &["resume", "--batch", &batch, "--outbox", &outbox, "--json"][..],
                    &rate,
                ]
                .concat(),
            )
        })
        .collect();
    for child in std::iter::once(first).chain(others) {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            sent_of(&out),
            OWNERS as u64,
            "each report counts the whole batch"
        );
    }
    let ids = invitations(d, &["out0", "out1", "out2"]);
    assert_eq!(ids.len(), OWNERS, "nobody missing");
    let twice = ids.values().filter(|v| v.len() > 1).count();
    assert_eq!(twice, 0, "nobody twice in a clean run");
    let sent: Vec<usize> = ["out0", "out1", "out2"]
        .iter()
        .map(|o| invitations(d, &[o]).len())
        .collect();
    eprintln!("invitations each process sent (send, resume, resume): {sent:?}");
    // Claims sized to each worker's pace (a third of the rate here) share the batch
    // out evenly: none hoards what the others could send.
    let share = OWNERS / 3;
    assert!(
        sent.iter().all(|n| (share / 2..=share * 3 / 2).contains(n)),
        "each process sent half to one and a half times its share of {share}: {sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn a_worker_killed_mid_batch_loses_nobody() {
    const OWNERS: usize = 300;
    let db = TestDb::create().await;
    let url = db.fresh().await.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    community_of(d, &url, OWNERS);
    // Short leases, judged by the server's clock: the dead worker's claims are
    // taken over two seconds after its last renewal.
    let flags = ["--rate", "60", "--lease", "2"];
    let mut first = spawn(
        d,
        &url,
        &[
            &["send", "--community", "maple", "--outbox", "out0", "--json"][..],
            &flags,
        ]
        .concat(),
    );
    let batch = batch_id(&db, &url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while invitations(d, &["out0"]).len() < 40 {
        assert!(Instant::now() < deadline, "the first worker sent nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let before = invitations(d, &["out0"]).len();
    let out = spawn(
        d,
        &url,
        &[
            &["resume", "--batch", &batch, "--outbox", "out1", "--json"][..],
            &flags,
        ]
        .concat(),
    )
    .wait_with_output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = invitations(d, &["out0", "out1"]);
    assert_eq!(ids.len(), OWNERS, "nobody missing");
    let twice: Vec<_> = ids.iter().filter(|(_, v)| v.len() > 1).collect();
    for (owner, copies) in &twice {
        assert_eq!(copies.len(), 2, "{owner}");
        assert_eq!(copies[0], copies[1], "{owner}'s copies share a Message-ID");
    }
    eprintln!(
        "killed after {before} messages; sent twice (same Message-ID): {}",
        twice.len()
    );
    // Sent but not recorded when the worker died: at most its unrecorded outcomes
    // (the default outcome group and the messages in flight).
    assert!(
        twice.len() <= 64,
        "{} sent twice of {before} before the kill",
        twice.len()
    );
}
