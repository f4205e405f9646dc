//! Direction marks (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) never reach
//! a header or a file name: `invoice<U+202E>fdp.exe` would show as `invoiceexe.pdf`.
//! They are removed from attachment file names, display names and subjects; the
//! zero-width joiner and non-joiner, which emoji and Persian names need, stay. Checked
//! on messages read back with the independent `mailparse`, against a model written
//! here.

mod mime_common;

use std::sync::Arc;

use mailparse::{MailHeaderMap, parse_mail};
use owner_access::domain::{Community, CommunityId, EmailAddress, Mailbox, Owner, OwnerId};
use owner_access::domain::{PropertyId, Timestamp};
use owner_access::invite::Attachment;
use owner_access::mime::MessageFrame;
use owner_access::prelude::*;
use owner_access::template::RenderedParts;
use owner_access::{FileOutbox, InMemoryRepository, OwnerAccess, Selection};
use proptest::prelude::*;

/// The direction controls, as the issue lists them (written out here, not taken
/// from the crate).
const DIRECTION: [char; 12] = [
    '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}',
    '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
];

fn has_direction_mark(s: &str) -> bool {
    s.chars().any(|c| DIRECTION.contains(&c))
}

/// The model of a header text: direction marks gone, every control character (and
/// the line and paragraph separators) a space.
fn model_text(s: &str) -> String {
    s.chars()
        .filter(|c| !DIRECTION.contains(c))
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Without white space: how a display name compares. A phrase keeps no runs of
/// spaces, and mailparse joins adjacent encoded-words without the space between them
/// (as RFC 2047 reads them) where other readers keep it; `tests/mime_props.rs` checks
/// the words themselves.
fn squeezed(s: &str) -> String {
    s.split_whitespace().collect()
}

#[tokio::test]
async fn a_file_name_with_a_right_to_left_override_arrives_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(InMemoryRepository::new());
    let community = CommunityId::new("c1").unwrap();
    repo.upsert_community(&Community::new(community.clone(), "Maple"))
        .await
        .unwrap();
    let owner = Owner::new(
        OwnerId::new("o1").unwrap(),
        community.clone(),
        PropertyId::new("u1").unwrap(),
        "Ann\u{202E}",
        "\u{2067}Lee",
    )
    .with_primary_email("ann@example.org");
    repo.upsert_owners(&[owner], Timestamp::from_unix_seconds(0))
        .await
        .unwrap();
    let outbox = Arc::new(FileOutbox::new(dir.path()).unwrap());
    let service = OwnerAccess::builder(repo, outbox.clone())
        .sender("Maple\u{200F} Board <board@maple.example>")
        .portal_url("https://portal.example.com/register")
        .build()
        .unwrap();
    let selection: Selection = [OwnerId::new("o1").unwrap()].into_iter().collect();
    let mut invite = service.compose(&community, &selection).await.unwrap();
    invite.subject = "Your \u{202E}link\u{202C} for the portal".into();
    let invite = invite.with_attachment(Attachment::new(
        "invoice\u{202E}fdp.exe",
        "application/octet-stream",
        b"MZ".to_vec(),
    ));
    let review = service.review(&invite).await.unwrap();
    assert!(review.problems.is_empty(), "{:?}", review.problems);
    let report = service.send(review).await.unwrap();
    assert_eq!(report.sent, 1);

    let messages = outbox.messages().unwrap();
    assert_eq!(messages.len(), 1);
    let raw = &messages[0].1;
    let mail = parse_mail(raw).unwrap();
    let attachment = mail
        .subparts
        .iter()
        .find(|p| p.get_content_disposition().disposition == mailparse::DispositionType::Attachment)
        .expect("the attachment");
    let name = attachment
        .get_content_disposition()
        .params
        .get("filename")
        .cloned()
        .expect("a file name");
    assert_eq!(name, "invoicefdp.exe");
    assert_eq!(
        mail.headers.get_first_value("Subject").unwrap(),
        "Your link for the portal"
    );
    let (to_name, _) = mime_common::single_mailbox(&mail, "To");
    assert_eq!(to_name.as_deref(), Some("Ann Lee"));
    let (from_name, _) = mime_common::single_mailbox(&mail, "From");
    assert_eq!(from_name.as_deref(), Some("Maple Board"));
    // Nor anywhere in a header as written: not as UTF-8, not percent-encoded (RFC
    // 2231), not Q-encoded (RFC 2047). (The text body may hold them: it is the
    // letter, shown as written.)
    for header in mail.headers.iter().chain(attachment.headers.iter()) {
        let raw_value = String::from_utf8_lossy(header.get_value_raw()).to_ascii_uppercase();
        for needle in [
            "%E2%80%AE",
            "=E2=80=AE",
            "%E2%81%A7",
            "=E2=81=A7",
            "=E2=80=8F",
        ] {
            assert!(
                !raw_value.contains(needle),
                "{needle} in {}",
                header.get_key()
            );
        }
        assert!(!has_direction_mark(&raw_value));
    }
}

/// Text mixing direction marks with what must survive: ZWJ emoji, a Persian name with
/// ZWNJ, Hebrew and Arabic letters, ASCII, spaces and the odd control character.
fn text_with_marks(max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => prop::sample::select(DIRECTION.to_vec()).prop_map(String::from),
        2 => prop::sample::select(vec![
            "👩\u{200D}💻", "می\u{200C}خواهم", "שלום", "مرحبا", "Ann", "Lee", "invoice",
            "fdp", ".exe", ".pdf", " ", " ", "-", "é", "\t", "\u{200B}",
        ])
        .prop_map(String::from),
        1 => "[a-z]{1,6}",
    ];
    prop::collection::vec(piece, 0..max).prop_map(|v| v.concat())
}

fn frame_with_attachment(name: &str) -> MessageFrame {
    let from = Mailbox::new(
        Some("Maple Court HOA"),
        EmailAddress::parse("no-reply@maple.example.org").unwrap(),
    )
    .unwrap();
    MessageFrame::new(
        &from,
        None,
        &[Attachment::new(name, "application/pdf", vec![1, 2, 3])],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever a display name, a subject or a file name holds, no direction mark is
    /// in what a reader decodes, and everything else of it is there.
    #[test]
    fn no_direction_mark_reaches_a_header_or_file_name(
        name in text_with_marks(12),
        subject in text_with_marks(16),
        file in text_with_marks(8),
    ) {
        let file_name = format!("{file}x.pdf");
        let to = Mailbox {
            name: Some(name.clone()),
            address: EmailAddress::parse("owner@example.org").unwrap(),
        };
        let parts = RenderedParts {
            subject: subject.clone(),
            text: "text".into(),
            html: "<p>text</p>".into(),
        };
        let mut raw = Vec::new();
        frame_with_attachment(&file_name).write_message(
            &to,
            "oa.1.2@x.example",
            Timestamp::from_unix_seconds(1_795_701_600),
            &parts,
            &mut raw,
        );
        mime_common::assert_header_block(&raw);
        let mail = parse_mail(&raw).expect("parses");

        let got_subject = mail.headers.get_first_value("Subject").unwrap_or_default();
        prop_assert!(!has_direction_mark(&got_subject), "{got_subject:?}");
        prop_assert_eq!(&got_subject, &model_text(&subject));

        let (got_name, _) = mime_common::single_mailbox(&mail, "To");
        let got_name = got_name.unwrap_or_default();
        prop_assert!(!has_direction_mark(&got_name), "{got_name:?}");
        prop_assert_eq!(squeezed(&got_name), squeezed(&model_text(&name)));

        let attachment = &mail.subparts[1];
        let sent = attachment
            .get_content_disposition()
            .params
            .get("filename")
            .cloned()
            .unwrap_or_default();
        prop_assert!(!has_direction_mark(&sent), "{sent:?}");
        // The rest of the name is kept: its joiners and letters, in order.
        let kept = |s: &str| -> String {
            s.chars().filter(|c| c.is_alphanumeric() || *c == '\u{200C}' || *c == '\u{200D}').collect()
        };
        prop_assert_eq!(kept(&sent), kept(&file_name));
    }
}
