//! One owner's message, parsed back with the independent `mailparse` crate
//! (DESIGN rules 3, 7, 9).

mod mime_common;

use mailparse::{MailHeaderMap, ParsedMail, parse_mail};
use mime_common::{
    assert_header_block, assert_wire_lines, lf, phrase_reading, single_header, single_mailbox,
};
use owner_access::domain::{BatchId, EmailAddress, Mailbox, OwnerId, Timestamp};
use owner_access::invite::Attachment;
use owner_access::mime::{MessageFrame, message_id};
use owner_access::template::{
    CompiledTemplate, DEFAULT_HTML, DEFAULT_SUBJECT, DEFAULT_TEXT, MergeFields, RenderedParts,
};

fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

fn from() -> Mailbox {
    Mailbox::new(Some("Maple Court HOA"), addr("no-reply@maple.example.org")).unwrap()
}

fn owner(name: Option<&str>) -> Mailbox {
    // Built directly, not through `Mailbox::new`, so hostile names reach the writer.
    Mailbox {
        name: name.map(str::to_owned),
        address: addr("ana.lopes@example.com"),
    }
}

fn date() -> Timestamp {
    Timestamp::from_unix_seconds(1_795_701_600)
}

fn parts() -> RenderedParts {
    let t = CompiledTemplate::compile(DEFAULT_SUBJECT, DEFAULT_TEXT, Some(DEFAULT_HTML)).unwrap();
    t.render(&MergeFields {
        first_name: "Ana".into(),
        last_name: "Lópes".into(),
        full_name: "Ana Lópes".into(),
        property_address: "12 Elm Street, Unit 4".into(),
        community_name: "Maple Court HOA".into(),
        registration_url: format!(
            "https://portal.example.org/register?token={}",
            "x".repeat(90)
        ),
        expires_on: "2026-12-10".into(),
        portal_url: "https://portal.example.org/".into(),
        reply_to: "board@maple.example.org".into(),
        logo_url: String::new(),
        accent_color: "#1a5fb4".into(),
    })
    .unwrap()
}

fn pdf() -> Vec<u8> {
    (0..5000u32).map(|i| (i * 7 % 256) as u8).collect()
}

fn attachments() -> Vec<Attachment> {
    vec![
        Attachment::new("../Welcome Package.pdf", "application/pdf", pdf()),
        Attachment::new(
            "Règlement intérieur 😀.txt",
            "text/plain",
            b"rules\n".to_vec(),
        ),
        Attachment::new(
            format!("{}.csv", "long-name-".repeat(20)),
            "text/csv",
            b"a,b\r\n".to_vec(),
        ),
    ]
}

fn write(frame: &MessageFrame, to: &Mailbox, id: &str, parts: &RenderedParts) -> Vec<u8> {
    let mut out = Vec::new();
    frame.write_message(to, id, date(), parts, &mut out);
    out
}

fn text_and_html<'a>(alternative: &'a ParsedMail<'a>) -> (String, String) {
    assert_eq!(alternative.ctype.mimetype, "multipart/alternative");
    assert_eq!(alternative.subparts.len(), 2);
    let text = &alternative.subparts[0];
    let html = &alternative.subparts[1];
    assert_eq!(text.ctype.mimetype, "text/plain");
    assert_eq!(text.ctype.charset, "utf-8");
    assert_eq!(html.ctype.mimetype, "text/html");
    (text.get_body().unwrap(), html.get_body().unwrap())
}

#[test]
fn a_full_message_parses_back_to_what_was_rendered() {
    let frame = MessageFrame::new(
        &from(),
        Some(&addr("board@maple.example.org")),
        &attachments(),
    );
    let parts = parts();
    let id = "oa.1.2@maple.example.org";
    let raw = write(&frame, &owner(Some("Ana Lópes")), id, &parts);
    assert_header_block(&raw);
    assert_wire_lines(&raw);

    let mail = parse_mail(&raw).unwrap();
    let (name, address) = single_mailbox(&mail, "To");
    assert_eq!(name.as_deref(), Some("Ana Lópes"));
    assert_eq!(address, "ana.lopes@example.com");
    let (from_name, from_address) = single_mailbox(&mail, "From");
    assert_eq!(from_name.as_deref(), Some("Maple Court HOA"));
    assert_eq!(from_address, "no-reply@maple.example.org");
    assert_eq!(
        single_mailbox(&mail, "Reply-To").1,
        "board@maple.example.org"
    );
    assert_eq!(single_header(&mail, "Subject"), parts.subject);
    assert_eq!(single_header(&mail, "Message-ID"), format!("<{id}>"));
    assert_eq!(single_header(&mail, "MIME-Version"), "1.0");
    assert_eq!(
        mailparse::dateparse(&single_header(&mail, "Date")).unwrap(),
        date().unix_seconds()
    );
    // No other address header: one recipient per message (rule 3).
    for h in ["Cc", "Bcc"] {
        assert!(mail.headers.get_first_value(h).is_none());
    }

    assert_eq!(mail.ctype.mimetype, "multipart/mixed");
    assert_eq!(mail.subparts.len(), 4);
    let (text, html) = text_and_html(&mail.subparts[0]);
    assert_eq!(lf(&text), parts.text);
    assert_eq!(lf(&html), parts.html);

    let expected = [
        ("Welcome Package.pdf", "application/pdf", pdf()),
        (
            "Règlement intérieur 😀.txt",
            "text/plain",
            b"rules\n".to_vec(),
        ),
        (
            &*format!("{}.csv", "long-name-".repeat(20)),
            "text/csv",
            b"a,b\r\n".to_vec(),
        ),
    ];
    for (part, (name, ctype, bytes)) in mail.subparts[1..].iter().zip(expected) {
        let disposition = part.get_content_disposition();
        assert_eq!(
            disposition.disposition,
            mailparse::DispositionType::Attachment
        );
        let sent_name = disposition.params.get("filename").expect("a file name");
        if name.chars().count() < 120 {
            assert_eq!(sent_name, name);
        } else {
            // Sanitised to 120 characters, the extension kept.
            assert_eq!(sent_name.chars().count(), 120);
            assert!(sent_name.ends_with(".csv"));
        }
        assert_eq!(part.ctype.mimetype, ctype);
        assert_eq!(part.get_body_raw().unwrap(), bytes);
    }
}

#[test]
fn without_attachments_the_message_is_multipart_alternative() {
    let frame = MessageFrame::new(&from(), None, &[]);
    let parts = parts();
    let raw = write(&frame, &owner(None), "a@b.example", &parts);
    assert_header_block(&raw);
    assert_wire_lines(&raw);
    let mail = parse_mail(&raw).unwrap();
    assert!(mail.headers.get_first_value("Reply-To").is_none());
    let (name, address) = single_mailbox(&mail, "To");
    assert_eq!((name, address.as_str()), (None, "ana.lopes@example.com"));
    let (text, html) = text_and_html(&mail);
    assert_eq!(lf(&text), parts.text);
    assert_eq!(lf(&html), parts.html);
}

#[test]
fn international_domains_go_on_the_wire_in_ascii() {
    let frame = MessageFrame::new(&from(), Some(&addr("board@bücher.example")), &[]);
    let to = Mailbox {
        name: Some("Jürgen".into()),
        address: addr("owner@bücher.example"),
    };
    let raw = write(&frame, &to, "a@b.example", &parts());
    assert_wire_lines(&raw);
    let mail = parse_mail(&raw).unwrap();
    assert_eq!(single_mailbox(&mail, "To").1, "owner@xn--bcher-kva.example");
    assert_eq!(
        single_mailbox(&mail, "Reply-To").1,
        "board@xn--bcher-kva.example"
    );
}

#[test]
fn hostile_and_long_names_and_subjects_make_a_well_formed_header_block() {
    let long_two_words = "Maximiliana-Theodora Wolfeschlegelsteinhausenbergerdorff";
    let names = [
        long_two_words.to_owned(),
        format!("{long_two_words} {long_two_words}"),
        "Doe, John \"JD\" <evil@example.org>; x".to_owned(),
        "=?utf-8?q?fake?= \\ back\\slash".to_owned(),
        "Émilie 😀 Ñuñez".to_owned(),
        "a".repeat(300),
        "é".repeat(300),
        "😀".repeat(120),
        "Evil\r\nBcc: victim@example.org".to_owned(),
        "  spaced   out  ".to_owned(),
        "Wolfeschlegelsteinhausenbergerdorffwolfeschlegelsteinhausenbergerdorffwolfeschlegel"
            .to_owned(),
    ];
    let frame = MessageFrame::new(&from(), None, &[]);
    for name in &names {
        let mut parts = parts();
        parts.subject = format!("Welcome, {name}");
        let raw = write(&frame, &owner(Some(name)), "a@b.example", &parts);
        assert_header_block(&raw);
        let head = String::from_utf8(mime_common::header_block(&raw).to_vec()).unwrap();
        assert!(
            !head.contains("victim@example.org\r\n") && !head.contains("\r\nBcc"),
            "{head}"
        );
        let mail = parse_mail(&raw).unwrap();
        let expected = mime_common::name_words(name);
        let (got, address) = single_mailbox(&mail, "To");
        assert_eq!(address, "ana.lopes@example.com", "{head}");
        // Read both ways: word by word (as Python and mail clients read a phrase),
        // and as RFC 2047 says (mailparse: white space between encoded-words
        // dropped). Only an over-long word reads with spaces the first way.
        let by_words = mime_common::phrase_reading(&raw, "To").unwrap();
        if expected.split(' ').any(mime_common::is_over_long) {
            assert_eq!(
                by_words.replace(' ', ""),
                expected.replace(' ', ""),
                "{head}"
            );
        } else {
            assert_eq!(by_words, expected, "{head}");
        }
        let got = got.unwrap();
        if expected.contains(' ') && got != expected {
            assert_eq!(got.replace(' ', ""), expected.replace(' ', ""), "{head}");
        } else {
            assert_eq!(got, expected, "{head}");
        }
        assert_eq!(
            single_header(&mail, "Subject"),
            format!("Welcome, {}", name.replace(['\r', '\n'], " ")),
            "{head}"
        );
    }
}

#[test]
fn the_long_two_word_name_stays_on_well_folded_lines() {
    let name = "Maximiliana-Theodora Wolfeschlegelsteinhausenbergerdorff";
    let frame = MessageFrame::new(&from(), None, &[]);
    let raw = write(&frame, &owner(Some(name)), "a@b.example", &parts());
    let head = String::from_utf8(mime_common::header_block(&raw).to_vec()).unwrap();
    // The name is one quoted string on the To line (never split), the address on
    // that line or on a folded one.
    let to_start = head.find("\r\nTo: ").unwrap() + 2;
    let to_field: String = head[to_start..]
        .split("\r\n")
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with(' '))
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\r\n");
    assert!(
        to_field == format!("To: \"{name}\"\r\n <ana.lopes@example.com>")
            || to_field == format!("To: \"{name}\" <ana.lopes@example.com>"),
        "{to_field:?}"
    );
    for line in head.split("\r\n") {
        assert!(line.len() <= 78, "{line:?}");
    }
}

#[test]
fn mail_builder_handles_the_long_two_word_name_too() {
    // The check asked for: mail-builder 2's own output for the reported name, run
    // through the same header-block checks. (This module writes its own headers;
    // this test records how the library behaves.)
    let name = "Maximiliana-Theodora Wolfeschlegelsteinhausenbergerdorff";
    let raw = mail_builder::MessageBuilder::new()
        .from(("Portal", "p@example.org"))
        .to((name, "owner@example.org"))
        .subject(format!("Welcome {name}"))
        .text_body("hi")
        .write_to_vec()
        .unwrap();
    assert_header_block(&raw);
    let mail = parse_mail(&raw).unwrap();
    assert_eq!(single_mailbox(&mail, "To").0.as_deref(), Some(name));
}

/// What mail-builder 2 gets wrong for our inputs: the reason the crate writes its own
/// headers (see the `mime` module's documentation). Each case goes through both
/// writers and the same independent readers; ours reads right, mail-builder's does
/// not. The day mail-builder writes these right, this test fails and the decision can
/// be taken again.
#[test]
fn mail_builder_gets_our_names_and_subjects_wrong_where_this_writer_does_not() {
    let theirs = |name: &str, subject: &str| {
        mail_builder::MessageBuilder::new()
            .from(("Maple Court HOA", "no-reply@maple.example.org"))
            .to((name, "ana.lopes@example.com"))
            .subject(subject)
            .text_body("hi")
            .write_to_vec()
            .unwrap()
    };
    let ours = |name: &str, subject: &str| {
        let frame = MessageFrame::new(&from(), None, &[]);
        let parts = RenderedParts {
            subject: subject.into(),
            text: "hi".into(),
            html: "<p>hi</p>".into(),
        };
        write(&frame, &owner(Some(name)), "1@x.example", &parts)
    };

    // A display name of three Greek words: mail-builder ends an encoded-word inside
    // the surname, and a reader that keeps the space between two encoded-words
    // (Python's `email.policy.default`, Thunderbird, Apple Mail; `phrase_reading`
    // reads as they do, and tests/headers_python.rs asks Python itself) shows
    // "Πα παδοπούλου". The header block is well formed: only the name is wrong.
    let name = "Αικατερίνη Ελευθερία Παπαδοπούλου";
    let raw = theirs(name, "x");
    assert_header_block(&raw);
    assert_eq!(
        phrase_reading(&raw, "To").as_deref(),
        Some("Αικατερίνη Ελευθερία Πα παδοπούλου"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(
        phrase_reading(&ours(name, "x"), "To").as_deref(),
        Some(name)
    );

    // A subject that holds the text of an encoded-word (a manager quoting one, or a
    // subject copied from a raw header): mail-builder writes it as it is, so every
    // reader decodes it and the words the manager wrote are lost.
    let subject = "About =?utf-8?q?Caf=C3=A9?= night";
    let raw = theirs("Ana", subject);
    let read = |raw: &[u8]| single_header(&parse_mail(raw).unwrap(), "Subject");
    assert_eq!(read(&raw), "About Café night");
    assert_eq!(read(&ours("Ana", subject)), subject);
}

#[test]
fn attachments_are_encoded_once_and_copied_into_every_message() {
    let frame = MessageFrame::new(&from(), None, &attachments());
    let encoded = frame.encoded_attachments();
    assert_eq!(encoded.len(), 3);
    assert_eq!(encoded[0].file_name(), "Welcome Package.pdf");
    assert_eq!(encoded[0].content_type(), "application/pdf");
    let parts = parts();
    let first = write(&frame, &owner(Some("A")), "1@x.example", &parts);
    let second = write(&frame, &owner(Some("B")), "2@x.example", &parts);
    for attachment in encoded {
        let block = attachment.as_bytes();
        for message in [&first, &second] {
            assert!(
                message.windows(block.len()).any(|w| w == block),
                "{} not copied verbatim",
                attachment.file_name()
            );
        }
    }
    // The boundaries differ per message.
    let boundary = |m: &[u8]| parse_mail(m).unwrap().ctype.params["boundary"].clone();
    assert_ne!(boundary(&first), boundary(&second));
}

#[test]
fn writing_appends_to_a_reused_buffer() {
    let frame = MessageFrame::new(&from(), None, &attachments());
    let parts = parts();
    let one = write(&frame, &owner(Some("A")), "1@x.example", &parts);
    let mut buffer = b"previous".to_vec();
    buffer.clear();
    frame.write_message(
        &owner(Some("A")),
        "1@x.example",
        date(),
        &parts,
        &mut buffer,
    );
    assert_eq!(buffer, one);
    frame.write_message(
        &owner(Some("A")),
        "1@x.example",
        date(),
        &parts,
        &mut buffer,
    );
    assert_eq!(buffer.len(), 2 * one.len());
}

#[test]
fn mostly_non_ascii_bodies_round_trip() {
    let frame = MessageFrame::new(&from(), None, &[]);
    let parts = RenderedParts {
        subject: "Добро пожаловать".into(),
        text: "Здравствуйте, Анна!\n\nСсылка: https://x.example/r?t=1\r\nлишний\rCR\n".into(),
        html: format!("<p>{}</p>\n", "日本語のテキスト。".repeat(40)),
    };
    let raw = write(&frame, &owner(Some("Анна")), "1@x.example", &parts);
    assert_header_block(&raw);
    assert_wire_lines(&raw);
    let mail = parse_mail(&raw).unwrap();
    assert_eq!(single_header(&mail, "Subject"), parts.subject);
    let (text, html) = text_and_html(&mail);
    assert_eq!(lf(&text), lf(&parts.text));
    assert_eq!(lf(&html), parts.html);
}

#[test]
fn the_summary_recap_is_plain_text_without_attachments() {
    let frame = MessageFrame::new(
        &from(),
        Some(&addr("board@maple.example.org")),
        &attachments(),
    );
    let text = "Sent to 2 owners:\n- Ana Lópes: sent\n- Bo: failed (550 no such user)\n";
    let mut raw = Vec::new();
    frame.write_plain(
        &addr("manager@maple.example.org"),
        "recap@x.example",
        date(),
        "Summary: Owner Access invitations\r\nBcc: x@y.example",
        text,
        &mut raw,
    );
    assert_header_block(&raw);
    assert_wire_lines(&raw);
    let mail = parse_mail(&raw).unwrap();
    assert_eq!(mail.ctype.mimetype, "text/plain");
    assert!(mail.subparts.is_empty());
    assert_eq!(
        single_mailbox(&mail, "To"),
        (None, "manager@maple.example.org".into())
    );
    assert_eq!(
        single_header(&mail, "Subject"),
        "Summary: Owner Access invitations  Bcc: x@y.example"
    );
    assert!(mail.headers.get_first_value("Bcc").is_none());
    assert_eq!(single_header(&mail, "Message-ID"), "<recap@x.example>");
    assert_eq!(lf(&mail.get_body().unwrap()), text);
}

#[test]
fn message_ids_are_deterministic_distinct_and_valid() {
    let batch = BatchId::new("b-1").unwrap();
    let other_batch = BatchId::new("b-2").unwrap();
    let owners = ["o-1", "o-2", "owner <7> \"x\" @ home ünï", "o-1 "];
    let id = |b: &BatchId, o: &str| message_id(b, &OwnerId::new(o).unwrap(), "maple.example.org");
    assert_eq!(id(&batch, "o-1"), id(&batch, "o-1"));
    // "o-1 " is trimmed to the same owner id as "o-1".
    assert_eq!(id(&batch, "o-1"), id(&batch, "o-1 "));
    assert_ne!(id(&batch, "o-1"), id(&batch, "o-2"));
    assert_ne!(id(&batch, "o-1"), id(&other_batch, "o-1"));
    // No ambiguity from concatenation.
    assert_ne!(
        message_id(
            &BatchId::new("ab").unwrap(),
            &OwnerId::new("c").unwrap(),
            "x.org"
        ),
        message_id(
            &BatchId::new("a").unwrap(),
            &OwnerId::new("bc").unwrap(),
            "x.org"
        )
    );
    for owner in owners {
        let value = id(&batch, owner);
        let (left, domain) = value.split_once('@').unwrap();
        assert_eq!(domain, "maple.example.org");
        assert!(
            left.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'),
            "{value}"
        );
        let parsed = mailparse::msgidparse(&format!("<{value}>")).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0], value);
    }
    assert!(
        message_id(&batch, &OwnerId::new("o").unwrap(), "bücher.example")
            .ends_with("@xn--bcher-kva.example")
    );
    assert!(
        message_id(&batch, &OwnerId::new("o").unwrap(), "bad domain>")
            .ends_with("@owner-access.invalid")
    );
}
