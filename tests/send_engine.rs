//! The send engine: retries and backoff, the three error classes, stopping and resuming,
//! claims, concurrency, rate limiting, progress events.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use owner_access::adapters::memory::Fault;
use owner_access::domain::DeliveryState;
use owner_access::prelude::*;
use owner_access::{Progress, RunControl, Selection, SendOptions, StopReason, StopSignal};

async fn review_for(w: &World, n: usize) -> owner_access::Review {
    let selection: Selection = (0..n).map(|i| oid(&format!("e{i}"))).collect();
    let invite = w.service.compose(&w.community, &selection).await.unwrap();
    w.service.review(&invite).await.unwrap()
}

#[tokio::test]
async fn transient_errors_are_retried_with_growing_backoff() {
    let w = world(3).await;
    w.transport
        .fail_address_times(&addr("e1@example.org"), Fault::Transient, 2);
    let report = w.service.send(review_for(&w, 3).await).await.unwrap();
    assert_eq!(report.sent, 3);
    assert_eq!(w.transport.attempts_to(&addr("e1@example.org")), 3);
    let sleeps = w.clock.sleeps();
    assert_eq!(sleeps.len(), 2, "{sleeps:?}");
    assert!(sleeps[0] >= Duration::from_millis(50) && sleeps[0] <= Duration::from_millis(100));
    assert!(sleeps[1] >= Duration::from_millis(100) && sleeps[1] <= Duration::from_millis(200));
}

#[tokio::test]
async fn retries_run_out_then_the_owner_fails_and_the_batch_goes_on() {
    let w = world(4).await;
    w.transport
        .fail_address(&addr("e2@example.org"), Fault::Transient);
    w.transport
        .fail_address(&addr("e3@example.org"), Fault::Permanent);
    let report = w.service.send(review_for(&w, 4).await).await.unwrap();
    assert_eq!(report.sent, 2);
    let failed: Vec<_> = report.failed.iter().map(|f| f.owner.to_string()).collect();
    assert_eq!(failed, ["e2", "e3"]);
    assert!(
        report.failed[0].error.contains("451"),
        "{}",
        report.failed[0].error
    );
    assert!(report.failed[1].error.contains("550"));
    assert_eq!(w.transport.attempts_to(&addr("e2@example.org")), 3);
    assert_eq!(
        w.transport.attempts_to(&addr("e3@example.org")),
        1,
        "no retry of a 5xx"
    );
    assert!(report.stopped.is_none());

    // Retrying the failed owners is one call, and sends to nobody else.
    w.transport.clear_faults();
    let again = w
        .service
        .retry_failed(report.batch.as_ref().unwrap(), RunControl::new())
        .await
        .unwrap();
    assert_eq!((again.sent, again.failed.len()), (4, 0));
    assert_eq!(w.transport.messages_to(&addr("e0@example.org")).len(), 1);
}

#[tokio::test]
async fn a_fatal_error_stops_the_batch_and_leaves_the_rest_pending() {
    let w = world(10).await;
    w.transport.fail_all(Fault::Fatal);
    let report = w.service.send(review_for(&w, 10).await).await.unwrap();
    assert!(
        matches!(report.stopped, Some(StopReason::Fatal { .. })),
        "{:?}",
        report.stopped
    );
    assert_eq!(report.sent, 0);
    assert!(report.failed.is_empty(), "a fatal error fails no owner");
    assert_eq!(report.pending, 10);
    assert!(
        w.transport.attempts() <= 4,
        "no more than the in-flight messages were tried"
    );

    w.transport.clear_faults();
    let resumed = w
        .service
        .resume(report.batch.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!((resumed.sent, resumed.pending), (10, 0));
    for i in 0..10 {
        assert_eq!(
            w.transport
                .messages_to(&addr(&format!("e{i}@example.org")))
                .len(),
            1
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_stops_the_batch_without_failing_owners() {
    let w = world(20).await;
    w.transport.fail_all(Fault::Connection);
    let report = w.service.send(review_for(&w, 20).await).await.unwrap();
    assert!(
        matches!(report.stopped, Some(StopReason::Unreachable { .. })),
        "{:?}",
        report.stopped
    );
    assert!(report.failed.is_empty());
    assert_eq!(report.pending, 20);
    w.transport.clear_faults();
    let resumed = w
        .service
        .resume(report.batch.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(resumed.sent, 20);
}

#[tokio::test]
async fn a_lost_reply_means_a_second_copy_with_the_same_message_id_and_link() {
    let w = world(3).await;
    w.transport
        .fail_address_times(&addr("e1@example.org"), Fault::LostReply, 1);
    let report = w.service.send(review_for(&w, 3).await).await.unwrap();
    assert_eq!(report.sent, 3);
    let copies = w.transport.messages_to(&addr("e1@example.org"));
    assert_eq!(copies.len(), 2);
    assert_eq!(copies[0].message_id(), copies[1].message_id());
    assert_eq!(token_in(&copies[0].bytes), token_in(&copies[1].bytes));
    w.service.redeem(&token_in(&copies[0].bytes)).await.unwrap();
    assert_eq!(w.transport.messages_to(&addr("e0@example.org")).len(), 1);
}

#[tokio::test]
async fn a_stop_signal_finishes_in_flight_messages_and_resume_sends_the_rest_once() {
    let w = world_with(
        mixed_owners(40),
        SendOptions {
            concurrency: 2,
            // Each outcome recorded (and reported) on its own, so the stop comes
            // right after the fifth message.
            outcome_group: 1,
            ..fast_options()
        },
    )
    .await;
    let stop = StopSignal::new();
    let trigger = stop.clone();
    let sent = Arc::new(Mutex::new(0usize));
    let counter = sent.clone();
    let control = RunControl::new().with_stop(stop).with_progress(move |p| {
        if let Progress::Sent { .. } = p {
            let mut n = counter.lock().unwrap();
            *n += 1;
            if *n == 5 {
                trigger.stop();
            }
        }
    });
    let report = w
        .service
        .send_with(review_for(&w, 40).await, control)
        .await
        .unwrap();
    assert_eq!(report.stopped, Some(StopReason::Cancelled));
    assert!(
        // What had started when the stop came finishes: the messages in flight
        // (the concurrency) and those settled but not yet recorded (up to four
        // groups), never more.
        report.sent >= 5 && report.sent <= 5 + 2 + 4,
        "in-flight ones finish: {}",
        report.sent
    );
    assert_eq!(report.sent + report.pending, 40);
    let batch = report.batch.clone().unwrap();
    let claimed = w
        .repo
        .deliveries(&batch)
        .await
        .unwrap()
        .iter()
        .filter(|d| matches!(d.state, DeliveryState::Claimed { .. }))
        .count();
    assert_eq!(claimed, 0, "claims not started were given back");

    let resumed = w.service.resume(&batch).await.unwrap();
    assert_eq!(resumed.sent, 40);
    assert_eq!(w.transport.len(), 40, "nobody got two copies");
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let repo_world = world_with(
        mixed_owners(24),
        SendOptions {
            concurrency: 3,
            ..fast_options()
        },
    )
    .await;
    let w = World {
        transport: Arc::new(
            owner_access::InMemoryTransport::new().with_latency(Duration::from_millis(20)),
        ),
        ..repo_world
    };
    let service = owner_access::OwnerAccess::builder(w.repo.clone(), w.transport.clone())
        .sender("no-reply@portal.example.com")
        .portal_url(PORTAL)
        .send_options(SendOptions {
            concurrency: 3,
            ..fast_options()
        })
        .build()
        .unwrap();
    let selection: Selection = (0..24).map(|i| oid(&format!("e{i}"))).collect();
    let invite = service.compose(&w.community, &selection).await.unwrap();
    let report = service
        .send(service.review(&invite).await.unwrap())
        .await
        .unwrap();
    assert_eq!(report.sent, 24);
    assert_eq!(w.transport.max_in_flight(), 3);
}

#[tokio::test]
async fn the_rate_limit_spaces_messages_out() {
    let w = world_with(
        mixed_owners(11),
        SendOptions {
            rate_per_second: Some(5.0),
            ..fast_options()
        },
    )
    .await;
    let report = w.service.send(review_for(&w, 11).await).await.unwrap();
    assert_eq!(report.sent, 11);
    let waited: Duration = w.clock.sleeps().iter().sum();
    assert_eq!(
        waited,
        Duration::from_millis(2100),
        "10 gaps of 210 ms: 1/5 s and the 5% headroom"
    );
}

#[tokio::test]
async fn progress_events_come_as_a_stream() {
    let w = world(5).await;
    w.transport
        .fail_address_times(&addr("e0@example.org"), Fault::Transient, 1);
    w.transport
        .fail_address(&addr("e4@example.org"), Fault::Permanent);
    let (control, events) = RunControl::channel();
    let report = w
        .service
        .send_with(review_for(&w, 5).await, control)
        .await
        .unwrap();
    let events: Vec<Progress> = events.collect().await;
    assert!(matches!(
        events.first(),
        Some(Progress::Queued { pending: 5, .. })
    ));
    assert!(matches!(
        events.last(),
        Some(Progress::Finished {
            sent: 4,
            failed: 1,
            pending: 0
        })
    ));
    let sent = events
        .iter()
        .filter(|e| matches!(e, Progress::Sent { .. }))
        .count();
    let retried = events
        .iter()
        .filter(|e| matches!(e, Progress::Retrying { .. }))
        .count();
    let failed = events
        .iter()
        .filter(|e| matches!(e, Progress::Failed { .. }))
        .count();
    assert_eq!((sent, retried, failed), (4, 1, 1));
    assert_eq!(report.sent, 4);
}

#[tokio::test]
async fn an_owner_who_registers_after_the_batch_was_made_is_skipped() {
    let w = world(3).await;
    let review = review_for(&w, 3).await;
    let mut e1 = w.repo.owner(&oid("e1")).await.unwrap().unwrap();
    e1.registered = Some(owner_access::domain::Registered { at: None });
    w.repo.upsert_owners(&[e1], t0()).await.unwrap();
    let report = w.service.send(review).await.unwrap();
    assert_eq!(report.sent, 2);
    assert!(report.failed.is_empty(), "a skip is not a failure");
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].owner, oid("e1"));
    assert_eq!(
        report.skipped[0].reason,
        owner_access::domain::SkipReason::Registered
    );
    assert!(report.is_complete());
    assert!(w.transport.messages_to(&addr("e1@example.org")).is_empty());
}

/// Hosts run sends in the background: every workflow future is `Send + 'static`-able.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_and_resumes_run_on_spawned_tasks() {
    let w = world(5).await;
    let review = review_for(&w, 5).await;
    let service = w.service.clone();
    let report = tokio::spawn(async move { service.send(review).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.sent, 5);
    let service = w.service.clone();
    let batch = report.batch.unwrap();
    let resumed = tokio::spawn(async move { service.resume(&batch).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.sent, 5);
    let service = w.service.clone();
    let resent = tokio::spawn(async move { service.resend(&oid("e1")).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resent.sent, 1);
}
