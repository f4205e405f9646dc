//! The CLI never hands an owner's, a manager's or a server's text to the terminal
//! raw: in text output every control character and direction mark of a value is
//! escaped (an email holding `ESC ] 0 ; … BEL ESC [ 2 J` would retitle and clear the
//! manager's terminal), whether stdout is a terminal or not; `--json` keeps the exact
//! strings, with those characters as JSON escapes.
#![cfg(all(feature = "smtp", feature = "sqlite"))]

mod cli_support;

use cli_support::*;
use serde_json::Value;

/// A terminal title change, a screen clear, a C1 CSI and a right-to-left override.
const HOSTILE_EMAIL: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2Jx@example.org";
const HOSTILE_NAME: &str = "Ann\u{9b}31m\u{202E}eeL";

/// Bytes a terminal acts on: C0 controls but LF, DEL, C1 controls (as UTF-8), and
/// the direction marks (as UTF-8).
fn terminal_bytes(out: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(out);
    text.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        })
        .map(|c| format!("U+{:04X}", u32::from(c)))
        .collect()
}

fn session() -> Session {
    let s = Session::new();
    s.write(
        "owners.csv",
        &format!(
            "owner_id,community_id,property_id,first_name,last_name,property_address,primary_email,registered\n\
             o1,maple,u1,Ann,Lee,1 Elm St,\"{HOSTILE_EMAIL}\",false\n\
             o2,maple,u2,\"{HOSTILE_NAME}\",Ng,2 Elm St,bo@example.org,false\n\
             o3,maple,u3,Cy,Roe,3 Elm St,\"\"\"a b\"\"@ｅｘａｍｐｌｅ.org\",false\n"
        ),
    );
    s.imported()
}

#[test]
fn roster_of_an_owner_whose_email_holds_escapes_prints_no_escape() {
    let s = session();
    let out = s.run(&["roster", "--community", "maple"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(terminal_bytes(&out.stdout), Vec::<String>::new());
    assert!(!out.stdout.contains(&0x1b));
    let text = String::from_utf8(out.stdout).unwrap();
    // Escaped, so the manager sees what the record holds.
    assert!(
        text.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2Jx@example.org"),
        "{text}"
    );
    // (A full name has its control characters as spaces already; the direction
    // mark is escaped.)
    assert!(text.contains("Ann 31m\\u{202e}eeL Ng"), "{text}");
    // A quoted address shows its quotes as they are.
    assert!(text.contains("\"a b\"@ｅｘａｍｐｌｅ.org"), "{text}");

    // JSON keeps the exact strings, the characters escaped by JSON.
    let out = s.run(&["roster", "--community", "maple", "--json"]);
    assert_eq!(terminal_bytes(&out.stdout), Vec::<String>::new());
    let roster: Value = serde_json::from_slice(&out.stdout).unwrap();
    let owner = |id: &str| {
        roster["owners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["owner_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(owner("o1")["email"], HOSTILE_EMAIL);
    assert_eq!(owner("o2")["name"], "Ann 31m\u{202E}eeL Ng");
}

#[test]
fn review_reports_and_errors_print_no_escape() {
    let s = session();
    // The review shows where each message goes: the delivered address.
    let out = s.run(&["review", "--community", "maple"]);
    assert_eq!(terminal_bytes(&out.stdout), Vec::<String>::new());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("to o3 <\"a b\"@example.org>"), "{text}");
    assert!(
        text.contains("excluded o1: invalid primary email"),
        "{text}"
    );
    let (_, review) = s.json(&["review", "--community", "maple", "--json"]);
    let o3 = review["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["owner_id"] == "o3")
        .unwrap();
    assert_eq!(o3["email"], "\"a b\"@ｅｘａｍｐｌｅ.org");
    assert_eq!(o3["delivered_to"], "\"a b\"@example.org");

    // A draft's subject, listed.
    s.ok(&[
        "draft",
        "save",
        "--community",
        "maple",
        "--subject",
        "Hi\u{1b}[2J {{community.name}}",
    ]);
    let out = s.run(&["draft", "list", "--community", "maple"]);
    assert_eq!(terminal_bytes(&out.stdout), Vec::<String>::new());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Hi\\u{1b}[2J"));

    // Errors that quote what was given.
    let out = s.run(&["roster", "--community", "\u{1b}[2Jmaple"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(terminal_bytes(&out.stderr), Vec::<String>::new());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\\u{1b}[2Jmaple"));
    s.write(
        "edits.csv",
        &format!("owner_id,primary_email\no2,\"{HOSTILE_EMAIL}\"\n"),
    );
    let out = s.run(&["mass-edit", "--edits", "edits.csv"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(terminal_bytes(&out.stderr), Vec::<String>::new(), "{err}");
    assert!(err.contains("\\u{1b}]0;pwned\\u{7}"), "{err}");

    // A send report (the owners with escapes are excluded, and listed).
    let out = s.run(&["send", "--community", "maple", "--outbox", "out"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(terminal_bytes(&out.stdout), Vec::<String>::new());
    assert_eq!(terminal_bytes(&out.stderr), Vec::<String>::new());
}
