//! A store failure mid-send, as an operator meets it: the `owner_access` example sends
//! over SQLite to a real SMTP server (mailin-embedded, in this process) while another
//! connection holds the database's write lock longer than the busy time-out. The send
//! stops with exit 3 and a report (batch id, what was sent, what is pending, the
//! cause), never exit 1 ("nothing sent"); `resume` then finishes the batch, and the
//! only owners with two copies are those whose outcome was not recorded, with one
//! Message-ID.
#![cfg(all(feature = "smtp", feature = "sqlite", unix))]

mod cli_support;
mod smtp_server;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cli_support::*;
use owner_access::SendOptions;
use serde_json::Value;
use smtp_server::*;

/// Each recipient's Message-IDs, in the order the server accepted them.
fn copies(server: &TestServer) -> BTreeMap<String, Vec<String>> {
    let mut copies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in server.received() {
        assert_eq!(r.to.len(), 1, "one recipient per message");
        let parsed = mailparse::parse_mail(&r.bytes).unwrap();
        let id =
            mailparse::MailHeaderMap::get_first_value(&parsed.headers[..], "Message-ID").unwrap();
        copies.entry(r.to[0].clone()).or_default().push(id);
    }
    copies
}

#[test]
fn a_write_lock_held_past_the_busy_timeout_mid_send_stops_with_a_report_and_resume_finishes() {
    const OWNERS: usize = 400;
    const CONCURRENCY: usize = 4;
    let server = TestServer::plain();
    server.shared.delay_ms.store(20, Ordering::Relaxed);
    let s = Session::community_of(OWNERS, 3);
    let url = format!("smtp://127.0.0.1:{}", server.addr.port());
    let concurrency = CONCURRENCY.to_string();
    let sender = s
        .command(&[
            "send",
            "--community",
            "maple",
            "--smtp",
            &url,
            "--concurrency",
            &concurrency,
            "--lease",
            "2",
            "--json",
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.received().len() < 40 {
        assert!(Instant::now() < deadline, "the send did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Another process's writer: the sender's next writes wait for it for the busy
    // time-out (10 s), then fail as `database is locked`.
    let lock = rusqlite::Connection::open(s.path("state.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::thread::sleep(Duration::from_secs(12));
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);

    let released = Instant::now();
    let out = sender.wait_with_output().unwrap();
    eprintln!(
        "the sender ended {:?} after the lock was released",
        released.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "a stop, not exit 1: {stderr}");
    let report = json(&out);
    assert_eq!(report["stop"], "store_unavailable", "{report}");
    let why = report["stopped"].as_str().unwrap_or_default();
    assert!(why.contains("database is locked"), "the cause: {report}");
    assert!(
        why.starts_with("the invitation store failed during the send"),
        "the side: {report}"
    );
    let batch = report["batch"].as_str().expect("the batch id").to_owned();
    let went_out = server.received().len();
    let sent = report["sent"].as_u64().unwrap() as usize;
    let pending = report["pending"].as_u64().unwrap() as usize;
    let unrecorded = report["unrecorded"].as_u64().unwrap() as usize;
    assert_eq!(sent, went_out, "sent is what the server accepted: {report}");
    assert!(pending > 0 && sent + pending == OWNERS, "{report}");
    assert!(
        report["next"]
            .as_str()
            .is_some_and(|n| n.contains(&format!("resume --batch {batch}"))),
        "{report}"
    );
    assert!(
        stderr.contains("stopped: the invitation store failed during the send: SQLite repository"),
        "{stderr}"
    );

    let resume_started = Instant::now();
    let resumed = s
        .command(&[
            "resume",
            "--batch",
            &batch,
            "--smtp",
            &url,
            "--concurrency",
            &concurrency,
            "--lease",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    eprintln!("the resume took {:?}", resume_started.elapsed());
    let after = json(&resumed);
    assert_eq!(
        (&after["sent"], &after["pending"], &after["unrecorded"]),
        (&Value::from(OWNERS), &Value::from(0), &Value::from(0)),
        "{after}"
    );
    let copies = copies(&server);
    assert_eq!(copies.len(), OWNERS, "every owner got a message");
    let twice: Vec<_> = copies.iter().filter(|(_, ids)| ids.len() > 1).collect();
    for (to, ids) in &twice {
        assert_eq!(ids.len(), 2, "{to}");
        assert_eq!(ids[0], ids[1], "{to}'s copies share a Message-ID");
    }
    assert_eq!(twice.len(), unrecorded, "only the unrecorded went twice");
    assert!(
        unrecorded < 4 * SendOptions::default().outcome_group + CONCURRENCY,
        "{unrecorded} unrecorded"
    );
    eprintln!("stopped after {sent} of {OWNERS} sent ({unrecorded} unrecorded, {pending} pending)");
}
