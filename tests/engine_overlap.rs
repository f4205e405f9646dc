//! The send engine records outcomes while it keeps sending: a slow commit does not
//! stop the messages behind it, and new messages are held back once four groups of
//! outcomes are unrecorded (what a crash would send again).
//!
//! The repository below is the in-memory one with a slow `record_deliveries`, which
//! notes how many messages the transport accepted while each group was being recorded.

mod common;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{addr, mixed_owners, oid, t0};
use owner_access::domain::{
    ActivityEntry, Batch, BatchId, Community, CommunityId, Delivery, DeliveryCounts,
    DeliveryOutcome, Draft, DraftId, NewBatch, Owner, OwnerId, Page, Timestamp, TokenHash,
    TokenRecord,
};
use owner_access::eligibility::OwnerFilter;
use owner_access::repository::{EmailEdit, EmailHolder, RedeemOutcome, RepoResult};
use owner_access::{
    InMemoryRepository, InMemoryTransport, ManualClock, OwnerAccess, OwnerRepository, Selection,
    SendOptions, async_trait,
};

/// One `record_deliveries` call: messages accepted when it began and when its commit
/// was done, and the size of its group.
#[derive(Debug, Clone, Copy)]
struct Recording {
    accepted_before: usize,
    accepted_after: usize,
    outcomes: usize,
}

struct SlowRecords {
    inner: InMemoryRepository,
    transport: Arc<InMemoryTransport>,
    delay: Duration,
    recordings: Mutex<Vec<Recording>>,
}

impl fmt::Display for SlowRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "in-memory repository with {:?} commits", self.delay)
    }
}

#[async_trait]
impl OwnerRepository for SlowRecords {
    async fn record_deliveries(
        &self,
        batch: &BatchId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<()> {
        let accepted_before = self.transport.len();
        tokio::time::sleep(self.delay).await;
        let result = self.inner.record_deliveries(batch, outcomes, now).await;
        self.recordings.lock().unwrap().push(Recording {
            accepted_before,
            accepted_after: self.transport.len(),
            outcomes: outcomes.len(),
        });
        result
    }

    async fn upsert_community(&self, community: &Community) -> RepoResult<()> {
        self.inner.upsert_community(community).await
    }
    async fn community(&self, id: &CommunityId) -> RepoResult<Option<Community>> {
        self.inner.community(id).await
    }
    async fn upsert_owners(&self, owners: &[Owner], now: Timestamp) -> RepoResult<()> {
        self.inner.upsert_owners(owners, now).await
    }
    async fn owner(&self, id: &OwnerId) -> RepoResult<Option<Owner>> {
        self.inner.owner(id).await
    }
    async fn owners(&self, ids: &[OwnerId]) -> RepoResult<Vec<Owner>> {
        self.inner.owners(ids).await
    }
    async fn community_owners(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
        now: Timestamp,
    ) -> RepoResult<Vec<Owner>> {
        self.inner.community_owners(community, filter, now).await
    }
    async fn email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.inner.email_holders(keys).await
    }
    async fn update_emails(
        &self,
        edits: &[EmailEdit],
        activity: &ActivityEntry,
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        self.inner.update_emails(edits, activity, now).await
    }
    async fn save_draft(&self, draft: &Draft) -> RepoResult<()> {
        self.inner.save_draft(draft).await
    }
    async fn draft(&self, id: &DraftId) -> RepoResult<Option<Draft>> {
        self.inner.draft(id).await
    }
    async fn drafts(&self, community: &CommunityId) -> RepoResult<Vec<Draft>> {
        self.inner.drafts(community).await
    }
    async fn delete_draft(&self, id: &DraftId) -> RepoResult<bool> {
        self.inner.delete_draft(id).await
    }
    async fn create_batch(&self, batch: &NewBatch) -> RepoResult<()> {
        self.inner.create_batch(batch).await
    }
    async fn batch(&self, id: &BatchId) -> RepoResult<Option<Batch>> {
        self.inner.batch(id).await
    }
    async fn batches(&self, community: &CommunityId) -> RepoResult<Vec<Batch>> {
        self.inner.batches(community).await
    }
    async fn claim_deliveries(
        &self,
        batch: &BatchId,
        limit: usize,
        now: Timestamp,
        stale_before: Timestamp,
    ) -> RepoResult<Vec<Delivery>> {
        self.inner
            .claim_deliveries(batch, limit, now, stale_before)
            .await
    }
    async fn record_delivery(
        &self,
        batch: &BatchId,
        owner: &OwnerId,
        outcome: &DeliveryOutcome,
        now: Timestamp,
    ) -> RepoResult<()> {
        self.inner.record_delivery(batch, owner, outcome, now).await
    }
    async fn release_deliveries(&self, batch: &BatchId, owners: &[OwnerId]) -> RepoResult<()> {
        self.inner.release_deliveries(batch, owners).await
    }
    async fn deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.inner.deliveries(batch).await
    }
    async fn delivery_counts(&self, batch: &BatchId) -> RepoResult<DeliveryCounts> {
        self.inner.delivery_counts(batch).await
    }
    async fn requeue_failed(&self, batch: &BatchId) -> RepoResult<usize> {
        self.inner.requeue_failed(batch).await
    }
    async fn issue_token(&self, token: &TokenRecord) -> RepoResult<()> {
        self.inner.issue_token(token).await
    }
    async fn issue_tokens(&self, tokens: &[TokenRecord]) -> RepoResult<()> {
        self.inner.issue_tokens(tokens).await
    }
    async fn token(&self, hash: &TokenHash) -> RepoResult<Option<TokenRecord>> {
        self.inner.token(hash).await
    }
    async fn redeem_token(&self, hash: &TokenHash, now: Timestamp) -> RepoResult<RedeemOutcome> {
        self.inner.redeem_token(hash, now).await
    }
    async fn append_activity(&self, entry: &ActivityEntry) -> RepoResult<()> {
        self.inner.append_activity(entry).await
    }
    async fn activity(
        &self,
        community: &CommunityId,
        page: Page,
    ) -> RepoResult<Vec<ActivityEntry>> {
        self.inner.activity(community, page).await
    }
}

const OWNERS: usize = 300;
const GROUP: usize = 8;
const CONCURRENCY: usize = 4;

#[tokio::test]
async fn a_slow_commit_does_not_stop_the_messages_behind_it_and_the_backlog_is_bounded() {
    let transport = Arc::new(InMemoryTransport::new().with_latency(Duration::from_millis(1)));
    let repo = Arc::new(SlowRecords {
        inner: InMemoryRepository::new(),
        transport: transport.clone(),
        delay: Duration::from_millis(40),
        recordings: Mutex::new(Vec::new()),
    });
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
    let recordings = repo.recordings.lock().unwrap().clone();
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
