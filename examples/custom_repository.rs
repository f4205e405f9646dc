//! Implementing `OwnerRepository` yourself, and proving it with the conformance suite.
//!
//! A host usually writes its repository over its own database. This example shows the
//! whole trait surface with a small adapter of the kind hosts write first: one that
//! wraps another repository and keeps an audit trail of every write. A from-scratch
//! store follows the same shape; `src/adapters/memory.rs` is a complete one to start
//! from. Whatever you write, run `repository_conformance` against it in your tests.
//!
//! ```sh
//! cargo run --example custom_repository --features testing
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use owner_access::domain::{
    ActivityEntry, Batch, BatchId, Community, CommunityId, Delivery, DeliveryCounts,
    DeliveryOutcome, Draft, DraftId, NewBatch, Owner, OwnerId, Page, SenderId, Timestamp,
    TokenHash, TokenRecord,
};
use owner_access::eligibility::OwnerFilter;
use owner_access::repository::{
    EmailEdit, EmailHolder, HeldClaims, ImportSession, RedeemOutcome, RepoResult,
};
use owner_access::{InMemoryRepository, OwnerRepository, async_trait};

/// Forwards every call to `inner` and notes each write in `audit`.
struct AuditedRepository<R> {
    inner: R,
    audit: Mutex<Vec<String>>,
}

impl<R> AuditedRepository<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            audit: Mutex::new(Vec::new()),
        }
    }

    fn note(&self, what: String) {
        self.audit.lock().expect("audit lock").push(what);
    }
}

impl<R: fmt::Display> fmt::Display for AuditedRepository<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "audited {}", self.inner)
    }
}

#[async_trait]
impl<R: OwnerRepository> OwnerRepository for AuditedRepository<R> {
    async fn upsert_community(&self, community: &Community) -> RepoResult<()> {
        self.note(format!("upsert community {}", community.id));
        self.inner.upsert_community(community).await
    }
    async fn community(&self, id: &CommunityId) -> RepoResult<Option<Community>> {
        self.inner.community(id).await
    }
    async fn upsert_owners(&self, owners: &[Owner], now: Timestamp) -> RepoResult<()> {
        self.note(format!("upsert {} owners", owners.len()));
        self.inner.upsert_owners(owners, now).await
    }
    /// Forwarded: left to the default, an import would no longer be the inner store's
    /// one transaction (and would be held in memory whole until it commits).
    async fn begin_import<'a>(&'a self, now: Timestamp) -> RepoResult<Box<dyn ImportSession + 'a>> {
        self.note("import".to_owned());
        self.inner.begin_import(now).await
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
    // The methods with a default are forwarded too: the default would answer from
    // the other methods, and lose what the inner store does in one query or one
    // transaction (a chunk's tokens, only the shared holders, only the failed
    // deliveries). `record_delivery` is the exception: its default calls this
    // wrapper's own `record_deliveries`.
    async fn shared_email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.inner.shared_email_holders(keys).await
    }
    async fn update_emails(
        &self,
        edits: &[EmailEdit],
        activity: &[ActivityEntry],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        self.note(format!("update {} emails", edits.len()));
        self.inner.update_emails(edits, activity, now).await
    }
    async fn save_draft(&self, draft: &Draft) -> RepoResult<()> {
        self.note(format!("save draft {}", draft.id));
        self.inner.save_draft(draft).await
    }
    async fn draft(&self, id: &DraftId) -> RepoResult<Option<Draft>> {
        self.inner.draft(id).await
    }
    async fn drafts(&self, community: &CommunityId) -> RepoResult<Vec<Draft>> {
        self.inner.drafts(community).await
    }
    async fn delete_draft(&self, id: &DraftId) -> RepoResult<bool> {
        self.note(format!("delete draft {id}"));
        self.inner.delete_draft(id).await
    }
    async fn create_batch(&self, batch: &NewBatch) -> RepoResult<()> {
        self.note(format!("create batch {}", batch.batch.id));
        self.inner.create_batch(batch).await
    }
    async fn batch(&self, id: &BatchId) -> RepoResult<Option<Batch>> {
        self.inner.batch(id).await
    }
    async fn batches(&self, community: &CommunityId) -> RepoResult<Vec<Batch>> {
        self.inner.batches(community).await
    }
    // The claim methods: leases held by a sender (see the trait's "Claims are leases"
    // section). A store of your own keeps their rules in its own statements:
    // compare-and-set on the state and the lease's end for a claim, on the holder for
    // a renewal, an outcome and a release.
    async fn claim_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        limit: usize,
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<Delivery>> {
        self.inner
            .claim_deliveries(batch, sender, limit, lease, now)
            .await
    }
    async fn renew_claims(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        self.inner
            .renew_claims(batch, sender, owners, lease, now)
            .await
    }
    async fn record_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        self.note(format!("record {} outcomes in {batch}", outcomes.len()));
        self.inner
            .record_deliveries(batch, sender, outcomes, now)
            .await
    }
    async fn release_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<OwnerId>> {
        self.inner.release_deliveries(batch, sender, owners).await
    }
    async fn held_claims(&self, batch: &BatchId, now: Timestamp) -> RepoResult<HeldClaims> {
        self.inner.held_claims(batch, now).await
    }
    async fn revoke_claims(&self, batch: &BatchId) -> RepoResult<usize> {
        self.note(format!("revoke the claims on {batch}"));
        self.inner.revoke_claims(batch).await
    }
    async fn deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.inner.deliveries(batch).await
    }
    async fn delivery_counts(&self, batch: &BatchId) -> RepoResult<DeliveryCounts> {
        self.inner.delivery_counts(batch).await
    }
    async fn failed_deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.inner.failed_deliveries(batch).await
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
        let outcome = self.inner.redeem_token(hash, now).await?;
        if let RedeemOutcome::Redeemed { owner, .. } = &outcome {
            self.note(format!("owner {} registered", owner.id));
        }
        Ok(outcome)
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

#[tokio::main]
async fn main() {
    // The one call that proves an adapter keeps every contract of the trait.
    match owner_access::testing::repository_conformance(|| async {
        AuditedRepository::new(InMemoryRepository::new())
    })
    .await
    {
        Ok(()) => println!(
            "AuditedRepository passes all {} conformance checks",
            owner_access::testing::REPOSITORY_CHECKS.len()
        ),
        Err(failures) => {
            for failure in &failures {
                eprintln!("FAILED {failure}");
            }
            std::process::exit(1);
        }
    }
    // It is object safe: hosts choose an implementation at run time.
    let repo: Arc<dyn OwnerRepository> =
        Arc::new(AuditedRepository::new(InMemoryRepository::new()));
    println!("using {repo}");
}
