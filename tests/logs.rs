//! What the library logs through `tracing`: the events a host operator needs appear,
//! and no token or link is ever in a field. A subscriber of the test's own
//! ([`common::capture`]) keeps every event and span field while a batch is sent (with
//! a retry, then a fatal stop), links are redeemed and refused, and emails are
//! mass-edited; and while a resume waits on another sender's leases. (The take-over
//! warning is checked in `send_leases.rs`, where a sender is cut off past its lease.)

mod common;

use owner_access::SendOptions;
use owner_access::adapters::memory::Fault;
use owner_access::domain::SenderId;
use owner_access::prelude::*;
use owner_access::repository::EmailEdit;
use owner_access::token::token_from_link;
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;

use common::capture::{Capture, events, field};
use common::*;

#[tokio::test(flavor = "current_thread")]
async fn operators_see_the_workflow_and_never_a_token_or_a_link() {
    let capture = Capture::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let w = world(4).await;

    // A first batch: e0's first attempt meets a transient refusal and is retried.
    w.transport
        .fail_address_times(&addr("e0@example.org"), Fault::Transient, 1);
    let first = send_to_all_eligible(&w).await;
    assert_eq!((first.sent, first.failed.len()), (4, 0));
    let tokens: Vec<String> = w
        .transport
        .messages()
        .iter()
        .map(|m| token_in(&m.bytes))
        .collect();
    assert_eq!(tokens.len(), 4);

    // e0 registers; its link again, and junk, are refused.
    w.service.redeem(&tokens[0]).await.unwrap();
    let junk = "x".repeat(43);
    for refused in [tokens[0].as_str(), junk.as_str()] {
        assert!(w.service.redeem(refused).await.is_err());
        assert!(w.service.verify(refused).await.is_err());
    }

    // A mass edit moves e1 to a new address (revoking its link).
    let edit = EmailEdit {
        owner: oid("e1"),
        email: Some("e1.new@example.org".into()),
    };
    let edited = w
        .service
        .mass_edit_emails(&w.community, std::slice::from_ref(&edit))
        .await
        .unwrap();
    assert_eq!(edited.changed, vec![oid("e1")]);

    // A second batch meets a fatal error: the run stops.
    w.transport.fail_all(Fault::Fatal);
    let second = send_to_all_eligible(&w).await;
    assert_eq!(second.stopped.as_ref().map(|s| s.code()), Some("fatal"));

    let seen = capture.seen();
    let created = events(&seen, "batch created");
    assert_eq!(created.len(), 2, "{seen:#?}");
    assert_eq!(field(created[0], "recipients"), Some("4"));
    assert_eq!(events(&seen, "send run started").len(), 2, "{seen:#?}");
    let runs = seen
        .iter()
        .filter(|s| s.message == "span send_run")
        .collect::<Vec<_>>();
    assert_eq!(runs.len(), 2, "a span per run: {seen:#?}");
    assert!(field(runs[0], "batch").is_some() && field(runs[0], "sender").is_some());

    let retries = events(&seen, "retrying a delivery");
    assert_eq!(retries.len(), 1, "{seen:#?}");
    assert_eq!(field(retries[0], "owner"), Some("e0"));
    assert_eq!(field(retries[0], "attempt"), Some("1"));
    assert_eq!(field(retries[0], "class"), Some("Transient"));

    let ended = events(&seen, "send run ended");
    assert_eq!(ended.len(), 2, "{seen:#?}");
    for (name, want) in [
        ("sent", "4"),
        ("failed", "0"),
        ("skipped", "0"),
        ("pending", "0"),
        ("stop", "none"),
    ] {
        assert_eq!(
            field(ended[0], name),
            Some(want),
            "{name} in {:?}",
            ended[0]
        );
    }
    assert_eq!(field(ended[1], "stop"), Some("fatal"));
    let stopped = events(&seen, "send run stopped");
    assert_eq!(stopped.len(), 1, "{seen:#?}");
    assert_eq!(stopped[0].level, Level::ERROR);
    assert_eq!(field(stopped[0], "code"), Some("fatal"));

    assert_eq!(events(&seen, "link redeemed: owner registered").len(), 1);
    let refused: Vec<&str> = events(&seen, "redeem refused")
        .iter()
        .filter_map(|s| field(s, "reason"))
        .collect();
    assert_eq!(
        refused,
        ["token already used", "unknown token"],
        "{seen:#?}"
    );
    assert_eq!(events(&seen, "link refused on verify").len(), 2);
    let mass = events(&seen, "mass edit applied");
    assert_eq!(mass.len(), 1, "{seen:#?}");
    assert_eq!(field(mass[0], "changed"), Some("1"));

    // Nothing that opens an owner's account: no token (sent, redeemed or made up),
    // no link, in any field of any event or span.
    let mut secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    secrets.push(&junk);
    for s in &seen {
        for (name, value) in &s.fields {
            assert!(!value.contains("token="), "a link in `{name}` of {s:?}");
            for secret in &secrets {
                assert!(!value.contains(secret), "a token in `{name}` of {s:?}");
            }
            assert_eq!(token_from_link(value), None, "a link in `{name}` of {s:?}");
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_resume_waiting_on_another_senders_leases_says_so_once() {
    let capture = Capture::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let w = world(3).await;
    // A batch left pending by a fatal stop; then another sender claims two and dies.
    w.transport.fail_all(Fault::Fatal);
    let stopped = send_to_all_eligible(&w).await;
    w.transport.clear_faults();
    let batch = stopped.batch.expect("a stored batch");
    let dead = SenderId::new("dead-sender").unwrap();
    let lease = SendOptions::default().claim_lease;
    let taken = w
        .repo
        .claim_deliveries(&batch, &dead, 2, lease, w.clock.now())
        .await
        .unwrap();
    assert_eq!(taken.len(), 2);

    let report = w.service.resume(&batch).await.unwrap();
    assert_eq!((report.sent, report.pending), (3, 0), "{report:?}");
    let seen = capture.seen();
    let waits = events(&seen, "waiting for other senders' leases to run out");
    assert_eq!(waits.len(), 1, "told once: {seen:#?}");
    assert_eq!(field(waits[0], "held"), Some("2"));
    assert_eq!(field(waits[0], "senders"), Some("1"));
    let ended = events(&seen, "send run ended");
    assert_eq!(field(ended.last().unwrap(), "sent"), Some("3"), "{seen:#?}");
}
