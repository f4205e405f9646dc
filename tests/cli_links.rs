//! A run that sends nothing takes no link away, as processes of the `owner_access`
//! example over one SQLite file: a send against a dead server (nothing listening on
//! `127.0.0.1:1`), a failed resend, and a sender killed (SIGKILL) after it claimed its
//! deliveries and before any message was accepted each leave every owner's delivered
//! link working. Once a newer message has gone out, the older link is revoked and the
//! new one works.
#![cfg(all(feature = "smtp", feature = "sqlite", unix))]

mod cli_support;

use std::net::TcpListener;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cli_support::*;

const DEAD: &str = "smtp://127.0.0.1:1";

/// The links in an outbox folder's messages, one per message, in file order.
fn links_in(s: &Session, dir: &str) -> Vec<String> {
    s.outbox_files(dir).iter().map(|f| token_in(f)).collect()
}

/// `verify` of a link: the owner id it names, or `None` when it does not work.
fn owner_of(s: &Session, token: &str) -> Option<String> {
    let out = s.run(&["verify", "--token", token]);
    match out.status.code() {
        Some(0) => Some(String::from_utf8(out.stdout).unwrap().trim().to_owned()),
        Some(1) => None,
        other => panic!(
            "verify exited {other:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn all_work(s: &Session, links: &[String]) -> bool {
    links.iter().all(|t| owner_of(s, t).is_some())
}

fn none_work(s: &Session, links: &[String]) -> bool {
    links.iter().all(|t| owner_of(s, t).is_none())
}

/// The only batch of `maple` whose deliveries are not all sent.
fn open_batch(s: &Session) -> String {
    let conn = rusqlite::Connection::open(s.path("state.db")).unwrap();
    conn.query_row(
        "SELECT DISTINCT batch FROM owner_access_deliveries WHERE state <> 'sent'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn a_send_to_a_dead_server_leaves_every_link_working() {
    let s = Session::community_of(5, 0);
    s.ok(&["send", "--community", "maple", "--outbox", "first"]);
    let first = links_in(&s, "first");
    assert_eq!(first.len(), 5);
    assert!(all_work(&s, &first));

    let (code, report) = s.json(&["send", "--community", "maple", "--smtp", DEAD, "--json"]);
    assert_eq!(code, 3, "the batch stops on the outage: {report}");
    assert_eq!(report["sent"], 0, "{report}");
    assert_eq!(report["pending"], 5, "{report}");
    assert!(
        all_work(&s, &first),
        "a run that sent nothing leaves every delivered link working"
    );

    // Once the newer messages have gone out, they hold the working links.
    let batch = open_batch(&s);
    let (code, report) = s.json(&["resume", "--batch", &batch, "--outbox", "second", "--json"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["sent"], 5, "{report}");
    let second = links_in(&s, "second");
    assert_eq!(second.len(), 5);
    assert!(none_work(&s, &first), "the older links are superseded");
    assert!(all_work(&s, &second), "the newer links work");
}

#[test]
fn a_failed_resend_leaves_the_delivered_link_working() {
    let s = Session::new().imported();
    s.ok(&[
        "send",
        "--community",
        "maple",
        "--select",
        "o2",
        "--outbox",
        "first",
    ]);
    let old = token_in(&s.outbox_files("first")[0]);
    let out = s.run(&["resend", "--owner", "o2", "--smtp", DEAD, "--json"]);
    // 2 while an outage fails a batch of one, 3 once it leaves it pending (issue 13):
    // either way nothing was sent.
    assert!(
        matches!(out.status.code(), Some(2 | 3)),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        owner_of(&s, &old).as_deref(),
        Some("o2"),
        "the delivered link still works after a resend that sent nothing"
    );

    let (code, report) = s.json(&["resend", "--owner", "o2", "--outbox", "second", "--json"]);
    assert_eq!(code, 0, "{report}");
    let new = token_in(&s.outbox_files("second")[0]);
    assert_eq!(owner_of(&s, &old), None, "superseded by the resent message");
    assert_eq!(s.ok(&["redeem", "--token", &new]).trim(), "o2");
}

/// A mail server that accepts connections and never answers: a sender connected to
/// it has claimed its deliveries, stored their tokens, and is waiting for a greeting
/// that never comes.
struct SilentServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl SilentServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                held.push(stream);
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        Self { port, accepted }
    }
}

#[test]
fn a_sender_killed_between_claim_and_send_leaves_every_link_working() {
    let s = Session::community_of(5, 0);
    s.ok(&["send", "--community", "maple", "--outbox", "first"]);
    let first = links_in(&s, "first");
    assert!(all_work(&s, &first));

    let server = SilentServer::start();
    let url = format!("smtp://127.0.0.1:{}", server.port);
    let mut sender = s
        .command(&[
            "send",
            "--community",
            "maple",
            "--smtp",
            &url,
            "--lease",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The sender is connected (it claimed, stored tokens, and started its first
    // message) and every delivery is claimed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let conn = rusqlite::Connection::open(s.path("state.db")).unwrap();
    loop {
        let claimed: i64 = conn
            .query_row(
                "SELECT count(*) FROM owner_access_deliveries WHERE state = 'claimed'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if claimed == 5 && server.accepted.load(Ordering::SeqCst) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sender never claimed and connected"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let tokens: i64 = conn
        .query_row("SELECT count(*) FROM owner_access_tokens", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        tokens, 10,
        "the claims' tokens are stored before the message"
    );
    drop(conn);
    sender.kill().unwrap(); // SIGKILL
    sender.wait().unwrap();
    assert!(
        all_work(&s, &first),
        "a crash before any message was accepted leaves every link working"
    );

    // A resume, once the dead sender's leases have run out, sends; the new links
    // supersede the old ones.
    let batch = open_batch(&s);
    let (code, report) = s.json(&["resume", "--batch", &batch, "--outbox", "second", "--json"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["sent"], 5, "{report}");
    let second = links_in(&s, "second");
    assert!(none_work(&s, &first), "the older links are superseded");
    assert!(all_work(&s, &second), "the newer links work");
}
