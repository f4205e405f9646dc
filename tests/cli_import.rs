//! One step means one step: `import` is one transaction (a bad row late in the file
//! keeps nothing, the communities included), and `mass-edit` takes a file whose owners
//! belong to several communities, all or nothing for the whole file.
#![cfg(all(feature = "smtp", feature = "sqlite"))]

mod cli_support;

use cli_support::*;
use serde_json::Value;

const OWNERS_HEADER: &str = "owner_id,community_id,property_id,first_name,last_name,property_address,primary_email,registered\n";

fn two_communities() -> Session {
    let s = Session::new();
    s.write(
        "communities.csv",
        "community_id,name,reply_to\nmaple,Maple Grove HOA,\npine,Pine Ridge HOA,\n",
    );
    s.write(
        "owners.csv",
        &format!(
            "{OWNERS_HEADER}m1,maple,u1,Ann,Lee,1 Elm St,ann@example.org,false\n\
             m2,maple,u2,Bo,Ng,2 Elm St,bo@example.org,false\n\
             p1,pine,v1,Cy,Roe,1 Fir St,cy@example.org,false\n"
        ),
    );
    s.imported()
}

fn email_of(s: &Session, community: &str, owner: &str) -> Value {
    let (code, roster) = s.json(&["roster", "--community", community, "--json"]);
    assert_eq!(code, 0);
    roster["owners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["owner_id"] == owner)
        .unwrap_or_else(|| panic!("{owner} not in {community}"))["email"]
        .clone()
}

fn mass_edits(s: &Session, community: &str) -> Vec<Value> {
    let (code, feed) = s.json(&["activity", "--community", community, "--json"]);
    assert_eq!(code, 0);
    feed.as_array()
        .unwrap()
        .iter()
        .filter(|e| e.to_string().contains("mass_edit"))
        .cloned()
        .collect()
}

#[test]
fn a_mass_edit_spans_communities_all_or_nothing() {
    let s = two_communities();
    // A bad row for pine's owner: nothing changes, in maple either.
    s.write(
        "bad.csv",
        "owner_id,primary_email\nm1,ann.new@example.org\np1,not-an-address\n",
    );
    let out = s.run(&["mass-edit", "--edits", "bad.csv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("p1") && !err.contains("unknown"), "{err}");
    assert_eq!(email_of(&s, "maple", "m1"), "ann@example.org");

    s.write(
        "edits.csv",
        "owner_id,primary_email\nm1,ann.new@example.org\np1,cy.new@example.org\nm2,bo@example.org\n",
    );
    let out = s.run(&["mass-edit", "--edits", "edits.csv"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("changed 2 addresses (1 unchanged)"), "{text}");
    assert_eq!(email_of(&s, "maple", "m1"), "ann.new@example.org");
    assert_eq!(email_of(&s, "pine", "p1"), "cy.new@example.org");
    // Each community's feed notes its own part of the edit.
    assert_eq!(mass_edits(&s, "maple").len(), 1);
    assert_eq!(mass_edits(&s, "pine").len(), 1);

    // An id that names no owner anywhere is unknown, and stops the whole file.
    s.write(
        "ghost.csv",
        "owner_id,primary_email\nm1,ann.third@example.org\nghost,g@example.org\n",
    );
    let out = s.run(&["mass-edit", "--edits", "ghost.csv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("`ghost` is unknown"), "{err}");
    assert_eq!(email_of(&s, "maple", "m1"), "ann.new@example.org");
}

#[test]
fn an_import_with_a_bad_row_late_in_the_file_keeps_nothing() {
    let s = Session::new();
    let mut owners = String::from(OWNERS_HEADER);
    // More than one chunk of good rows before the bad one.
    for i in 0..10_000 {
        owners.push_str(&format!(
            "o{i},maple,u{i},A,B,{i} Elm St,o{i}@example.org,false\n"
        ));
    }
    owners.push_str("late,maple,ul,A,B,x,late@example.org,sometimes\n");
    s.write("owners.csv", &owners);
    let out = s.run(&[
        "import",
        "--communities",
        "communities.csv",
        "--owners",
        "owners.csv",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("line 10002"), "{err}");
    let roster = s.run(&["roster", "--community", "maple"]);
    assert_eq!(roster.status.code(), Some(1), "the community was not kept");
}
