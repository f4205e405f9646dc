//! An outage fails nobody, whatever the batch size, as the `owner_access` example
//! shows it over SQLite: a batch of one or two owners sent while nothing listens ends
//! pending with exit 3, as does a resend, which leaves the owner as they were; and
//! against a real SMTP server (mailin-embedded, in this process) that drops the
//! connection on one message (421 at DATA), that delivery stays pending for two runs
//! and fails in the third with its last error (exit 2).
#![cfg(all(feature = "smtp", feature = "sqlite", unix))]

mod cli_support;
mod smtp_server;

use cli_support::*;
use serde_json::Value;
use smtp_server::*;

/// Nothing listens there.
const DEAD: &str = "smtp://127.0.0.1:1";

/// A session whose community `maple` has these owners (id, address), all eligible.
fn community_with(owners: &[(&str, &str)]) -> Session {
    let s = Session::new();
    let mut csv = String::from(
        "community_id,owner_id,property_id,first_name,last_name,property_address,primary_email,registered\n",
    );
    for (i, (id, email)) in owners.iter().enumerate() {
        csv.push_str(&format!(
            "maple,{id},u{i},Ann,Lee{i},{i} Elm St,{email},false\n"
        ));
    }
    s.write("owners.csv", &csv);
    s.imported()
}

fn counts(report: &Value) -> (u64, u64, usize) {
    (
        report["sent"].as_u64().unwrap(),
        report["pending"].as_u64().unwrap(),
        report["failed"].as_array().unwrap().len(),
    )
}

#[test]
fn a_batch_of_one_or_two_against_a_dead_server_ends_pending_with_exit_3() {
    for n in [1u64, 2] {
        let owners: Vec<(String, String)> = (0..n)
            .map(|i| (format!("a{i}"), format!("a{i}@example.org")))
            .collect();
        let refs: Vec<(&str, &str)> = owners
            .iter()
            .map(|(o, e)| (o.as_str(), e.as_str()))
            .collect();
        let s = community_with(&refs);
        let (code, report) = s.json(&["send", "--community", "maple", "--smtp", DEAD, "--json"]);
        assert_eq!(code, 3, "{report}");
        assert_eq!(report["stop"], "unreachable", "{report}");
        assert_eq!(counts(&report), (0, n, 0), "nobody failed: {report}");
    }
}

#[test]
fn a_resend_against_a_dead_server_leaves_the_owner_pending_as_before() {
    let s = community_with(&[("a0", "a0@example.org")]);
    s.ok(&["send", "--community", "maple", "--outbox", "first"]);
    let roster = |s: &Session| s.ok(&["roster", "--community", "maple", "--json"]);
    let before = roster(&s);
    let (code, report) = s.json(&["resend", "--owner", "a0", "--smtp", DEAD, "--json"]);
    assert_eq!(code, 3, "{report}");
    assert_eq!(report["stop"], "unreachable", "{report}");
    assert_eq!(counts(&report), (0, 1, 0), "{report}");
    assert_eq!(roster(&s), before, "the owner is as they were");
}

#[test]
fn a_message_the_server_drops_the_connection_on_fails_in_its_third_run() {
    let server = TestServer::plain();
    let url = format!("smtp://127.0.0.1:{}", server.addr.port());
    // close-data… answers 421 and closes: a connection-class failure, every time.
    let s = community_with(&[
        ("a0", "a0@example.org"),
        ("a1", "close-data-a1@example.org"),
    ]);
    // One at a time: a1 goes after a0, and nothing gets through after it.
    let send = [
        "send",
        "--community",
        "maple",
        "--smtp",
        &url,
        "--concurrency",
        "1",
        "--json",
    ];
    let (code, first) = s.json(&send);
    assert_eq!(code, 3, "{first}");
    assert_eq!(first["stop"], "unreachable", "{first}");
    assert_eq!(counts(&first), (1, 1, 0), "{first}");
    let batch = first["batch"].as_str().unwrap().to_owned();
    let resume = [
        "resume",
        "--batch",
        &batch,
        "--smtp",
        &url,
        "--concurrency",
        "1",
        "--json",
    ];
    let (code, second) = s.json(&resume);
    assert_eq!(code, 3, "the second run leaves it pending: {second}");
    assert_eq!(counts(&second), (1, 1, 0), "{second}");
    let (code, third) = s.json(&resume);
    assert_eq!(code, 2, "the third run fails it: {third}");
    assert_eq!(third["stop"], Value::Null, "{third}");
    assert_eq!(counts(&third), (1, 0, 1), "{third}");
    let failed = &third["failed"][0];
    assert_eq!(failed["owner_id"], "a1");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("421") && error.contains("in 3 runs in a row"),
        "its last error, and why it fails now: {error}"
    );
    assert_eq!(server.received_by("a0@example.org").len(), 1);
    assert!(server.received_by("close-data-a1@example.org").is_empty());
}
