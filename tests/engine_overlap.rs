//! The send engine records outcomes while it keeps sending: a slow commit does not
//! stop the messages behind it, and new messages are held back once four groups of
//! outcomes are unrecorded (what a crash would send again).
//!
//! The repository is the in-memory one with a slow `record_deliveries`, which notes
//! how many messages the transport accepted while each group was being recorded.

mod common;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::wrapped::{Hooks, Wrapped};
use common::{addr, mixed_owners, oid, t0};
use owner_access::domain::{
    BatchId, Community, CommunityId, DeliveryOutcome, OwnerId, SenderId, Timestamp,
};
use owner_access::prelude::*;
use owner_access::repository::RepoResult;
use owner_access::{
    InMemoryRepository, InMemoryTransport, ManualClock, OwnerAccess, Selection, SendOptions,
    async_trait,
};

/// One `record_deliveries` call: messages accepted when it began and when its commit
/// was done, and the size of its group.
#[derive(Debug, Clone, Copy)]
struct Recording {
    accepted_before: usize,
    accepted_after: usize,
    outcomes: usize,
}

/// Commits that take `delay`, noting what the transport accepted meanwhile.
struct SlowRecords {
    transport: Arc<InMemoryTransport>,
    delay: Duration,
    recordings: Mutex<Vec<Recording>>,
}

impl fmt::Debug for SlowRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} commits", self.delay)
    }
}

#[async_trait]
impl Hooks for SlowRecords {
    async fn record_deliveries(
        &self,
        inner: &InMemoryRepository,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        let accepted_before = self.transport.len();
        tokio::time::sleep(self.delay).await;
        let result = inner.record_deliveries(batch, sender, outcomes, now).await;
        self.recordings.lock().unwrap().push(Recording {
            accepted_before,
            accepted_after: self.transport.len(),
            outcomes: outcomes.len(),
        });
        result
    }
}

const OWNERS: usize = 300;
const GROUP: usize = 8;
const CONCURRENCY: usize = 4;

#[tokio::test]
async fn a_slow_commit_does_not_stop_the_messages_behind_it_and_the_backlog_is_bounded() {
    let transport = Arc::new(InMemoryTransport::new().with_latency(Duration::from_millis(1)));
    let repo = Arc::new(Wrapped::new(SlowRecords {
        transport: transport.clone(),
        delay: Duration::from_millis(40),
        recordings: Mutex::new(Vec::new()),
    }));
    let community = CommunityId::new("c1").unwrap();
    repo.upsert_community(&Community::new(community.clone(), "Maple Grove HOA"))
        .await
        .unwrap();
    repo.upsert_owners(&mixed_owners(OWNERS), t0())
        .await
        .unwrap();
    let service = OwnerAccess::builder(repo.clone(), transport.clone())
        .sender("Owner Portal <no-reply@portal.example.com>")
        .portal_url(common::PORTAL)
        .clock(Arc::new(ManualClock::new(t0())))
        .send_options(SendOptions {
            concurrency: CONCURRENCY,
            outcome_group: GROUP,
            ..SendOptions::default()
        })
        .build()
        .unwrap();
    let selection: Selection = (0..OWNERS).map(|i| oid(&format!("e{i}"))).collect();
    let invite = service.compose(&community, &selection).await.unwrap();
    let report = service
        .send(service.review(&invite).await.unwrap())
        .await
        .unwrap();

    assert_eq!(report.sent, OWNERS);
    assert_eq!(transport.len(), OWNERS, "nobody got two messages");
    assert_eq!(
        transport.messages_to(&addr("e0@example.org")).len(),
        1,
        "one message each"
    );
    let recordings = repo.hooks.recordings.lock().unwrap().clone();
    let total: usize = recordings.iter().map(|r| r.outcomes).sum();
    assert_eq!(total, OWNERS, "every outcome recorded once: {recordings:?}");
    // While the first group's commit was under way, more messages went out.
    let first = recordings[0];
    assert!(
        first.accepted_after > first.accepted_before,
        "sending stopped during the commit: {recordings:?}"
    );
    for r in &recordings {
        // What went out during one commit stays within the backlog: four groups, less
        // the one being recorded, plus what was in flight.
        assert!(
            r.accepted_after - r.accepted_before <= 4 * GROUP + CONCURRENCY,
            "{r:?} in {recordings:?}"
        );
    }
    // Far fewer commits than groups of eight: while one is recorded, the next grows.
    assert!(
        recordings.len() < OWNERS / GROUP,
        "{} commits",
        recordings.len()
    );
}
