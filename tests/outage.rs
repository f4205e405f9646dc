//! An outage fails nobody, whatever the batch size (DESIGN.md rule 6): deliveries
//! whose retries run out on connection errors, with nothing getting through after
//! them, stay pending and the batch stops, for a batch of 1 as for 10,000. A delivery
//! left pending so in `UNREACHABLE_RUNS` runs in a row fails with its last error, so
//! one message that makes the server drop the connection every time cannot stop every
//! run for ever.

mod common;

use common::*;
use owner_access::adapters::memory::Fault;
use owner_access::dispatch::UNREACHABLE_RUNS;
use owner_access::domain::{BatchId, DeliveryState};
use owner_access::prelude::*;
use owner_access::{Selection, SendOptions, SendReport, StopReason};

async fn send_to(w: &World, owners: &[&str]) -> SendReport {
    let selection: Selection = owners.iter().map(|o| oid(o)).collect();
    let invite = w.service.compose(&w.community, &selection).await.unwrap();
    w.service
        .send(w.service.review(&invite).await.unwrap())
        .await
        .unwrap()
}

fn is_unreachable(report: &SendReport) -> bool {
    matches!(report.stopped, Some(StopReason::Unreachable { .. }))
}

/// Each delivery's state and unreachable runs, by owner.
async fn runs(w: &World, batch: &BatchId) -> Vec<(String, bool, u32)> {
    w.repo
        .deliveries(batch)
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            (
                d.owner.to_string(),
                d.state == DeliveryState::Pending,
                d.unreachable_runs,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_batch_of_one_or_two_against_a_dead_server_ends_pending() {
    for owners in [&["e0"][..], &["e0", "e1"][..]] {
        let w = world(2).await;
        w.transport.fail_all(Fault::Connection);
        let report = send_to(&w, owners).await;
        assert!(is_unreachable(&report), "{report:?}");
        assert_eq!(
            (report.sent, report.pending, report.failed.len()),
            (0, owners.len(), 0),
            "{report:?}"
        );
        let batch = report.batch.unwrap();
        let want: Vec<(String, bool, u32)> =
            owners.iter().map(|o| ((*o).to_owned(), true, 1)).collect();
        assert_eq!(runs(&w, &batch).await, want, "pending, one run counted");
        assert!(w.transport.messages().is_empty());
    }
}

#[tokio::test]
async fn a_resend_against_a_dead_server_leaves_the_owner_pending_as_before() {
    let w = world(1).await;
    assert!(send_to(&w, &["e0"]).await.is_complete());
    let before = w.repo.invitation_states(&[oid("e0")]).await.unwrap();
    assert_eq!(before.len(), 1, "invited once: {before:?}");
    w.transport.fail_all(Fault::Connection);
    let report = w.service.resend(&oid("e0")).await.unwrap();
    assert!(is_unreachable(&report), "{report:?}");
    assert_eq!(
        (report.sent, report.pending, report.failed.len()),
        (0, 1, 0),
        "{report:?}"
    );
    let after = w.repo.invitation_states(&[oid("e0")]).await.unwrap();
    assert_eq!(after, before, "the owner's invitation state is as it was");
}

#[tokio::test]
async fn one_poisonous_message_fails_in_its_third_run_and_no_sooner() {
    // One at a time, so that e1 (the poisonous one) goes after e0, and nothing gets
    // through after it.
    let w = world_with(
        mixed_owners(2),
        SendOptions {
            concurrency: 1,
            ..fast_options()
        },
    )
    .await;
    w.transport
        .fail_address(&addr("e1@example.org"), Fault::Connection);
    let first = send_to(&w, &["e0", "e1"]).await;
    assert!(is_unreachable(&first), "{first:?}");
    assert_eq!((first.sent, first.pending), (1, 1), "{first:?}");
    let batch = first.batch.clone().unwrap();
    for run in 2..UNREACHABLE_RUNS {
        let report = w.service.resume(&batch).await.unwrap();
        assert!(is_unreachable(&report), "run {run}: {report:?}");
        assert_eq!(report.pending, 1, "run {run}: {report:?}");
        assert_eq!(
            runs(&w, &batch).await[1],
            ("e1".to_owned(), true, run),
            "run {run}"
        );
    }
    let last = w.service.resume(&batch).await.unwrap();
    assert_eq!(last.stopped, None, "{last:?}");
    assert_eq!((last.sent, last.pending), (1, 0), "{last:?}");
    assert_eq!(last.failed.len(), 1, "{last:?}");
    let error = &last.failed[0].error;
    assert_eq!(last.failed[0].owner, oid("e1"));
    assert!(
        error.contains(&format!("in {UNREACHABLE_RUNS} runs in a row")),
        "the failure says why: {error}"
    );
    let attempts = w.transport.attempts_to(&addr("e1@example.org"));
    assert_eq!(
        attempts,
        UNREACHABLE_RUNS * fast_options().retry.max_attempts,
        "every run gave it all its attempts"
    );
}
