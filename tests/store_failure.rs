//! A store failure mid-send is a stop like any other: the run ends with
//! `StopReason::StoreUnavailable` and a report (batch id, what was sent, what is
//! pending, the cause) instead of an error that reads as "nothing sent"; what went out
//! and was not recorded is bounded as for a crash, and `resume` sends it again with
//! the same Message-ID.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::wrapped::{Hooks, Wrapped};
use common::*;
use owner_access::domain::{BatchId, Community, DeliveryOutcome, OwnerId, SenderId, Timestamp};
use owner_access::prelude::*;
use owner_access::repository::{RepoResult, RepositoryError};
use owner_access::{
    InMemoryRepository, InMemoryTransport, ManualClock, OwnerAccess, Selection, SendOptions, Side,
    StopReason, async_trait,
};

/// Records the first `ok_groups` groups of outcomes, then is unavailable while `down`.
#[derive(Debug)]
struct Outage {
    ok_groups: usize,
    calls: AtomicUsize,
    down: Arc<AtomicBool>,
}

#[async_trait]
impl Hooks for Outage {
    async fn record_deliveries(
        &self,
        inner: &InMemoryRepository,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call >= self.ok_groups && self.down.load(Ordering::SeqCst) {
            return Err(RepositoryError::Unavailable {
                store: "test store".into(),
                source: "database is locked".into(),
            });
        }
        inner.record_deliveries(batch, sender, outcomes, now).await
    }
}

#[tokio::test]
async fn a_store_outage_mid_send_stops_with_a_report_and_resume_finishes_with_the_same_ids() {
    const OWNERS: usize = 40;
    const GROUP: usize = 4;
    const CONCURRENCY: usize = 2;
    let down = Arc::new(AtomicBool::new(true));
    let repo = Arc::new(Wrapped::new(Outage {
        ok_groups: 3,
        calls: AtomicUsize::new(0),
        down: down.clone(),
    }));
    let transport = Arc::new(InMemoryTransport::new());
    let clock = Arc::new(ManualClock::new(t0()));
    let c1 = owner_access::domain::CommunityId::new("c1").unwrap();
    repo.upsert_community(&Community::new(c1.clone(), "Maple Grove HOA"))
        .await
        .unwrap();
    let owners: Vec<_> = (0..OWNERS)
        .map(|i| owner(&format!("e{i}"), Some(&format!("e{i}@example.org"))))
        .collect();
    repo.upsert_owners(&owners, t0()).await.unwrap();
    let options = SendOptions {
        concurrency: CONCURRENCY,
        outcome_group: GROUP,
        ..fast_options()
    };
    let service = OwnerAccess::builder(repo.clone(), transport.clone())
        .sender("Owner Portal <no-reply@portal.example.com>")
        .portal_url(PORTAL)
        .clock(clock.clone())
        .send_options(options.clone())
        .build()
        .unwrap();
    let selection: Selection = owners.iter().map(|o| o.id.clone()).collect();
    let review = service
        .review(&service.compose(&c1, &selection).await.unwrap())
        .await
        .unwrap();

    let report = service.send(review).await.expect("a stop, not an error");
    let batch = report.batch.clone().expect("the report names the batch");
    match &report.stopped {
        Some(StopReason::StoreUnavailable { side, error }) => assert!(
            *side == Side::Store
                && error.contains("test store is unavailable")
                && error.contains("database is locked"),
            "the stop names the store and the cause: {side:?} {error}"
        ),
        other => panic!("expected a store stop, got {other:?}"),
    }
    let went_out = transport.messages().len();
    assert_eq!(
        report.sent, went_out,
        "sent counts what went out: {report:?}"
    );
    assert!(report.sent >= 3 * GROUP, "{report:?}");
    assert!(report.unrecorded > 0, "{report:?}");
    assert!(
        report.unrecorded < UNRECORDED_BOUND * GROUP + CONCURRENCY,
        "unrecorded within the crash bound: {report:?}"
    );
    assert_eq!(report.sent + report.pending, OWNERS, "{report:?}");
    assert!(report.failed.is_empty());
    assert!(report.pending > 0, "the run stopped early: {report:?}");

    // The store is back; the stopped run's claims run out after one lease.
    down.store(false, Ordering::SeqCst);
    clock.advance(options.claim_lease);
    let resumed = service.resume(&batch).await.unwrap();
    assert!(resumed.is_complete(), "{resumed:?}");
    assert_eq!(resumed.sent, OWNERS);

    let mut ids: BTreeMap<OwnerId, Vec<String>> = BTreeMap::new();
    for m in transport.messages() {
        let tag = m.envelope.tag.unwrap();
        ids.entry(tag.owner.unwrap())
            .or_default()
            .push(tag.message_id);
    }
    assert_eq!(ids.len(), OWNERS, "every owner got a message");
    let twice: Vec<_> = ids.iter().filter(|(_, v)| v.len() > 1).collect();
    assert_eq!(
        twice.len(),
        report.unrecorded,
        "only the unrecorded went twice"
    );
    for (owner, copies) in twice {
        assert_eq!(copies.len(), 2, "{owner}");
        assert_eq!(copies[0], copies[1], "{owner}'s copies share a Message-ID");
    }
}

/// `4 × outcome_group + concurrency`, the bound `SendOptions::outcome_group`
/// documents.
const UNRECORDED_BOUND: usize = 4;
