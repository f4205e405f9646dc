//! Just before sending, the engine checks each claimed owner against the repository
//! again: one who moved to another community, changed their primary email, registered,
//! or whose address another owner holds now is skipped with that reason, never sent,
//! never counted as failed. The owners are read once per claimed chunk, never once per
//! message.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::wrapped::{Hooks, Wrapped};
use common::*;
use futures::StreamExt;
use owner_access::domain::{
    BatchId, Community, CommunityId, Delivery, DeliveryState, Owner, OwnerId, SenderId, SkipReason,
    Timestamp,
};
use owner_access::prelude::*;
use owner_access::repository::RepoResult;
use owner_access::{
    InMemoryRepository, InMemoryTransport, ManualClock, OwnerAccess, Progress, RunControl,
    Selection, async_trait,
};

/// Counts the owner reads the send engine makes (`owners`, which the one-owner read
/// `OwnerRepositoryExt::owner` goes through too), and hides the owners listed in
/// `gone` from them (as a host that deleted those records would).
#[derive(Debug, Default)]
struct Reads {
    owners: AtomicUsize,
    /// Claims that brought deliveries back.
    chunks: AtomicUsize,
    gone: Mutex<Vec<OwnerId>>,
}

#[async_trait]
impl Hooks for Arc<Reads> {
    async fn owners(&self, inner: &InMemoryRepository, ids: &[OwnerId]) -> RepoResult<Vec<Owner>> {
        self.owners.fetch_add(1, Ordering::Relaxed);
        let gone = self.gone.lock().unwrap().clone();
        let mut owners = inner.owners(ids).await?;
        owners.retain(|o| !gone.contains(&o.id));
        Ok(owners)
    }

    async fn claim_deliveries(
        &self,
        inner: &InMemoryRepository,
        batch: &BatchId,
        sender: &SenderId,
        limit: usize,
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<Delivery>> {
        let claimed = inner
            .claim_deliveries(batch, sender, limit, lease, now)
            .await?;
        if !claimed.is_empty() {
            self.chunks.fetch_add(1, Ordering::Relaxed);
        }
        Ok(claimed)
    }
}

struct Setup {
    repo: Arc<Wrapped<Arc<Reads>>>,
    reads: Arc<Reads>,
    transport: Arc<InMemoryTransport>,
    service: OwnerAccess,
    review: owner_access::Review,
}

/// `n` owners `e0…` of community `c1` at `e{i}@example.org`, all selected and
/// reviewed; the read counts start after the review.
async fn reviewed(n: usize) -> Setup {
    let reads = Arc::new(Reads::default());
    let repo = Arc::new(Wrapped::new(reads.clone()));
    let community = CommunityId::new("c1").unwrap();
    repo.upsert_community(&Community::new(community.clone(), "Maple Grove HOA"))
        .await
        .unwrap();
    let owners: Vec<_> = (0..n)
        .map(|i| owner(&format!("e{i}"), Some(&format!("e{i}@example.org"))))
        .collect();
    repo.upsert_owners(&owners, t0()).await.unwrap();
    let transport = Arc::new(InMemoryTransport::new());
    let service = OwnerAccess::builder(repo.clone(), transport.clone())
        .sender("Owner Portal <no-reply@portal.example.com>")
        .portal_url(PORTAL)
        .clock(Arc::new(ManualClock::new(t0())))
        .send_options(fast_options())
        .build()
        .unwrap();
    let selection: Selection = (0..n).map(|i| oid(&format!("e{i}"))).collect();
    let invite = service.compose(&community, &selection).await.unwrap();
    let review = service.review(&invite).await.unwrap();
    reads.owners.store(0, Ordering::Relaxed);
    Setup {
        repo,
        reads,
        transport,
        service,
        review,
    }
}

fn skipped(report: &owner_access::SendReport) -> Vec<(String, SkipReason)> {
    report
        .skipped
        .iter()
        .map(|s| (s.owner.to_string(), s.reason))
        .collect()
}

#[tokio::test]
async fn owners_who_changed_since_the_review_are_skipped_with_their_reason() {
    let w = reviewed(7).await;
    // Between the review (or a stopped run) and the send:
    let mut changed = Vec::new();
    let mut e0 = owner("e0", Some("e0@example.org"));
    e0.community = CommunityId::new("pine").unwrap();
    changed.push(e0);
    changed.push(owner("e1", Some("e1-new@example.org")));
    changed.push(owner("e2", Some("e2@example.org")).with_registered(None));
    // Another owner, in another community, now holds e3's mailbox (by delivered key).
    let mut other = owner("p9", Some(" E3@EXAMPLE.org"));
    other.community = CommunityId::new("pine").unwrap();
    changed.push(other);
    // The same mailbox spelled otherwise is the same address: e4 is still sent.
    changed.push(owner("e4", Some("E4@Example.ORG ")));
    w.repo.upsert_owners(&changed, t0()).await.unwrap();
    w.reads.gone.lock().unwrap().push(oid("e5"));

    let (control, events) = RunControl::channel();
    let report = w.service.send_with(w.review, control).await.unwrap();
    let events: Vec<Progress> = events.collect().await;

    assert_eq!(
        skipped(&report),
        [
            ("e0".to_owned(), SkipReason::Moved),
            ("e1".to_owned(), SkipReason::EmailChanged),
            ("e2".to_owned(), SkipReason::Registered),
            ("e3".to_owned(), SkipReason::SharedEmail),
            ("e5".to_owned(), SkipReason::UnknownOwner),
        ]
    );
    assert_eq!(report.sent, 2, "e4 and e6");
    assert!(
        report.failed.is_empty(),
        "a skip is not a failure: {report:?}"
    );
    assert_eq!(report.recipients, 7);
    assert!(report.is_complete(), "{report:?}");
    for skipped in ["e0", "e1", "e2", "e3", "e5"] {
        assert!(
            w.transport
                .messages_to(&addr(&format!("{skipped}@example.org")))
                .is_empty(),
            "{skipped} got a message"
        );
    }
    assert!(
        w.transport
            .messages_to(&addr("e1-new@example.org"))
            .is_empty()
    );
    assert_eq!(w.transport.messages().len(), 2);
    let skip_events = events
        .iter()
        .filter(|e| matches!(e, Progress::Skipped { .. }))
        .count();
    assert_eq!(skip_events, 5, "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, Progress::Failed { .. })));

    // Stored as skipped, settled: a resume or a retry of the failed sends nobody.
    let batch = report.batch.clone().unwrap();
    let counts = w.repo.delivery_counts(&batch).await.unwrap();
    assert_eq!((counts.sent, counts.failed, counts.skipped), (2, 0, 5));
    let e0 = w
        .repo
        .deliveries(&batch)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.owner.as_str() == "e0")
        .unwrap();
    assert!(
        matches!(
            e0.state,
            DeliveryState::Skipped {
                reason: SkipReason::Moved,
                ..
            }
        ),
        "{e0:?}"
    );
    let again = w.service.resume(&batch).await.unwrap();
    assert_eq!(skipped(&again), skipped(&report));
    let retried = w
        .service
        .retry_failed(&batch, RunControl::new())
        .await
        .unwrap();
    assert_eq!(retried.sent, 2);
    assert_eq!(
        w.transport.messages().len(),
        2,
        "nobody was sent twice or late"
    );
    // A skipped owner's invitation state is as it was: not invited by this batch.
    let states = w.repo.invitation_states(&[oid("e1")]).await.unwrap();
    assert_eq!(states, [], "a skipped owner was not invited");
}

#[tokio::test]
async fn owners_are_read_once_per_claimed_chunk() {
    const OWNERS: usize = 600;
    let w = reviewed(OWNERS).await;
    let reads = w.reads.clone();
    let report = w.service.send(w.review).await.unwrap();
    assert_eq!(report.sent, OWNERS);
    let chunks = reads.chunks.load(Ordering::Relaxed);
    let owners_reads = reads.owners.load(Ordering::Relaxed);
    assert_eq!(owners_reads, chunks, "one owner read per claimed chunk");
    // A claim asks for at least 16 deliveries.
    let most = OWNERS.div_ceil(16);
    assert!(
        (1..=most).contains(&chunks),
        "{chunks} chunks for {OWNERS} owners (at most {most})"
    );
}
