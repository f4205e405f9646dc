//! The From and portal URL travel with the invite: a draft and a batch keep the ones
//! the manager set, and resend, resume and retry use them; the builder's values are
//! only the defaults `compose` starts from.

mod common;

use common::*;
use owner_access::adapters::memory::Fault;
use owner_access::domain::Mailbox;
use owner_access::invite::Problem;
use owner_access::prelude::*;
use owner_access::{OwnerAccess, RunControl, Selection, SendOptions};

const FROM: &str = "Maple Board <board@maple.example>";
const OAK: &str = "https://portal.example.org/register?community=oak";

fn mailparse_header(message: &[u8], name: &str) -> String {
    use mailparse::MailHeaderMap;
    let parsed = mailparse::parse_mail(message).unwrap();
    parsed.headers.get_first_value(name).unwrap()
}

#[tokio::test]
async fn compose_starts_from_the_builder_and_a_draft_keeps_what_was_set() {
    let w = world(2).await;
    let selection = Selection::of([oid("e0"), oid("e1")]);
    let composed = w.service.compose(&w.community, &selection).await.unwrap();
    assert_eq!(
        composed.from.as_deref(),
        Some("\"Owner Portal\" <no-reply@portal.example.com>")
    );
    assert_eq!(composed.portal_url.as_deref(), Some(PORTAL));

    let edited = composed.with_from(FROM).with_portal_url(OAK);
    let id = w.service.save_draft(&edited).await.unwrap();
    let loaded = w.service.load_draft(&id).await.unwrap();
    assert_eq!(loaded.from.as_deref(), Some(FROM));
    assert_eq!(loaded.portal_url.as_deref(), Some(OAK));

    let review = w.service.review(&loaded).await.unwrap();
    let preview = w.service.preview(&review, &oid("e0")).await.unwrap();
    assert!(
        preview.text.contains(&format!("{OAK}&token=")),
        "{}",
        preview.text
    );
    let report = w.service.send(review).await.unwrap();
    assert_eq!(report.sent, 2);
    for message in w.transport.messages() {
        assert_eq!(message.envelope.from.as_str(), "board@maple.example");
        assert_eq!(
            mailparse_header(&message.bytes, "From"),
            "\"Maple Board\" <board@maple.example>"
        );
        assert!(text_part(&message.bytes).contains(&format!("{OAK}&token=")));
    }
    let batch = w
        .repo
        .batch(report.batch.as_ref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.sender, Mailbox::parse(FROM).unwrap());
    assert_eq!(batch.portal_url, OAK);
}

#[tokio::test]
async fn resend_uses_the_from_and_portal_url_of_the_owners_latest_batch() {
    let w = world(1).await;
    let invite = w
        .service
        .compose(&w.community, &Selection::single(oid("e0")))
        .await
        .unwrap()
        .with_from(FROM)
        .with_portal_url(OAK);
    let review = w.service.review(&invite).await.unwrap();
    w.service.send(review).await.unwrap();
    w.transport.clear();

    let report = w.service.resend(&oid("e0")).await.unwrap();
    assert_eq!(report.sent, 1);
    let messages = w.transport.messages();
    assert_eq!(messages[0].envelope.from.as_str(), "board@maple.example");
    assert!(text_part(&messages[0].bytes).contains(&format!("{OAK}&token=")));

    // The invite a resend would send, edited: the rest stays the batch's.
    let again = w
        .service
        .compose_resend(&oid("e0"))
        .await
        .unwrap()
        .with_subject("Reminder");
    assert_eq!(
        again.from.as_deref(),
        Some("\"Maple Board\" <board@maple.example>")
    );
    assert_eq!(again.selection, Selection::single(oid("e0")));
    w.transport.clear();
    w.service
        .resend_with(&oid("e0"), Some(again), RunControl::new())
        .await
        .unwrap();
    let messages = w.transport.messages();
    assert_eq!(mailparse_header(&messages[0].bytes, "Subject"), "Reminder");
    assert!(text_part(&messages[0].bytes).contains(&format!("{OAK}&token=")));
}

/// A resume and a retry of a batch composed with its own From and portal URL send
/// them, even through a service built later with other defaults: they read the
/// stored batch, never the builder.
#[tokio::test]
async fn resume_and_retry_use_the_from_and_portal_url_the_batch_was_composed_with() {
    let options = SendOptions {
        concurrency: 1,
        ..fast_options()
    };
    let w = world_with(mixed_owners(3), options.clone()).await;
    let invite = w
        .service
        .compose(
            &w.community,
            &Selection::of([oid("e0"), oid("e1"), oid("e2")]),
        )
        .await
        .unwrap()
        .with_from(FROM)
        .with_portal_url(OAK);
    // The first message meets a fatal error: the batch stops with deliveries pending.
    w.transport.fail_all_times(Fault::Fatal, 1);
    // e1 is refused once, permanently: it fails in the resume and is retried.
    w.transport
        .fail_address_times(&addr("e1@example.org"), Fault::Permanent, 1);
    let review = w.service.review(&invite).await.unwrap();
    let first = w.service.send(review).await.unwrap();
    assert!(first.stopped.is_some(), "{first:?}");
    assert!(first.pending > 0, "{first:?}");
    let batch = first.batch.clone().unwrap();

    let later = OwnerAccess::builder(w.repo.clone(), w.transport.clone())
        .sender("Other Sender <other@elsewhere.example>")
        .portal_url("https://elsewhere.example/register")
        .clock(w.clock.clone())
        .send_options(options)
        .build()
        .unwrap();
    let resumed = later.resume(&batch).await.unwrap();
    assert!(resumed.sent >= 1, "{resumed:?}");
    let retried = later.retry_failed(&batch, RunControl::new()).await.unwrap();
    assert!(retried.sent >= 1, "{retried:?}");
    assert!(retried.is_complete(), "{retried:?}");

    let messages = w.transport.messages();
    let mut to: Vec<String> = messages.iter().map(|m| m.envelope.to.to_string()).collect();
    to.sort();
    assert_eq!(to, ["e0@example.org", "e1@example.org", "e2@example.org"]);
    for message in &messages {
        assert_eq!(message.envelope.from.as_str(), "board@maple.example");
        assert_eq!(
            mailparse_header(&message.bytes, "From"),
            "\"Maple Board\" <board@maple.example>"
        );
        let text = text_part(&message.bytes);
        assert!(text.contains(&format!("{OAK}&token=")), "{text}");
        assert!(!text.contains("elsewhere.example"), "{text}");
    }
}

#[tokio::test]
async fn an_invalid_from_or_portal_url_is_a_problem_at_review() {
    let w = world(1).await;
    let invite = w
        .service
        .compose(&w.community, &Selection::single(oid("e0")))
        .await
        .unwrap()
        .with_from("Board <board@>")
        .with_portal_url("portal.example.org/register");
    let review = w.service.review(&invite).await.unwrap();
    assert!(
        review
            .problems
            .iter()
            .any(|p| matches!(p, Problem::InvalidFrom { value, .. } if value == "Board <board@>")),
        "{:?}",
        review.problems
    );
    assert!(
        review
            .problems
            .iter()
            .any(|p| matches!(p, Problem::InvalidPortalUrl { .. })),
        "{:?}",
        review.problems
    );
    assert!(w.service.send(review).await.is_err());
    assert!(w.transport.messages().is_empty());
}

#[tokio::test]
async fn an_invite_serialised_before_from_and_portal_url_still_loads() {
    let w = world(1).await;
    let invite = w
        .service
        .compose(&w.community, &Selection::single(oid("e0")))
        .await
        .unwrap();
    let mut old = serde_json::to_value(&invite).unwrap();
    let fields = old.as_object_mut().unwrap();
    fields.remove("from").unwrap();
    fields.remove("portal_url").unwrap();
    let loaded: owner_access::invite::Invite = serde_json::from_value(old).unwrap();
    assert_eq!(loaded.from, None);
    assert_eq!(loaded.portal_url, None);
    assert_eq!(loaded.subject, invite.subject);
}
