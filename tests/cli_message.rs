//! The message as the manager wrote it, through the `owner_access` example: every
//! MESSAGE flag a draft was saved with is what it sends, and a resend keeps the From
//! and portal URL of the owner's latest batch.
#![cfg(all(feature = "smtp", feature = "sqlite"))]

mod cli_support;

use std::path::Path;

use cli_support::*;
use mailparse::{MailHeaderMap, ParsedMail};

/// One message file, parsed: headers and the decoded text of each part.
struct Sent {
    from: String,
    to: String,
    reply_to: Option<String>,
    subject: String,
    text: String,
    html: String,
    attachments: Vec<String>,
}

fn read(path: &Path) -> Sent {
    let bytes = std::fs::read(path).unwrap();
    let mail = mailparse::parse_mail(&bytes).unwrap();
    let mut sent = Sent {
        from: mail.headers.get_first_value("From").unwrap(),
        to: mail.headers.get_first_value("To").unwrap(),
        reply_to: mail.headers.get_first_value("Reply-To"),
        subject: mail.headers.get_first_value("Subject").unwrap(),
        text: String::new(),
        html: String::new(),
        attachments: Vec::new(),
    };
    fn walk(part: &ParsedMail<'_>, sent: &mut Sent) {
        let disposition = part.get_content_disposition();
        if let Some(name) = disposition.params.get("filename") {
            sent.attachments.push(name.clone());
        } else if part.ctype.mimetype == "text/plain" {
            sent.text = part.get_body().unwrap();
        } else if part.ctype.mimetype == "text/html" {
            sent.html = part.get_body().unwrap();
        }
        for sub in &part.subparts {
            walk(sub, sent);
        }
    }
    walk(&mail, &mut sent);
    sent
}

/// The registration link in a text: from `https://` to the end of the token.
fn link_in(text: &str, portal: &str) -> String {
    let start = text
        .find(portal)
        .unwrap_or_else(|| panic!("no link to {portal} in {text}"));
    text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '<' | ')'))
        .collect()
}

#[test]
fn a_draft_sends_every_message_flag_it_was_saved_with() {
    let s = Session::new().imported();
    s.write(
        "letter.txt",
        "Dear {{owner.first_name}}, the oak board invites you.\n\n{{registration_url}}\n",
    );
    s.write(
        "letter.html",
        "<p>Dear {{owner.first_name}}, the <b>oak</b> board invites you.</p>\
         <p><a href=\"{{registration_url}}\">Register</a></p>",
    );
    s.write("welcome.pdf", "%PDF-1.4 welcome");
    let portal = "https://portal.example.org/register?community=oak";
    let id = s.ok(&[
        "draft",
        "save",
        "--community",
        "maple",
        "--select",
        "o1,o2",
        "--subject",
        "Oak portal for {{owner.first_name}}",
        "--text",
        "letter.txt",
        "--html",
        "letter.html",
        "--attach",
        "welcome.pdf",
        "--summary-to",
        "manager@maple.example",
        "--reply-to",
        "help@maple.example",
        "--from",
        "HOA <board@maple.example>",
        "--portal-url",
        portal,
    ]);
    let id = id.trim();
    // Sent with none of the flags again: the draft holds them all.
    let (code, report) = s.json(&["draft", "send", id, "--outbox", "out", "--json"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["sent"], 2);
    assert_eq!(report["summary"]["to"], "manager@maple.example");
    let files = s.outbox_files("out");
    assert_eq!(files.len(), 3, "two invitations and the recap");
    let messages: Vec<Sent> = files.iter().map(|f| read(f)).collect();
    let (recaps, invitations): (Vec<&Sent>, Vec<&Sent>) = messages
        .iter()
        .partition(|m| m.to.contains("manager@maple.example"));
    assert_eq!(recaps.len(), 1);
    assert_eq!(invitations.len(), 2);
    for m in &invitations {
        assert_eq!(m.from, "\"HOA\" <board@maple.example>");
        assert_eq!(m.reply_to.as_deref(), Some("help@maple.example"));
        assert!(m.subject.starts_with("Oak portal for "), "{}", m.subject);
        assert!(m.text.contains("the oak board invites you"), "{}", m.text);
        assert!(m.html.contains("the <b>oak</b> board"), "{}", m.html);
        assert_eq!(m.attachments, ["welcome.pdf"]);
        let text_link = link_in(&m.text, portal);
        assert!(
            text_link.starts_with(&format!("{portal}&token=")),
            "{text_link}"
        );
        let html = m.html.replace("&#x3D;", "=").replace("&amp;", "&");
        assert_eq!(link_in(&html, portal), text_link, "both parts, one link");
        assert!(!m.text.contains("localhost"), "{}", m.text);
    }
    assert_eq!(recaps[0].from, "\"HOA\" <board@maple.example>");

    // A resend with no MESSAGE flag: the From and portal URL of the owner's batch.
    let (code, report) = s.json(&["resend", "--owner", "o1", "--outbox", "again", "--json"]);
    assert_eq!(code, 0, "{report}");
    let again = read(&s.outbox_files("again")[0]);
    assert_eq!(again.from, "\"HOA\" <board@maple.example>");
    assert!(link_in(&again.text, portal).contains("&token="));
    assert!(again.subject.starts_with("Oak portal for Ann"));

    // A resend with one flag keeps the rest of the latest batch.
    let (code, _) = s.json(&[
        "resend",
        "--owner",
        "o2",
        "--subject",
        "Reminder for {{owner.first_name}}",
        "--outbox",
        "third",
        "--json",
    ]);
    assert_eq!(code, 0);
    let third = read(&s.outbox_files("third")[0]);
    assert_eq!(third.subject, "Reminder for Bo");
    assert_eq!(third.from, "\"HOA\" <board@maple.example>");
    assert!(link_in(&third.text, portal).contains("&token="));
    assert!(third.text.contains("the oak board invites you"));
}

#[test]
fn send_counts_the_excluded_owners_by_reason_and_json_still_lists_them() {
    let s = Session::new().imported();
    let text = s.ok(&["send", "--community", "maple", "--outbox", "out"]);
    assert!(
        text.contains(
            "excluded: 1 no primary email, 1 invalid email, 2 email shared with another owner, \
             1 already registered (`review` or `--json` lists each owner)"
        ),
        "{text}"
    );
    assert!(!text.contains("excluded o"), "no line per owner: {text}");
    let (code, report) = s.json(&[
        "send",
        "--community",
        "maple",
        "--select",
        "o3,o4",
        "--outbox",
        "again",
        "--json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        reasons(&report),
        [("o3", "no_email"), ("o4", "invalid_email")].map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
}

#[test]
fn a_token_that_starts_with_a_dash_is_a_token_not_a_flag() {
    let s = Session::new().imported();
    // About one token in 64 starts with `-` (base64url): clap took it for a flag.
    let out = s.run(&["verify", "--token", &format!("-{}", "A".repeat(42))]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("this registration link is not valid"),
        "{stderr}"
    );
}

#[test]
fn the_communities_file_sets_the_time_zone_and_branding_of_the_letter() {
    let s = Session::new();
    s.write(
        "communities.csv",
        "community_id,name,reply_to,time_zone,logo_url,accent_color\n\
         maple,Maple Grove HOA,board@maple.example.org,Europe/Athens,https://maple.example.org/logo.png,#2E6B30\n",
    );
    let s = s.imported();
    s.ok(&[
        "send",
        "--community",
        "maple",
        "--select",
        "o1",
        "--outbox",
        "out",
    ]);
    let sent = read(&s.outbox_files("out")[0]);
    assert!(
        sent.text.contains(" EET."),
        "the expiry in Athens time: {}",
        sent.text
    );
    assert!(sent.html.contains("background-color: #2e6b30;"));
    assert!(
        sent.html
            .contains("<img src=\"https://maple.example.org/logo.png\"")
    );

    s.write(
        "bad.csv",
        "community_id,name,reply_to,time_zone\nmaple,Maple Grove HOA,,Mars/Base\n",
    );
    let out = s.run(&["import", "--communities", "bad.csv"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("time_zone"));
}
