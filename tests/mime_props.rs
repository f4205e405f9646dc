//! Properties of the message writer over arbitrary names, subjects and bodies:
//! whatever they hold, the message parses, the header block is well formed, and
//! what was meant comes back out (DESIGN rules 3 and 7).

mod mime_common;

use mailparse::parse_mail;
use mime_common::{assert_header_block, assert_wire_lines, lf, single_header, single_mailbox};
use owner_access::domain::{EmailAddress, Mailbox, Timestamp};
use owner_access::invite::Attachment;
use owner_access::mime::MessageFrame;
use owner_access::template::{RenderedParts, single_line};
use proptest::prelude::*;

/// Characters that stress headers and bodies, mixed with arbitrary ones.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::sample::select(vec![
            ' ', ' ', 'a', 'Z', '0', '\r', '\n', '\t', '\0', '"', ',', '<', '>', ';', ':',
            '=', '?', '_', '\\', '(', ')', '@', '.', 'é', 'ß', 'Ж', '日', '😀', '\u{85}',
            '\u{2028}', '\u{a0}', '\u{feff}', '\u{7f}',
        ]),
        1 => any::<char>(),
    ]
}

fn tricky_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..max).prop_map(|v| v.into_iter().collect())
}

/// A string that is either tricky or long runs of a plain word (to force folding).
fn name_or_subject() -> impl Strategy<Value = String> {
    prop_oneof![
        tricky_string(320),
        ("[A-Za-z-]{1,80}", 1usize..12).prop_map(|(w, n)| vec![w; n].join(" ")),
        "[ -~]{0,300}",
    ]
}

fn frame(with_attachment: bool) -> MessageFrame {
    let from = Mailbox::new(
        Some("Maple Court HOA"),
        EmailAddress::parse("no-reply@maple.example.org").unwrap(),
    )
    .unwrap();
    let attachments = if with_attachment {
        vec![Attachment::new(
            "a.pdf",
            "application/pdf",
            vec![1, 2, 3, 255],
        )]
    } else {
        vec![]
    };
    MessageFrame::new(&from, None, &attachments)
}

/// The transfer-decoded body as UTF-8. (Not `get_body`, whose charset decoding drops
/// a leading byte-order mark that is part of the content.)
fn body(part: &mailparse::ParsedMail<'_>) -> String {
    String::from_utf8(part.get_body_raw().unwrap()).expect("UTF-8 body")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_name_subject_and_body_make_a_parseable_well_formed_message(
        name in name_or_subject(),
        subject in name_or_subject(),
        text in tricky_string(1500),
        html in tricky_string(1500),
        with_attachment in any::<bool>(),
    ) {
        let to = Mailbox {
            name: Some(name.clone()),
            address: EmailAddress::parse("owner@bücher.example").unwrap(),
        };
        let parts = RenderedParts { subject: subject.clone(), text: text.clone(), html: html.clone() };
        let mut raw = Vec::new();
        frame(with_attachment).write_message(&to, "oa.1.2@x.example", Timestamp::from_unix_seconds(1_795_701_600), &parts, &mut raw);

        assert_header_block(&raw);
        assert_wire_lines(&raw);
        let mail = parse_mail(&raw).expect("parses");

        let (got_name, address) = single_mailbox(&mail, "To");
        prop_assert_eq!(address, "owner@xn--bcher-kva.example");
        let expected_name = mime_common::name_words(&name);
        // Word by word (as Python and mail clients read a phrase): the name, but
        // for an over-long word, which alone is split; as RFC 2047 reads it
        // (mailparse): the same characters.
        let by_words = mime_common::phrase_reading(&raw, "To");
        if expected_name.split(' ').any(mime_common::is_over_long) {
            prop_assert_eq!(
                by_words.unwrap_or_default().replace(' ', ""),
                expected_name.replace(' ', "")
            );
        } else {
            prop_assert_eq!(by_words.clone(), (!expected_name.is_empty()).then(|| expected_name.clone()));
        }
        // (mailparse also trims Unicode white space such as U+00A0 around the name.)
        let squeezed = |n: &str| n.split_whitespace().collect::<String>();
        prop_assert_eq!(
            got_name.as_deref().map(squeezed).unwrap_or_default(),
            squeezed(&expected_name)
        );
        prop_assert_eq!(single_header(&mail, "Subject"), single_line(&subject));

        let alternative = if with_attachment { &mail.subparts[0] } else { &mail };
        prop_assert_eq!(alternative.subparts.len(), 2);
        prop_assert_eq!(lf(&body(&alternative.subparts[0])), lf(&text));
        prop_assert_eq!(lf(&body(&alternative.subparts[1])), lf(&html));
    }

    #[test]
    fn any_summary_subject_and_text_make_a_well_formed_recap(
        subject in name_or_subject(),
        text in tricky_string(1500),
    ) {
        let mut raw = Vec::new();
        frame(true).write_plain(
            &EmailAddress::parse("manager@maple.example.org").unwrap(),
            "recap@x.example",
            Timestamp::from_unix_seconds(0),
            &subject,
            &text,
            &mut raw,
        );
        assert_header_block(&raw);
        assert_wire_lines(&raw);
        let mail = parse_mail(&raw).expect("parses");
        prop_assert_eq!(single_mailbox(&mail, "To"), (None, "manager@maple.example.org".to_owned()));
        prop_assert_eq!(single_header(&mail, "Subject"), single_line(&subject));
        prop_assert_eq!(lf(&body(&mail)), lf(&text));
    }
}
