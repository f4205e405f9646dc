//! `resume` checks each pending owner again, as processes of the `owner_access`
//! example over one SQLite file: a batch for community maple stops against a dead
//! server (nothing listening on `127.0.0.1:1`); then a later import moves one owner
//! to pine, changes another's address, gives a third's address to an owner of pine,
//! and a fourth registers through an earlier link. `resume` skips each of them with
//! its reason, sends the rest, and exits 0.
#![cfg(all(feature = "smtp", feature = "sqlite", unix))]

mod cli_support;

use cli_support::*;
use serde_json::Value;

const DEAD: &str = "smtp://127.0.0.1:1";

/// The skipped owners of a report, with their reason codes, by owner.
fn skipped(report: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = report["skipped"]
        .as_array()
        .unwrap_or_else(|| panic!("no skipped list: {report}"))
        .iter()
        .map(|e| {
            (
                e["owner_id"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The recipients of an outbox folder's messages, sorted.
fn recipients(s: &Session, dir: &str) -> Vec<String> {
    let mut to: Vec<String> = s
        .outbox_files(dir)
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).unwrap();
            let parsed = mailparse::parse_mail(&bytes).unwrap();
            use mailparse::MailHeaderMap;
            parsed.headers.get_first_value("To").unwrap()
        })
        .collect();
    to.sort();
    to
}

#[test]
fn resume_skips_owners_who_moved_changed_address_registered_or_now_share_it() {
    let s = Session::new();
    s.write(
        "communities.csv",
        "community_id,name,reply_to\n\
         maple,Maple Grove HOA,board@maple.example.org\n\
         pine,Pine Ridge HOA,board@pine.example.org\n",
    );
    let mut csv = String::from(
        "community_id,owner_id,property_id,first_name,last_name,property_address,primary_email,registered\n",
    );
    for i in 0..6 {
        csv.push_str(&format!(
            "maple,a{i},u{i},Ann,Lee{i},{i} Elm St,a{i}@example.org,false\n"
        ));
    }
    s.write("owners.csv", &csv);
    let s = s.imported();
    // A first batch whose links the owners hold (a3 registers with hers later).
    s.ok(&[
        "send",
        "--community",
        "maple",
        "--select",
        "a3",
        "--outbox",
        "first",
    ]);
    let a3_link = token_in(&s.outbox_files("first")[0]);

    let (code, report) = s.json(&["send", "--community", "maple", "--smtp", DEAD, "--json"]);
    assert_eq!(code, 3, "the batch stops on the outage: {report}");
    assert_eq!(report["pending"], 6, "{report}");
    let batch = report["batch"].as_str().unwrap().to_owned();

    // Later: a0 moves to pine, a1 has a new address, a pine owner now holds a4's
    // mailbox (spelled otherwise), a2's address is re-typed in another case only
    // (the same mailbox), and a3 registers.
    s.write(
        "later.csv",
        "community_id,owner_id,property_id,first_name,last_name,property_address,primary_email,registered\n\
         pine,a0,u0,Ann,Lee0,0 Elm St,a0@example.org,false\n\
         maple,a1,u1,Ann,Lee1,1 Elm St,a1-new@example.org,false\n\
         maple,a2,u2,Ann,Lee2,2 Elm St,A2@EXAMPLE.ORG,false\n\
         pine,p9,u9,Pat,Oak,9 Pine St, A4@Example.org,false\n",
    );
    s.ok(&[
        "import",
        "--communities",
        "communities.csv",
        "--owners",
        "later.csv",
    ]);
    s.ok(&["redeem", "--token", &a3_link]);

    let (code, report) = s.json(&["resume", "--batch", &batch, "--outbox", "second", "--json"]);
    assert_eq!(
        code, 0,
        "the rest were sent; a skip is no failure: {report}"
    );
    assert_eq!(
        skipped(&report),
        [
            ("a0".to_owned(), "moved".to_owned()),
            ("a1".to_owned(), "email_changed".to_owned()),
            ("a3".to_owned(), "registered".to_owned()),
            ("a4".to_owned(), "shared_email".to_owned()),
        ],
        "{report}"
    );
    assert_eq!(report["sent"], 2, "{report}");
    assert_eq!(report["pending"], 0, "{report}");
    assert_eq!(report["failed"], Value::Array(Vec::new()), "{report}");
    assert_eq!(
        recipients(&s, "second"),
        [
            "\"Ann Lee2\" <a2@example.org>",
            "\"Ann Lee5\" <a5@example.org>"
        ],
        "only the owners still eligible were sent"
    );

    // Stored as skipped with the reason, in the file.
    let conn = rusqlite::Connection::open(s.path("state.db")).unwrap();
    let mut stored: Vec<(String, String, Option<String>)> = conn
        .prepare("SELECT owner, state, skip_reason FROM owner_access_deliveries WHERE batch = ?1 ORDER BY owner")
        .unwrap()
        .query_map([&batch], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    stored.sort();
    let want: Vec<(String, String, Option<String>)> = [
        ("a0", "skipped", Some("moved")),
        ("a1", "skipped", Some("email_changed")),
        ("a2", "sent", None),
        ("a3", "skipped", Some("registered")),
        ("a4", "skipped", Some("shared_email")),
        ("a5", "sent", None),
    ]
    .into_iter()
    .map(|(o, st, r)| (o.to_owned(), st.to_owned(), r.map(str::to_owned)))
    .collect();
    assert_eq!(stored, want);

    // The text report lists each skipped owner with the reason; resuming a settled
    // batch sends nobody and still exits 0.
    let text = s.ok(&["resume", "--batch", &batch, "--outbox", "third"]);
    assert!(
        text.contains("skipped a0: the owner moved to another community (moved)"),
        "{text}"
    );
    assert!(
        text.contains("(email_changed)") && text.contains("(registered)"),
        "{text}"
    );
    assert!(text.contains("(shared_email)"), "{text}");
    assert!(s.outbox_files("third").is_empty(), "nobody sent twice");
}
