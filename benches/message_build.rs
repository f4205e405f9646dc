//! The cost of building one owner's message, ours against mail-builder's, on the
//! end-to-end letter (benches/e2e/invitation.*), for the mail-builder decision recorded
//! in the `mime` module's documentation.
//!
//! ```sh
//! cargo bench --bench message_build --no-run
//! valgrind --tool=callgrind target/release/deps/message_build-HASH ours 10000 200
//! ```
//!
//! Arguments: the builder (`none`, `ours`, `mail-builder`, `mail-builder-body`), the
//! number of messages, the attachment's size in KB (0 for none). `none` does the
//! per-message work both share (rendering the letter) and builds nothing: subtract
//! its count to get the builder's own. `mail-builder-body` is mail-builder writing
//! only the body (the parts, their encodings, the attachment as a raw part encoded
//! once, our boundaries): the least that building with it would cost on top of a
//! header writer. Each run prints the total bytes written, so that the builders can
//! be checked to do the same work.

use std::borrow::Cow;

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::{BodyPart, MimePart};
use owner_access::domain::{EmailAddress, Mailbox, Timestamp};
use owner_access::invite::Attachment;
use owner_access::mime::MessageFrame;
use owner_access::template::{CompiledTemplate, MergeFields, RenderedParts};

/// Display names as owner records hold them: plain, accented, Greek, Chinese.
const NAMES: &[&str] = &[
    "Maximiliana Okafor",
    "Łucja Żółkiewska-Gąsiorowska",
    "Αικατερίνη Ελευθερία Παπαδοπούλου",
    "王小明",
    "José O'Brien",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let builder = args.first().map_or("ours", String::as_str).to_owned();
    let count: usize = args.get(1).map_or(10_000, |n| n.parse().expect("a count"));
    let attach_kb: usize = args.get(2).map_or(0, |n| n.parse().expect("a size in KB"));

    let template = CompiledTemplate::compile(
        "Your invitation to the {{community.name}} owner portal",
        include_str!("e2e/invitation.txt"),
        Some(include_str!("e2e/invitation.html")),
    )
    .expect("the e2e letter compiles");
    let from = Mailbox::parse("Bench Towers HOA <no-reply@bench.example>").unwrap();
    let attachments: Vec<Attachment> = if attach_kb == 0 {
        Vec::new()
    } else {
        vec![Attachment::new(
            "Welcome Package.pdf",
            "application/pdf",
            (0..attach_kb * 1024)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<u8>>(),
        )]
    };
    // Both builders share the attachment encoded once: ours in the frame,
    // mail-builder's as a raw part holding the same bytes.
    let frame = MessageFrame::new(&from, None, &attachments);
    let shared: Vec<&[u8]> = frame
        .encoded_attachments()
        .iter()
        .map(|a| a.as_bytes())
        .collect();
    let date = Timestamp::from_unix_seconds(1_795_701_600);

    let mut out = Vec::new();
    let mut total = 0usize;
    for i in 0..count {
        let name = format!("{} {i}", NAMES[i % NAMES.len()]);
        let parts = template
            .render(&fields(&name, i))
            .expect("the letter renders");
        let to = Mailbox {
            name: Some(name),
            address: EmailAddress::parse(&format!("owner{i}@example.org")).unwrap(),
        };
        let id = format!("oa.{i:016x}@bench.example");
        out.clear();
        match builder.as_str() {
            "none" => out.extend_from_slice(parts.text.as_bytes()),
            "ours" => frame.write_message(&to, &id, date, &parts, &mut out),
            "mail-builder" => mail_builder_message(&from, &to, &id, &parts, &shared, &mut out),
            "mail-builder-body" => mail_builder_body(&id, &parts, &shared, &mut out),
            other => panic!("unknown builder {other}"),
        }
        total += std::hint::black_box(&out).len();
    }
    println!("{builder}: {count} messages, {total} bytes");
}

fn fields(name: &str, i: usize) -> MergeFields {
    MergeFields {
        first_name: name.split(' ').next().unwrap_or_default().to_owned(),
        last_name: name.rsplit(' ').next().unwrap_or_default().to_owned(),
        full_name: name.to_owned(),
        property_address: format!("{i} Long Street, Springfield"),
        community_name: "Bench Towers HOA".into(),
        registration_url: format!("https://portal.example.org/register?token={:043}", i * 7919),
        expires_on: "15 December 2026 at 14:30 UTC".into(),
        portal_url: "https://portal.example.org/".into(),
        reply_to: String::new(),
        logo_url: String::new(),
        accent_color: "#1a5fb4".into(),
    }
}

/// The body as mail-builder writes it: `multipart/alternative` (text, HTML), inside
/// `multipart/mixed` with the shared attachments as raw parts when there are any;
/// boundaries made from the Message-ID as ours are, so both are deterministic.
fn body<'x>(id: &str, parts: &'x RenderedParts, shared: &[&'x [u8]]) -> MimePart<'x> {
    let alternative = MimePart::new(
        ContentType::new("multipart/alternative").attribute("boundary", format!("=_alt_{id}")),
        vec![
            MimePart::new("text/plain", parts.text.as_str()),
            MimePart::new("text/html", parts.html.as_str()),
        ],
    );
    if shared.is_empty() {
        return alternative;
    }
    let mut children = vec![alternative];
    children.extend(
        shared
            .iter()
            .map(|bytes| MimePart::raw(BodyPart::Binary(Cow::Borrowed(*bytes)))),
    );
    MimePart::new(
        ContentType::new("multipart/mixed").attribute("boundary", format!("=_mix_{id}")),
        children,
    )
}

fn mail_builder_body(id: &str, parts: &RenderedParts, shared: &[&[u8]], out: &mut Vec<u8>) {
    body(id, parts, shared).write_part(&mut *out);
}

fn mail_builder_message(
    from: &Mailbox,
    to: &Mailbox,
    id: &str,
    parts: &RenderedParts,
    shared: &[&[u8]],
    out: &mut Vec<u8>,
) {
    MessageBuilder::new()
        .from((
            from.name.clone().unwrap_or_default(),
            from.address.smtp_form().to_owned(),
        ))
        .to((
            to.name.clone().unwrap_or_default(),
            to.address.smtp_form().to_owned(),
        ))
        .subject(parts.subject.as_str())
        .message_id(id)
        .date(1_795_701_600i64)
        .header(
            "Auto-Submitted",
            mail_builder::headers::raw::Raw::new("auto-generated"),
        )
        .body(body(id, parts, shared))
        .serialize(&mut *out);
}
