//! Crash recovery of the `owner_access` example, as processes over one SQLite file and
//! a real SMTP server (mailin-embedded, in this test process, with a delay per
//! message): a sender killed with SIGKILL and resumed at once, a sender paused with
//! SIGSTOP for longer than its lease, a rate-limited sender beside a resume, and two
//! resumes started at once. Every eligible owner gets a message, duplicates stay within
//! the documented bound and carry the same Message-ID, and every exit 3 names its
//! reason.
#![cfg(all(feature = "smtp", feature = "sqlite", unix))]

mod cli_support;
mod smtp_server;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cli_support::*;
use owner_access::SendOptions;
use owner_access::adapters::sqlite::SqliteRepository;
use owner_access::domain::{BatchId, CommunityId, DeliveryCounts};
use owner_access::prelude::*;
use serde_json::Value;
use smtp_server::*;

/// Waits until the server has accepted `n` messages (or panics after `limit`).
fn wait_for(server: &TestServer, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while server.received().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived in {limit:?}",
            server.received().len()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Pauses a sender (SIGSTOP) at a moment it holds no write lock on the file: a sender
/// frozen inside a write transaction would keep every other process out of the file
/// until it wakes, which is not the pause under test (a host paused between two
/// calls). A write transaction opened and rolled back with no busy time-out proves
/// the lock free; otherwise the sender runs on a moment and is paused again.
fn pause_outside_a_write(child: &std::process::Child, s: &Session) {
    let probe = rusqlite::Connection::open(s.path("state.db")).unwrap();
    probe.busy_timeout(Duration::ZERO).unwrap();
    for _ in 0..1000 {
        signal(child, "STOP");
        std::thread::sleep(Duration::from_millis(5));
        if probe.execute_batch("BEGIN IMMEDIATE; ROLLBACK").is_ok() {
            return;
        }
        signal(child, "CONT");
        std::thread::sleep(Duration::from_millis(3));
    }
    panic!("the sender held the write lock at every one of 1,000 tries");
}

/// The batch of the session's community and its counts, read from the file.
fn batch_and_counts(s: &Session) -> (BatchId, DeliveryCounts) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let repo = SqliteRepository::open(s.path("state.db")).await.unwrap();
        let batches = repo
            .batches(&CommunityId::new("maple").unwrap())
            .await
            .unwrap();
        assert_eq!(batches.len(), 1, "one batch");
        let id = batches[0].id.clone();
        let counts = repo.delivery_counts(&id).await.unwrap();
        (id, counts)
    })
}

/// The `Message-ID` header of a message.
fn message_id(bytes: &[u8]) -> String {
    let parsed = mailparse::parse_mail(bytes).unwrap();
    mailparse::MailHeaderMap::get_first_value(&parsed.headers[..], "Message-ID").unwrap()
}

/// Each recipient's Message-IDs, in the order the server accepted them.
fn copies(server: &TestServer) -> BTreeMap<String, Vec<String>> {
    let mut copies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in server.received() {
        assert_eq!(r.to.len(), 1, "one recipient per message");
        copies
            .entry(r.to[0].clone())
            .or_default()
            .push(message_id(&r.bytes));
    }
    copies
}

/// Every owner got a message; the duplicates (at most `bound`, at most one per owner)
/// carry the Message-ID of the first copy. Returns how many owners got two.
fn check_copies(server: &TestServer, owners: usize, bound: usize) -> usize {
    let copies = copies(server);
    assert_eq!(copies.len(), owners, "every eligible owner has a message");
    let mut duplicates = 0;
    for (to, ids) in &copies {
        assert!(ids.len() <= 2, "{to} got {} copies", ids.len());
        if ids.len() == 2 {
            duplicates += 1;
            assert_eq!(ids[0], ids[1], "{to}'s copies carry one Message-ID");
        }
    }
    assert!(duplicates <= bound, "{duplicates} duplicates > {bound}");
    duplicates
}

#[test]
fn a_send_killed_at_a_third_is_finished_by_a_resume_at_once_within_the_lease() {
    const OWNERS: usize = 300;
    const CONCURRENCY: usize = 8;
    const LEASE: u64 = 3;
    let server = TestServer::plain();
    server.shared.delay_ms.store(20, Ordering::Relaxed);
    let s = Session::community_of(OWNERS, 3);
    let url = format!("smtp://127.0.0.1:{}", server.addr.port());
    let lease = LEASE.to_string();
    let concurrency = CONCURRENCY.to_string();
    let started = Instant::now();
    let mut sender = s.spawn(&[
        "send",
        "--community",
        "maple",
        "--smtp",
        &url,
        "--concurrency",
        &concurrency,
        "--lease",
        &lease,
        "--json",
    ]);
    wait_for(&server, OWNERS * 3 / 10, Duration::from_secs(120));
    sender.kill().unwrap(); // SIGKILL
    sender.wait().unwrap();
    let sent_before = server.received().len();
    let rate = sent_before as f64 / started.elapsed().as_secs_f64();
    let (batch, at_kill) = batch_and_counts(&s);
    assert!(at_kill.pending + at_kill.claimed > 0, "{at_kill:?}");

    let resumed = Instant::now();
    let out = s
        .command(&[
            "resume",
            "--batch",
            batch.as_str(),
            "--smtp",
            &url,
            "--concurrency",
            &concurrency,
            "--lease",
            &lease,
            "--json",
        ])
        .output()
        .unwrap();
    let took = resumed.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(
        (&report["sent"], &report["pending"], &report["stopped"]),
        (&Value::from(OWNERS), &Value::from(0), &Value::Null),
        "{report}"
    );
    assert!(
        stderr(&out).contains("held by another sender"),
        "the resume says what it waits for: {}",
        stderr(&out)
    );
    // About one lease of waiting, then the rest at the first run's rate (three times
    // that, and ten seconds more, for a loaded machine).
    let sending = (OWNERS - sent_before) as f64 / rate;
    let bound = Duration::from_secs(LEASE) + Duration::from_secs_f64(3.0 * sending + 10.0);
    assert!(took < bound, "the resume took {took:?} (bound {bound:?})");
    let duplicates = check_copies(
        &server,
        OWNERS,
        CONCURRENCY + 4 * SendOptions::default().outcome_group,
    );
    eprintln!(
        "killed after {sent_before} of {OWNERS} ({at_kill:?}); the resume took {took:?} \
         (bound {bound:?}), {duplicates} duplicates"
    );
}

#[test]
fn a_sender_paused_past_its_lease_is_overtaken_and_its_late_outcomes_are_refused() {
    const OWNERS: usize = 120;
    const CONCURRENCY: usize = 4;
    let server = TestServer::plain();
    server.shared.delay_ms.store(30, Ordering::Relaxed);
    let s = Session::community_of(OWNERS, 3);
    let url = format!("smtp://127.0.0.1:{}", server.addr.port());
    let concurrency = CONCURRENCY.to_string();
    let mut first = s.spawn(&[
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
    ]);
    wait_for(&server, OWNERS / 5, Duration::from_secs(120));
    pause_outside_a_write(&first, &s);
    let (batch, _) = batch_and_counts(&s);
    let second = s
        .command(&[
            "resume",
            "--batch",
            batch.as_str(),
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
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let at_wake = server.received().len();
    signal(&first, "CONT");
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the paused sender never stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(3), "{}", stderr(&first));
    let report = json(&first);
    assert_eq!(report["stop"], "taken_over", "{report}");
    assert!(
        report["stopped"]
            .as_str()
            .is_some_and(|s| s.contains("another sender took over")),
        "{report}"
    );
    assert!(stderr(&first).contains("taken over"), "{}", stderr(&first));
    let (_, counts) = batch_and_counts(&s);
    assert_eq!(
        counts,
        DeliveryCounts {
            sent: OWNERS,
            ..DeliveryCounts::default()
        },
        "the final counts"
    );
    // What it had sent without recording it yet (or had in flight) when it was
    // paused went again from the resume: the bound of a crash. Nothing it started
    // after it woke up.
    let duplicates = check_copies(
        &server,
        OWNERS,
        CONCURRENCY + 4 * SendOptions::default().outcome_group,
    );
    let after_wake = server.received().len() - at_wake;
    assert!(
        after_wake <= CONCURRENCY,
        "the paused sender sent {after_wake} messages after it woke, more than it had in flight"
    );
    eprintln!("{duplicates} owners got the one possible duplicate");
}

#[test]
fn a_rate_limited_sender_keeps_its_claims_and_a_resume_beside_it_sends_nobody_twice() {
    const OWNERS: usize = 12;
    let server = TestServer::plain();
    let s = Session::community_of(OWNERS, 3);
    let url = format!("smtp://127.0.0.1:{}", server.addr.port());
    // 12 messages at 4 a second: three seconds, three leases of one second.
    let slow = s.spawn(&[
        "send",
        "--community",
        "maple",
        "--smtp",
        &url,
        "--rate",
        "4",
        "--lease",
        "1",
        "--json",
    ]);
    wait_for(&server, 2, Duration::from_secs(60));
    let (batch, _) = batch_and_counts(&s);
    let resume = s
        .command(&[
            "resume",
            "--batch",
            batch.as_str(),
            "--smtp",
            &url,
            "--lease",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    let slow = slow.wait_with_output().unwrap();
    for (name, out) in [("the slow sender", &slow), ("the resume", &resume)] {
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(out));
        assert_eq!(json(out)["sent"], OWNERS, "{name}");
    }
    assert!(
        stderr(&resume).contains("held by another sender"),
        "{}",
        stderr(&resume)
    );
    assert_eq!(check_copies(&server, OWNERS, 0), 0, "nobody twice");
}

#[test]
fn two_resumes_started_at_once_send_everyone_once_and_both_end_settled() {
    const OWNERS: usize = 60;
    let s = Session::community_of(OWNERS, 3);
    // First a send that stops with everyone pending: the server is not there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("smtp://127.0.0.1:{port}");
    let out = s
        .command(&["send", "--community", "maple", "--smtp", &nowhere])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("stopped: mail server unreachable") && text.contains("next: "),
        "an exit 3 says why and what to do next: {text}"
    );
    let (batch, counts) = batch_and_counts(&s);
    assert_eq!(counts.pending, OWNERS);

    let server = TestServer::plain();
    server.shared.delay_ms.store(10, Ordering::Relaxed);
    let url = format!("smtp://127.0.0.1:{}", server.addr.port());
    let args = [
        "resume",
        "--batch",
        batch.as_str(),
        "--smtp",
        &url,
        "--concurrency",
        "4",
        "--lease",
        "2",
        "--json",
    ];
    let (a, b) = (s.spawn(&args), s.spawn(&args));
    for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let report = json(&out);
        assert_eq!(
            (&report["sent"], &report["pending"]),
            (&Value::from(OWNERS), &Value::from(0))
        );
    }
    assert_eq!(check_copies(&server, OWNERS, 0), 0, "nobody twice");
    let (_, counts) = batch_and_counts(&s);
    assert_eq!(counts.sent, OWNERS);
}
