//! The whole workflow over the in-memory adapters: roster, selection, compose, review,
//! send, resend, redeem, drafts, the activity feed, and each error path.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::*;
use owner_access::domain::{ActivityKind, Page, TokenRejection};
use owner_access::eligibility::{AccessFilter, OwnerFilter};
use owner_access::invite::Attachment;
use owner_access::prelude::*;
use owner_access::repository::EmailEdit;
use owner_access::{Error, Selection};

#[tokio::test]
async fn every_eligible_owner_gets_one_personal_message_and_can_register_once() {
    let w = world(12).await;
    let report = send_to_all_eligible(&w).await;
    assert_eq!(report.sent, 12);
    assert!(report.is_complete());
    let reasons: BTreeMap<String, &str> = report
        .excluded
        .iter()
        .map(|e| (e.owner.to_string(), e.reason.code()))
        .collect();
    assert_eq!(
        reasons,
        BTreeMap::from([
            ("bad".to_owned(), "invalid_email"),
            ("shared1".to_owned(), "shared_email"),
            ("shared2".to_owned(), "shared_email"),
        ]),
        "the roster filter already dropped `none` (no email) and `reg` (registered)"
    );

    let messages = w.transport.messages();
    assert_eq!(messages.len(), 12);
    let all_addresses: Vec<String> = (0..12).map(|i| format!("e{i}@example.org")).collect();
    let mut tokens = HashSet::new();
    for m in &messages {
        let parsed = mailparse::parse_mail(&m.bytes).unwrap();
        let to = mailparse::addrparse_header(
            parsed
                .headers
                .iter()
                .find(|h| h.get_key_ref().eq_ignore_ascii_case("to"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(to.len(), 1, "exactly one address in To");
        let own = m.envelope.to.as_str().to_owned();
        let raw = String::from_utf8_lossy(&m.bytes);
        for other in all_addresses.iter().filter(|a| **a != own) {
            assert!(
                !raw.contains(other.as_str()),
                "{other} leaked into the message to {own}"
            );
        }
        assert!(
            tokens.insert(token_in(&m.bytes)),
            "each owner has a link of their own"
        );
    }

    // Register with one link: once.
    let token = tokens.iter().next().unwrap().clone();
    let verified = w.service.verify(&token).await.unwrap();
    let registration = w.service.redeem(&token).await.unwrap();
    assert_eq!(registration.owner.id, verified.owner.id);
    assert!(registration.owner.is_registered());
    match w.service.redeem(&token).await {
        Err(Error::InvalidToken { reason }) => assert_eq!(reason, TokenRejection::AlreadyUsed),
        other => panic!("second redeem: {other:?}"),
    }
    assert!(matches!(
        w.service.verify(&token).await,
        Err(Error::InvalidToken { .. })
    ));

    let roster = w
        .service
        .roster(&w.community, &OwnerFilter::all())
        .await
        .unwrap();
    assert_eq!(roster.counts.registered, 2);
    assert_eq!(roster.counts.invited, 11);

    let kinds: Vec<&'static str> = w
        .service
        .activity(&w.community, Page::first(10))
        .await
        .unwrap()
        .iter()
        .map(|e| match e.kind {
            ActivityKind::Registered { .. } => "registered",
            ActivityKind::BatchFinished { .. } => "finished",
            ActivityKind::BatchCreated { .. } => "created",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["registered", "finished", "created"]);
}

#[tokio::test]
async fn the_generic_token_error_hides_the_reason_but_logs_keep_it() {
    let w = world(1).await;
    for junk in ["", "short", &"x".repeat(43)] {
        match w.service.redeem(junk).await {
            Err(
                e @ Error::InvalidToken {
                    reason: TokenRejection::Unknown,
                },
            ) => {
                assert_eq!(e.to_string(), "this registration link is not valid")
            }
            other => panic!("{junk:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn nothing_is_sent_or_stored_while_the_invite_is_invalid() {
    let w = world(3).await;
    let selection = Selection::of([oid("e0"), oid("e1")]);
    let base = w.service.compose(&w.community, &selection).await.unwrap();
    let cases: Vec<(owner_access::invite::Invite, &str)> = vec![
        (
            base.clone()
                .with_text_body("Hello {{owner.middle_name}} {{registration_url}}"),
            "unknown_field",
        ),
        (
            base.clone()
                .with_bodies("Hello, no link here", "<p>{{registration_url}}</p>"),
            "missing_registration_link",
        ),
        (
            base.clone().with_reply_to("not an address"),
            "invalid_reply_to",
        ),
        (
            base.clone().with_subject("Hi\r\nBcc: everyone@example.org"),
            "line_break_in_header",
        ),
        (
            base.clone().with_attachment(Attachment::new(
                "big.pdf",
                "application/pdf",
                vec![0u8; 11 * 1024 * 1024],
            )),
            "attachment_too_large",
        ),
        (
            base.clone()
                .with_text_body("{{#if registration_url}}{{registration_url}}"),
            "template_syntax",
        ),
    ];
    for (invite, expected) in cases {
        let review = w.service.review(&invite).await.unwrap();
        let codes: Vec<String> = review
            .problems
            .iter()
            .map(|p| {
                serde_json::to_value(p).unwrap()["problem"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert!(
            codes.iter().any(|c| c == expected),
            "{expected}: got {codes:?}"
        );
        assert!(!review.is_sendable());
        match w.service.send(review).await {
            Err(Error::InvalidInvite { problems }) => assert!(!problems.is_empty()),
            other => panic!("{expected}: {other:?}"),
        }
    }
    assert!(w.transport.is_empty());
    assert!(w.repo.batches(&w.community).await.unwrap().is_empty());
    assert!(
        w.service
            .activity(&w.community, Page::first(10))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn review_mints_nothing_and_preview_shows_a_placeholder_link() {
    let w = world(2).await;
    let invite = w
        .service
        .compose(&w.community, &Selection::of([oid("e0"), oid("ghost")]))
        .await
        .unwrap();
    let review = w.service.review(&invite).await.unwrap();
    assert_eq!(review.recipients.len(), 1);
    assert_eq!(review.excluded[0].reason.code(), "unknown_owner");
    let preview = w.service.preview(&review, &oid("e0")).await.unwrap();
    assert!(
        preview.text.contains("FirstE0") || preview.text.contains("Firste0"),
        "{}",
        preview.text
    );
    assert!(preview.text.contains("token=PREVIEW"));
    assert!(mailparse::parse_mail(&preview.message).is_ok());
    assert!(w.transport.is_empty());
    assert!(w.repo.batches(&w.community).await.unwrap().is_empty());
    let states = w.repo.invitation_states(&[oid("e0")]).await.unwrap();
    assert_eq!(states, [], "a preview invites nobody");
}

#[tokio::test]
async fn a_resend_revokes_the_old_link_and_the_new_one_works() {
    let w = world(2).await;
    send_to_all_eligible(&w).await;
    let first = token_in(&w.transport.messages_to(&addr("e0@example.org"))[0].bytes);
    w.clock.advance(Duration::from_secs(60));
    let report = w.service.resend(&oid("e0")).await.unwrap();
    assert_eq!(report.sent, 1);
    let copies = w.transport.messages_to(&addr("e0@example.org"));
    assert_eq!(copies.len(), 2);
    assert_ne!(
        copies[0].message_id(),
        copies[1].message_id(),
        "a resend is a new message"
    );
    let second = token_in(&copies[1].bytes);
    match w.service.verify(&first).await {
        Err(Error::InvalidToken { reason }) => assert_eq!(reason, TokenRejection::Revoked),
        other => panic!("{other:?}"),
    }
    w.service.redeem(&second).await.unwrap();
    match w.service.resend(&oid("e0")).await {
        Err(Error::NotEligible { reason, .. }) => assert_eq!(reason.code(), "registered"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.service.resend(&oid("ghost")).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn changing_an_owners_email_revokes_their_link() {
    let w = world(2).await;
    send_to_all_eligible(&w).await;
    let token = token_in(&w.transport.messages_to(&addr("e1@example.org"))[0].bytes);
    let report = w
        .service
        .mass_edit_emails(
            &w.community,
            &[EmailEdit {
                owner: oid("e1"),
                email: Some("new-e1@example.org".into()),
            }],
        )
        .await
        .unwrap();
    assert_eq!(report.changed, vec![oid("e1")]);
    match w.service.redeem(&token).await {
        Err(Error::InvalidToken { reason }) => assert_eq!(reason, TokenRejection::Revoked),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn links_expire_and_the_roster_shows_it() {
    let w = world(1).await;
    send_to_all_eligible(&w).await;
    let token = token_in(&w.transport.messages()[0].bytes);
    w.clock
        .advance(owner_access::service::DEFAULT_TOKEN_TTL + Duration::from_secs(1));
    match w.service.verify(&token).await {
        Err(Error::InvalidToken { reason }) => assert_eq!(reason, TokenRejection::Expired),
        other => panic!("{other:?}"),
    }
    let roster = w
        .service
        .roster(
            &w.community,
            &OwnerFilter::all().with_access(AccessFilter::Invited),
        )
        .await
        .unwrap();
    assert_eq!(roster.counts.expired, 1);
    assert!(
        roster.rows[0].eligibility.is_eligible(),
        "an expired invitation can be sent again"
    );
}

#[tokio::test]
async fn mass_edit_is_all_or_nothing_and_names_every_bad_row() {
    let w = world(3).await;
    let edits = vec![
        EmailEdit {
            owner: oid("e0"),
            email: Some("fresh@example.org".into()),
        },
        EmailEdit {
            owner: oid("e1"),
            email: Some("broken@".into()),
        },
        EmailEdit {
            owner: oid("e2"),
            email: Some("FAMILY@example.org".into()),
        },
        EmailEdit {
            owner: oid("ghost"),
            email: Some("g@example.org".into()),
        },
        EmailEdit {
            owner: oid("none"),
            email: Some("Fresh@Example.org ".into()),
        },
    ];
    match w.service.mass_edit_emails(&w.community, &edits).await {
        Err(Error::MassEditRejected { problems }) => {
            let codes: Vec<String> = problems
                .iter()
                .map(|p| {
                    serde_json::to_value(p).unwrap()["problem"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            assert_eq!(
                codes.iter().filter(|c| *c == "shared_email").count(),
                3,
                "{codes:?}"
            );
            assert!(codes.contains(&"invalid_email".to_owned()));
            assert!(codes.contains(&"unknown_owner".to_owned()));
        }
        other => panic!("{other:?}"),
    }
    let e0 = w.repo.owner(&oid("e0")).await.unwrap().unwrap();
    assert_eq!(
        e0.primary_email.as_deref(),
        Some("e0@example.org"),
        "nothing changed"
    );
    assert!(
        w.service
            .activity(&w.community, Page::first(5))
            .await
            .unwrap()
            .is_empty()
    );

    // A swap between two owners is fine: neither keeps its old address.
    let swap = [
        EmailEdit {
            owner: oid("e0"),
            email: Some("e1@example.org".into()),
        },
        EmailEdit {
            owner: oid("e1"),
            email: Some("e0@example.org".into()),
        },
        EmailEdit {
            owner: oid("none"),
            email: Some("now-has-one@example.org".into()),
        },
    ];
    let report = w
        .service
        .mass_edit_emails(&w.community, &swap)
        .await
        .unwrap();
    assert_eq!(report.changed.len(), 3);
    let activity = w
        .service
        .activity(&w.community, Page::first(5))
        .await
        .unwrap();
    assert!(matches!(
        activity[0].kind,
        ActivityKind::MassEdit { changed: 3 }
    ));
}

#[tokio::test]
async fn drafts_are_saved_listed_sent_later_after_a_fresh_review_and_discarded() {
    let w = world(3).await;
    let invite = w
        .service
        .compose(&w.community, &Selection::of([oid("e0"), oid("e1")]))
        .await
        .unwrap()
        .with_subject("Welcome to {{community.name}}")
        .with_attachment(Attachment::new(
            "welcome.pdf",
            "application/pdf",
            b"%PDF-1.4 hello".to_vec(),
        ));
    let id = w.service.save_draft(&invite).await.unwrap();
    let mut loaded = w.service.load_draft(&id).await.unwrap();
    assert_eq!(loaded.attachments, invite.attachments);
    assert_eq!(loaded.draft.as_ref(), Some(&id));
    loaded = loaded.with_summary_to("manager@example.org");
    assert_eq!(
        w.service.save_draft(&loaded).await.unwrap(),
        id,
        "saving again updates the draft"
    );
    assert_eq!(w.service.drafts(&w.community).await.unwrap().len(), 1);

    // Meanwhile e1 registers another way.
    let mut e1 = w.repo.owner(&oid("e1")).await.unwrap().unwrap();
    e1.registered = Some(owner_access::domain::Registered { at: None });
    w.repo.upsert_owners(&[e1], t0()).await.unwrap();

    let review = w
        .service
        .review(&w.service.load_draft(&id).await.unwrap())
        .await
        .unwrap();
    assert_eq!(review.excluded.len(), 1);
    assert_eq!(review.excluded[0].reason.code(), "registered");
    let report = w.service.send(review).await.unwrap();
    assert_eq!(report.sent, 1);
    assert!(matches!(
        report.summary,
        Some(owner_access::SummaryOutcome::Sent { .. })
    ));

    w.service.discard_draft(&id).await.unwrap();
    assert!(w.service.drafts(&w.community).await.unwrap().is_empty());
    assert!(matches!(
        w.service.discard_draft(&id).await,
        Err(Error::NotFound { .. })
    ));
    let kinds: Vec<bool> = w
        .service
        .activity(&w.community, Page::first(20))
        .await
        .unwrap()
        .iter()
        .map(|e| {
            matches!(
                e.kind,
                ActivityKind::DraftSaved { .. } | ActivityKind::DraftDiscarded { .. }
            )
        })
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k).count(),
        3,
        "two saves and a discard"
    );
}

#[tokio::test]
async fn the_summary_recap_carries_the_template_never_a_live_link() {
    let w = world(3).await;
    let invite = w
        .service
        .compose(
            &w.community,
            &Selection::of([oid("e0"), oid("e1"), oid("bad")]),
        )
        .await
        .unwrap()
        .with_summary_to("manager@example.org");
    let report = w
        .service
        .send(w.service.review(&invite).await.unwrap())
        .await
        .unwrap();
    assert_eq!(report.sent, 2);
    let recap = w.transport.messages_to(&addr("manager@example.org"));
    assert_eq!(recap.len(), 1);
    let text = text_part(&recap[0].bytes);
    assert!(text.contains("{{registration_url}}"), "{text}");
    assert!(!text.contains("token="), "no live link in the recap");
    assert!(text.contains("e0@example.org") && text.contains("e1@example.org"));
    for m in w
        .transport
        .messages()
        .iter()
        .filter(|m| m.envelope.to != addr("manager@example.org"))
    {
        assert!(!text.contains(&token_in(&m.bytes)));
    }
}

#[tokio::test]
async fn resending_to_every_invited_owner_goes_through_review() {
    let w = world(4).await;
    let first = w
        .service
        .send(
            w.service
                .review(
                    &w.service
                        .compose(
                            &w.community,
                            &Selection::of([oid("e0"), oid("e1"), oid("e2")]),
                        )
                        .await
                        .unwrap(),
                )
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(first.sent, 3);
    let e2_token = token_in(&w.transport.messages_to(&addr("e2@example.org"))[0].bytes);
    w.service.redeem(&e2_token).await.unwrap();

    let invite = w
        .service
        .compose_resend_to_invited(&w.community)
        .await
        .unwrap();
    let selected: Vec<String> = invite.selection.iter().map(ToString::to_string).collect();
    assert_eq!(
        selected,
        ["e0", "e1"],
        "invited and not registered; e3 was never invited"
    );
    let report = w
        .service
        .send(w.service.review(&invite).await.unwrap())
        .await
        .unwrap();
    assert_eq!(report.sent, 2);
    assert_eq!(w.transport.messages_to(&addr("e0@example.org")).len(), 2);
    let states = w.repo.invitation_states(&[oid("e0")]).await.unwrap();
    assert!(
        matches!(states.as_slice(), [(_, state)] if state.count == 2),
        "{states:?}"
    );
}
