//! Drives the `owner_access` example end to end, as other tools do: real SQLite file,
//! real outbox files, real process exits and signals. (SMTP runs are in
//! `tests/cli_smtp.rs`.)
#![cfg(all(feature = "smtp", feature = "sqlite"))]

mod cli_support;

use std::process::Command;
use std::time::Duration;

use cli_support::*;
use serde_json::Value;

#[test]
fn import_roster_review_send_redeem_activity() {
    let s = Session::new().imported();
    let (code, roster) = s.json(&["roster", "--community", "maple", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(roster["counts"]["registered"], 1);
    assert_eq!(roster["counts"]["not_invited"], 6);
    let o4 = roster["owners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["owner_id"] == "o4")
        .unwrap();
    assert_eq!(o4["eligible"], false);
    assert_eq!(o4["reason"], "invalid_email");
    assert_eq!(o4["status"], "not_invited");
    let o3 = roster["owners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["owner_id"] == "o3")
        .unwrap();
    assert_eq!(o3["email"], Value::Null);

    let (_, filtered) = s.json(&[
        "roster",
        "--community",
        "maple",
        "--access",
        "unregistered",
        "--email",
        "with",
        "--search",
        "kim",
        "--json",
    ]);
    let ids: Vec<&str> = filtered["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["owner_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"o5") && ids.contains(&"o6"));

    let (code, review) = s.json(&["review", "--community", "maple", "--json"]);
    assert_eq!(code, 0);
    let to: Vec<&str> = review["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["owner_id"].as_str().unwrap())
        .collect();
    assert_eq!(to, ["o1", "o2"]);
    assert_eq!(
        reasons(&review),
        [
            ("o3", "no_email"),
            ("o4", "invalid_email"),
            ("o5", "shared_email"),
            ("o6", "shared_email"),
            ("o7", "registered")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(s.outbox_files("out").len(), 0, "review sends nothing");

    let (code, report) = s.json(&[
        "send",
        "--community",
        "maple",
        "--outbox",
        "out",
        "--select",
        "o1,o2,o3,ghost",
        "--json",
    ]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["sent"], 2);
    assert_eq!(report["recipients"], 2);
    assert_eq!(report["pending"], 0);
    assert!(report["batch"].as_str().unwrap().len() > 4);
    assert_eq!(
        reasons(&report),
        [
            ("ghost".to_owned(), "unknown_owner".to_owned()),
            ("o3".to_owned(), "no_email".to_owned())
        ]
    );
    let files = s.outbox_files("out");
    assert_eq!(files.len(), 2);
    let token = token_in(&files[0]);
    assert!(token.len() >= 43);
    let raw = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        raw.contains("localhost:8080/register"),
        "the default portal URL is in the link"
    );

    assert_eq!(s.ok(&["verify", "--token", &token]).trim(), "o1");
    assert_eq!(s.ok(&["redeem", "--token", &token]).trim(), "o1");
    let again = s.run(&["redeem", "--token", &token]);
    assert_eq!(again.status.code(), Some(1));
    let unknown = s.run(&["redeem", "--token", &"A".repeat(43)]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(
        again.stderr, unknown.stderr,
        "one generic message for used and unknown tokens"
    );
    assert_eq!(s.run(&["verify", "--token", &token]).status.code(), Some(1));

    let (code, activity) = s.json(&["activity", "--community", "maple", "--json"]);
    assert_eq!(code, 0);
    let kinds: Vec<&str> = activity
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["registered", "batch_finished", "batch_created"]);
    let created = &activity.as_array().unwrap()[2];
    assert_eq!(created["batch"], report["batch"]);
    assert!(created["at"].as_str().unwrap().contains('T'));
}

#[test]
fn bad_input_exits_1_and_imports_nothing() {
    let s = Session::new();
    s.write("bad.csv", "owner_id,community_id,property_id,first_name,last_name,property_address,primary_email,registered\no1,maple,u1,A,B,addr,a@example.org,false\no2,nowhere,u2,A,B,addr,,false\n");
    let out = s.run(&[
        "import",
        "--communities",
        "communities.csv",
        "--owners",
        "bad.csv",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("nowhere"), "{err}");
    let roster = s.run(&["roster", "--community", "maple", "--json"]);
    assert_eq!(
        roster.status.code(),
        Some(1),
        "not even the community was imported"
    );
    assert!(String::from_utf8_lossy(&roster.stderr).contains("not found"));

    s.write("nobool.csv", "owner_id,community_id,property_id,first_name,last_name,property_address,primary_email,registered\no1,maple,u1,A,B,addr,a@example.org,perhaps\n");
    let out = s.run(&[
        "import",
        "--communities",
        "communities.csv",
        "--owners",
        "nobool.csv",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));

    // Usage errors are 1, not clap's 2.
    assert_eq!(
        s.run(&["send", "--community", "maple"]).status.code(),
        Some(1)
    );
    assert_eq!(s.run(&["no-such-command"]).status.code(), Some(1));
    assert_eq!(
        s.run(&[
            "send",
            "--community",
            "maple",
            "--outbox",
            "o",
            "--smtp",
            "smtp://127.0.0.1:1"
        ])
        .status
        .code(),
        Some(1)
    );
    let no_db = Command::new(binary())
        .args(["roster", "--community", "maple"])
        .output()
        .unwrap();
    assert_eq!(no_db.status.code(), Some(1));
}

#[test]
fn an_invalid_invite_is_reviewed_with_problems_and_never_sent() {
    let s = Session::new().imported();
    s.write("body.txt", "Hello {{owner.nickname}}, no link here");
    let (code, review) = s.json(&[
        "review",
        "--community",
        "maple",
        "--text",
        "body.txt",
        "--reply-to",
        "nope",
        "--json",
    ]);
    assert_eq!(code, 1);
    let problems = review["problems"].as_array().unwrap();
    assert!(problems.len() >= 3, "{problems:?}");
    let out = s.run(&[
        "send",
        "--community",
        "maple",
        "--text",
        "body.txt",
        "--outbox",
        "out",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(s.outbox_files("out").len(), 0);
    let (_, activity) = s.json(&["activity", "--community", "maple", "--json"]);
    assert_eq!(activity.as_array().unwrap().len(), 0, "no batch was stored");
}

#[test]
fn mass_edit_is_all_or_nothing() {
    let s = Session::new().imported();
    s.write(
        "edits.csv",
        "owner_id,primary_email\no3,cy@example.org\no4,bo@example.org\no1,broken@\n",
    );
    let out = s.run(&["mass-edit", "--edits", "edits.csv"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("o4") && err.contains("o1"),
        "every bad row is named: {err}"
    );
    let (_, roster) = s.json(&["roster", "--community", "maple", "--search", "cy", "--json"]);
    assert_eq!(roster["owners"][0]["email"], Value::Null, "nothing changed");

    s.write(
        "good.csv",
        "owner_id,primary_email\no3,cy@example.org\no4,di@example.org\no6,flo@example.org\n",
    );
    s.ok(&["mass-edit", "--edits", "good.csv"]);
    let (_, review) = s.json(&["review", "--community", "maple", "--json"]);
    assert_eq!(review["recipients"].as_array().unwrap().len(), 6);
}

#[test]
fn drafts_save_list_send_and_discard() {
    let s = Session::new().imported();
    s.write("welcome.pdf", "%PDF-1.4 welcome");
    let id = s.ok(&[
        "draft",
        "save",
        "--community",
        "maple",
        "--select",
        "o1",
        "--subject",
        "Welcome to {{community.name}}",
        "--attach",
        "welcome.pdf",
    ]);
    let id = id.trim().to_owned();
    assert!(!id.is_empty() && !id.contains(char::is_whitespace));
    let (_, list) = s.json(&["draft", "list", "--community", "maple", "--json"]);
    assert_eq!(list[0]["draft"], id.as_str());
    assert_eq!(list[0]["recipients"], 1);
    assert!(list[0]["created_at"].as_str().unwrap().contains('T'));
    let (code, report) = s.json(&["draft", "send", &id, "--outbox", "out", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(report["sent"], 1);
    let files = s.outbox_files("out");
    let raw = std::fs::read_to_string(&files[0]).unwrap();
    assert!(raw.contains("welcome.pdf"));
    assert!(raw.contains("Welcome to Maple Grove HOA"));

    let second = s
        .ok(&["draft", "save", "--community", "maple"])
        .trim()
        .to_owned();
    s.ok(&["draft", "discard", &second]);
    let (_, list) = s.json(&["draft", "list", "--community", "maple", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(s.run(&["draft", "discard", &second]).status.code(), Some(1));
}

#[test]
fn resend_revokes_the_old_link() {
    let s = Session::new().imported();
    s.ok(&[
        "send",
        "--community",
        "maple",
        "--select",
        "o2",
        "--outbox",
        "first",
        "--subject",
        "Custom {{owner.first_name}}",
    ]);
    let old = token_in(&s.outbox_files("first")[0]);
    let (code, report) = s.json(&["resend", "--owner", "o2", "--outbox", "second", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(report["sent"], 1);
    let file = &s.outbox_files("second")[0];
    assert!(
        std::fs::read_to_string(file).unwrap().contains("Custom Bo"),
        "the latest batch's message is reused"
    );
    let new = token_in(file);
    assert_ne!(old, new);
    assert_eq!(s.run(&["verify", "--token", &old]).status.code(), Some(1));
    assert_eq!(s.ok(&["redeem", "--token", &new]).trim(), "o2");
    let out = s.run(&["resend", "--owner", "o2", "--outbox", "third", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a registered owner is not resent to"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("registered"));
    assert!(s.outbox_files("third").is_empty());
}

#[test]
fn an_outbox_that_cannot_be_created_is_bad_input() {
    let s = Session::new().imported();
    s.write("blocked", "a file where the outbox folder should be");
    let out = s.run(&[
        "send",
        "--community",
        "maple",
        "--outbox",
        "blocked/sub",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no report: nothing was sent");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--outbox"));
    let (_, activity) = s.json(&["activity", "--community", "maple", "--json"]);
    assert_eq!(activity.as_array().unwrap().len(), 0, "no batch was stored");
}

#[cfg(unix)]
#[test]
fn sigint_stops_the_send_and_resume_finishes_it() {
    let s = Session::new();
    let mut owners = String::from(
        "owner_id,community_id,property_id,first_name,last_name,property_address,primary_email,registered\n",
    );
    for i in 0..40 {
        owners.push_str(&format!(
            "p{i},maple,u{i},N{i},L{i},{i} Oak,p{i}@example.org,false\n"
        ));
    }
    s.write("owners.csv", &owners);
    s.ok(&[
        "import",
        "--communities",
        "communities.csv",
        "--owners",
        "owners.csv",
    ]);
    let child = s.spawn(&[
        "send",
        "--community",
        "maple",
        "--outbox",
        "out",
        "--rate",
        "10",
        "--json",
    ]);
    // Interrupt once the send is under way (a few messages written), not on a timer
    // that a slow machine could outrun.
    wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        s.outbox_files("out").len() >= 3
    });
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sent = report["sent"].as_u64().unwrap();
    let pending = report["pending"].as_u64().unwrap();
    assert!(sent > 0 && pending > 0, "{report}");
    assert_eq!(sent + pending, 40);
    assert_eq!(s.outbox_files("out").len() as u64, sent);

    let batch = report["batch"].as_str().unwrap();
    let (code, resumed) = s.json(&["resume", "--batch", batch, "--outbox", "out", "--json"]);
    assert_eq!(code, 0, "{resumed}");
    assert_eq!(resumed["sent"], 40);
    assert_eq!(resumed["pending"], 0);
    assert_eq!(s.outbox_files("out").len(), 40);
    let (code, again) = s.json(&["retry", "--batch", batch, "--outbox", "out", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(again["sent"], 40);
    assert_eq!(s.outbox_files("out").len(), 40, "nothing was sent twice");
}
