//! A stop request interrupts any wait of a run at once: a rate slot, a retry's
//! backoff, the wait for another sender's leases. What is in flight finishes, nothing
//! new starts, and the deliveries that were waiting stay pending. On the system clock,
//! with waits of a minute or more, so that a run that sat out its wait would fail the
//! one-second bound by far.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use owner_access::adapters::memory::Fault;
use owner_access::domain::{Community, CommunityId, SenderId};
use owner_access::prelude::*;
use owner_access::{
    Clock, InMemoryRepository, InMemoryTransport, OwnerAccess, Progress, RetryPolicy, RunControl,
    Selection, SendOptions, SendReport, StopReason, StopSignal, SystemClock,
};

const OWNERS: usize = 4;

struct Setup {
    repo: Arc<InMemoryRepository>,
    transport: Arc<InMemoryTransport>,
    service: OwnerAccess,
}

async fn setup(options: SendOptions) -> Setup {
    let repo = Arc::new(InMemoryRepository::new());
    let transport = Arc::new(InMemoryTransport::new());
    let c1 = CommunityId::new("c1").unwrap();
    repo.upsert_community(&Community::new(c1, "Maple Grove HOA"))
        .await
        .unwrap();
    let owners: Vec<_> = (0..OWNERS)
        .map(|i| owner(&format!("e{i}"), Some(&format!("e{i}@example.org"))))
        .collect();
    repo.upsert_owners(&owners, SystemClock.now())
        .await
        .unwrap();
    let service = OwnerAccess::builder(repo.clone(), transport.clone())
        .sender("Owner Portal <no-reply@portal.example.com>")
        .portal_url(PORTAL)
        .send_options(options)
        .build()
        .unwrap();
    Setup {
        repo,
        transport,
        service,
    }
}

async fn review(service: &OwnerAccess) -> owner_access::Review {
    let selection: Selection = (0..OWNERS).map(|i| oid(&format!("e{i}"))).collect();
    let c1 = CommunityId::new("c1").unwrap();
    let invite = service.compose(&c1, &selection).await.unwrap();
    service.review(&invite).await.unwrap()
}

/// A control that records events, and a stop signal raised by `stop_when`.
fn control() -> (RunControl, StopSignal, Arc<Mutex<Vec<Progress>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let stop = StopSignal::new();
    let control = RunControl::new()
        .with_stop(stop.clone())
        .with_progress(move |p| sink.lock().unwrap().push(p.clone()));
    (control, stop, events)
}

/// Raises `stop` once an event matches, and gives back when.
async fn stop_when(
    stop: StopSignal,
    events: Arc<Mutex<Vec<Progress>>>,
    seen: impl Fn(&Progress) -> bool,
) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !events.lock().unwrap().iter().any(&seen) {
        assert!(Instant::now() < deadline, "the awaited event never came");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The run is in its wait now (the event comes just before it).
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.stop();
    Instant::now()
}

fn assert_stopped_at_once(report: &SendReport, stopped_at: Instant, ended_at: Instant) {
    let took = ended_at - stopped_at;
    assert!(
        took < Duration::from_secs(1),
        "the run took {took:?} to stop"
    );
    assert_eq!(report.stopped, Some(StopReason::Cancelled), "{report:?}");
}

#[tokio::test]
async fn a_stop_ends_the_wait_for_a_rate_slot_and_nothing_more_goes_out() {
    let s = setup(SendOptions {
        // One message every 100 s.
        rate_per_second: Some(0.01),
        ..fast_options()
    })
    .await;
    let (control, stop, events) = control();
    let run = async {
        let report = s
            .service
            .send_with(review(&s.service).await, control)
            .await
            .unwrap();
        (report, Instant::now())
    };
    let stopper = stop_when(stop, events, |p| matches!(p, Progress::Sent { .. }));
    let ((report, ended_at), stopped_at) = tokio::join!(run, stopper);
    assert_stopped_at_once(&report, stopped_at, ended_at);
    assert_eq!((report.sent, report.pending), (1, OWNERS - 1), "{report:?}");
    assert_eq!(s.transport.messages().len(), 1, "nothing after the stop");
}

#[tokio::test]
async fn a_stop_ends_a_retry_backoff_and_the_message_stays_pending() {
    let s = setup(SendOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
        },
        ..fast_options()
    })
    .await;
    s.transport.fail_all(Fault::Transient);
    let (control, stop, events) = control();
    let run = async {
        let report = s
            .service
            .send_with(review(&s.service).await, control)
            .await
            .unwrap();
        (report, Instant::now())
    };
    let stopper = stop_when(stop, events, |p| matches!(p, Progress::Retrying { .. }));
    let ((report, ended_at), stopped_at) = tokio::join!(run, stopper);
    assert_stopped_at_once(&report, stopped_at, ended_at);
    assert_eq!(
        (report.sent, report.pending, report.failed.len()),
        (0, OWNERS, 0),
        "{report:?}"
    );
    assert_eq!(
        s.transport.attempts(),
        OWNERS as u64,
        "one attempt each, no retry after the stop"
    );
}

#[tokio::test]
async fn a_stop_ends_the_wait_for_another_senders_leases() {
    let s = setup(fast_options()).await;
    // A first send that stopped at once leaves the batch pending...
    s.transport.fail_all(Fault::Fatal);
    let first = s.service.send(review(&s.service).await).await.unwrap();
    s.transport.clear_faults();
    let batch = first.batch.unwrap();
    // ...and another sender holds all of it for ten minutes.
    let other = SenderId::new("other-sender").unwrap();
    let held = s
        .repo
        .claim_deliveries(
            &batch,
            &other,
            OWNERS,
            Duration::from_secs(600),
            SystemClock.now(),
        )
        .await
        .unwrap();
    assert_eq!(held.len(), OWNERS);
    let (control, stop, events) = control();
    let run = async {
        let report = s.service.resume_with(&batch, control).await.unwrap();
        (report, Instant::now())
    };
    let stopper = stop_when(stop, events, |p| matches!(p, Progress::Waiting { .. }));
    let ((report, ended_at), stopped_at) = tokio::join!(run, stopper);
    assert_stopped_at_once(&report, stopped_at, ended_at);
    assert_eq!(report.pending, OWNERS, "{report:?}");
    assert!(s.transport.messages().is_empty());
}
