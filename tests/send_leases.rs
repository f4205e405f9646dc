//! Claims are leases (DESIGN.md rule 11), as the send engine lives them: a run waits for
//! a dead sender's leases and then finishes the batch, a live slow sender keeps its
//! claims however long it takes, a sender cut off from the store for longer than its
//! lease starts nothing more and its late outcomes do not count, and two runs of one
//! batch never send one delivery twice.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::capture::{Capture, events as events_named, field};
use common::wrapped::{Hooks, Wrapped};
use common::*;
use owner_access::adapters::memory::Fault;
use owner_access::domain::{
    BatchId, Community, CommunityId, DeliveryOutcome, DeliveryState, OwnerId, SenderId, Timestamp,
};
use owner_access::prelude::*;
use owner_access::repository::RepoResult;
use owner_access::{
    Clock, InMemoryRepository, InMemoryTransport, OwnerAccess, Progress, RunControl, Selection,
    SendOptions, SendReport, StopReason, SystemClock, async_trait,
};
use tracing::instrument::WithSubscriber;
use tracing_subscriber::layer::SubscriberExt;

fn community() -> CommunityId {
    CommunityId::new("c1").unwrap()
}

async fn review_for(service: &OwnerAccess, n: usize) -> owner_access::Review {
    let selection: Selection = (0..n).map(|i| oid(&format!("e{i}"))).collect();
    let invite = service.compose(&community(), &selection).await.unwrap();
    service.review(&invite).await.unwrap()
}

/// A batch of `n` owners left all pending by a send that stopped on a fatal error.
async fn pending_batch(w: &World, n: usize) -> BatchId {
    w.transport.fail_all(Fault::Fatal);
    let report = w
        .service
        .send(review_for(&w.service, n).await)
        .await
        .unwrap();
    w.transport.clear_faults();
    assert_eq!(report.pending, n);
    report.batch.unwrap()
}

/// Records every event of a run.
fn recorder() -> (RunControl, Arc<Mutex<Vec<Progress>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let control = RunControl::new().with_progress(move |p| sink.lock().unwrap().push(p.clone()));
    (control, events)
}

fn copies_per_owner(transport: &InMemoryTransport) -> BTreeMap<String, usize> {
    let mut copies = BTreeMap::new();
    for m in transport.messages() {
        let owner = m.envelope.tag.unwrap().owner.unwrap().to_string();
        *copies.entry(owner).or_default() += 1;
    }
    copies
}

#[tokio::test]
async fn resume_waits_for_a_dead_senders_leases_says_so_and_finishes() {
    let w = world(6).await;
    let batch = pending_batch(&w, 6).await;
    // Another sender claims two deliveries and dies.
    let dead = SenderId::new("dead-sender").unwrap();
    let lease = SendOptions::default().claim_lease;
    let start = w.clock.now();
    let taken = w
        .repo
        .claim_deliveries(&batch, &dead, 2, lease, start)
        .await
        .unwrap();
    assert_eq!(taken.len(), 2);

    let (control, events) = recorder();
    let report = w.service.resume_with(&batch, control).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!((report.sent, report.pending, w.transport.len()), (6, 0, 6));
    let waited = w.clock.now() - start;
    assert!(
        waited >= lease && waited < lease + Duration::from_secs(1),
        "waited {waited:?} for a lease of {lease:?}"
    );
    let waits: Vec<Progress> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Progress::Waiting { .. }))
        .cloned()
        .collect();
    assert_eq!(
        waits,
        vec![Progress::Waiting {
            held: 2,
            senders: 1,
            until: start + lease,
        }],
        "the wait is told once, with what it waits for"
    );
    let copies = copies_per_owner(&w.transport);
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");
}

#[tokio::test]
async fn resume_after_crash_takes_the_claims_over_at_once() {
    let w = world(6).await;
    let batch = pending_batch(&w, 6).await;
    let dead = SenderId::new("dead-sender").unwrap();
    let start = w.clock.now();
    w.repo
        .claim_deliveries(&batch, &dead, 6, Duration::from_secs(3600), start)
        .await
        .unwrap();
    let (control, events) = recorder();
    let report = w.service.resume_after_crash(&batch, control).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(w.transport.len(), 6);
    assert!(w.clock.now() - start < Duration::from_secs(1), "no wait");
    assert!(
        !events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Progress::Waiting { .. }))
    );
    // The dead sender's late write is refused.
    let refused = w
        .repo
        .record_deliveries(
            &batch,
            &dead,
            &[(
                oid("e0"),
                DeliveryOutcome::Failed {
                    error: "late".into(),
                    attempts: 1,
                },
            )],
            w.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(refused, vec![oid("e0")]);
}

/// Renewals that hang for `delay` (a store the sender cannot reach), and can be told
/// to renew nothing at all.
#[derive(Debug)]
struct Renewals {
    delay: Duration,
    renew: bool,
}

#[async_trait]
impl Hooks for Renewals {
    async fn renew_claims(
        &self,
        inner: &InMemoryRepository,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        tokio::time::sleep(self.delay).await;
        if !self.renew {
            return Ok(Vec::new());
        }
        // Judged when the statement runs, as a store does.
        let _ = now;
        inner
            .renew_claims(batch, sender, owners, lease, SystemClock.now())
            .await
    }
}

/// Services over one shared repository and transport, on the system clock.
struct Shared<H: Hooks> {
    repo: Arc<Wrapped<H>>,
    transport: Arc<InMemoryTransport>,
}

impl<H: Hooks> Shared<H> {
    async fn new(hooks: H, owners: usize, transport: InMemoryTransport) -> Self {
        let repo = Arc::new(Wrapped::new(hooks));
        let community = community();
        repo.upsert_community(&Community::new(community, "Maple Grove HOA"))
            .await
            .unwrap();
        repo.upsert_owners(&mixed_owners(owners), SystemClock.now())
            .await
            .unwrap();
        Self {
            repo,
            transport: Arc::new(transport),
        }
    }

    fn service(&self, options: SendOptions) -> OwnerAccess {
        OwnerAccess::builder(self.repo.clone(), self.transport.clone())
            .sender("Owner Portal <no-reply@portal.example.com>")
            .portal_url(PORTAL)
            .send_options(options)
            .build()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_cut_off_past_its_lease_starts_nothing_more_and_its_late_outcomes_do_not_count() {
    let lease = Duration::from_millis(400);
    let w = Shared::new(
        Renewals {
            delay: Duration::from_millis(1500),
            renew: true,
        },
        6,
        InMemoryTransport::new().with_latency(Duration::from_millis(100)),
    )
    .await;
    let service = w.service(SendOptions {
        concurrency: 1,
        claim_lease: lease,
        ..fast_options()
    });
    let (control, events) = recorder();
    let review = review_for(&service, 6).await;
    let started = Instant::now();
    // The run's log, whichever worker thread polls it.
    let log = Capture::default();
    let run = tokio::spawn({
        let service = service.clone();
        async move { service.send_with(review, control).await }
            .with_subscriber(tracing_subscriber::registry().with(log.clone()))
    });
    // Its first renewal hangs: once its leases ran out, another sender takes them.
    // (Not before its first message: the deliveries must be its claims, not pending.)
    while w.transport.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing was sent"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let batch = w.repo.batches(&community()).await.unwrap()[0].id.clone();
    // Taken as soon as they have run out, well before the hung renewal returns.
    let other = SenderId::new("the-other-sender").unwrap();
    let taken = loop {
        let taken = w
            .repo
            .claim_deliveries(
                &batch,
                &other,
                100,
                Duration::from_secs(60),
                SystemClock.now(),
            )
            .await
            .unwrap();
        if !taken.is_empty() || started.elapsed() > Duration::from_secs(5) {
            break taken;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sent_by_first = w.transport.len();
    assert!(
        !taken.is_empty(),
        "the first sender's leases ran out while it could not renew them"
    );

    let report: SendReport = run.await.unwrap().unwrap();
    assert_eq!(
        report.stopped,
        Some(StopReason::TakenOver {
            deliveries: taken.len()
        }),
        "{report:?}"
    );
    assert_eq!(
        w.transport.len(),
        sent_by_first,
        "nothing was started once its leases were stale"
    );
    // Started only within three quarters of a lease: at most 3 messages of 100 ms.
    assert!(sent_by_first <= 3, "{sent_by_first}");
    let events = events.lock().unwrap().clone();
    let lost: Vec<&Progress> = events
        .iter()
        .filter(|e| matches!(e, Progress::TakenOver { .. }))
        .collect();
    assert_eq!(lost.len(), taken.len(), "{events:?}");
    // The operator is told, at warn, how many were taken and which write was refused
    // (a renewal, an outcome, or the release of what was never started).
    let seen = log.seen();
    let warned: Vec<_> = seen
        .iter()
        .filter(|s| s.message.starts_with("another sender took over deliveries"))
        .collect();
    let warned_of: usize = warned
        .iter()
        .map(|w| field(w, "deliveries").unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(warned_of, taken.len(), "{seen:#?}");
    assert!(
        warned.iter().all(|w| w.level == tracing::Level::WARN
            && matches!(field(w, "refused"), Some("renewal" | "outcome" | "release"))),
        "{warned:#?}"
    );
    let stop = events_named(&seen, "send run stopped");
    assert_eq!(
        stop.iter().map(|s| field(s, "code")).collect::<Vec<_>>(),
        [Some("taken_over")],
        "{seen:#?}"
    );
    // Its outcomes for the taken deliveries were refused: they are the other's.
    for d in w.repo.deliveries(&batch).await.unwrap() {
        if taken.iter().any(|t| t.owner == d.owner) {
            assert!(
                matches!(&d.state, DeliveryState::Claimed { holder, .. } if *holder == other),
                "{d:?}"
            );
            assert_eq!(d.attempts, 0, "a refused outcome adds no attempts");
        }
    }
    assert!(
        !events.iter().any(|e| match e {
            Progress::Sent { owner } => taken.iter().any(|t| &t.owner == owner),
            _ => false,
        }),
        "no Sent event for a delivery another sender took"
    );
}

/// A rate-limited sender holds its claims for several leases; a resume started
/// beside it waits, follows it, and sends nobody twice. `renew` false is the control:
/// without renewals the same resume takes the claims over and owners get two copies.
async fn slow_sender_beside_a_resume(
    renew: bool,
) -> (SendReport, SendReport, BTreeMap<String, usize>, usize) {
    let lease = Duration::from_millis(500);
    let w = Shared::new(
        Renewals {
            delay: Duration::ZERO,
            renew,
        },
        8,
        InMemoryTransport::new().with_latency(Duration::from_millis(10)),
    )
    .await;
    let options = SendOptions {
        concurrency: 2,
        claim_lease: lease,
        rate_per_second: Some(4.0),
        ..fast_options()
    };
    let slow = w.service(options.clone());
    let review = review_for(&slow, 8).await;
    let first = tokio::spawn(async move { slow.send(review).await });
    while w.transport.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let batch = w.repo.batches(&community()).await.unwrap()[0].id.clone();
    let resume = w.service(SendOptions {
        rate_per_second: None,
        ..options
    });
    let (control, events) = recorder();
    let second = resume.resume_with(&batch, control).await.unwrap();
    let first = first.await.unwrap().unwrap();
    let waits = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Progress::Waiting { .. }))
        .count();
    (first, second, copies_per_owner(&w.transport), waits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_live_sender_keeps_its_claims_and_a_resume_beside_it_follows_it() {
    let (first, second, copies, waits) = slow_sender_beside_a_resume(true).await;
    assert!(first.is_complete(), "{first:?}");
    assert!(second.is_complete(), "{second:?}");
    assert_eq!(copies.len(), 8, "{copies:?}");
    assert!(copies.values().all(|n| *n == 1), "nobody twice: {copies:?}");
    assert!(waits >= 1, "the resume told what it waited for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_renewals_the_same_resume_would_take_a_live_senders_claims() {
    let (_, second, copies, _) = slow_sender_beside_a_resume(false).await;
    assert!(second.sent > 0);
    assert!(
        copies.values().any(|n| *n > 1),
        "the control must show the duplicates renewals prevent: {copies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_resumes_at_once_send_each_owner_once_and_both_end_settled() {
    let w = Shared::new(
        Renewals {
            delay: Duration::ZERO,
            renew: true,
        },
        40,
        InMemoryTransport::new().with_latency(Duration::from_millis(5)),
    )
    .await;
    let options = SendOptions {
        concurrency: 3,
        claim_lease: Duration::from_millis(500),
        ..fast_options()
    };
    let service = w.service(options.clone());
    w.transport.fail_all(Fault::Fatal);
    let stopped = service.send(review_for(&service, 40).await).await.unwrap();
    w.transport.clear_faults();
    let batch = stopped.batch.unwrap();
    let (a, b) = (w.service(options.clone()), w.service(options));
    let (ra, rb) = tokio::join!(
        tokio::spawn({
            let batch = batch.clone();
            async move { a.resume(&batch).await }
        }),
        tokio::spawn({
            let batch = batch.clone();
            async move { b.resume(&batch).await }
        })
    );
    for report in [ra.unwrap().unwrap(), rb.unwrap().unwrap()] {
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.sent, 40);
    }
    let copies = copies_per_owner(&w.transport);
    assert_eq!(copies.len(), 40);
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");
}
