//! A repository that is the in-memory one except for the calls a test changes: those
//! go through [`Hooks`], whose defaults delegate too. Tests use it to break one
//! contract on purpose, or to slow one call down.

use std::fmt;
use std::time::Duration;

use owner_access::domain::{
    ActivityEntry, Batch, BatchId, Community, CommunityId, Delivery, DeliveryCounts,
    DeliveryOutcome, Draft, DraftId, InvitationState, NewBatch, Owner, OwnerId, Page, SenderId,
    Timestamp, TokenHash, TokenRecord,
};
use owner_access::eligibility::OwnerFilter;
use owner_access::prelude::*;
use owner_access::repository::{
    EmailEdit, EmailHolder, HeldClaims, ImportSession, Marked, OwedRegistration, RedeemOutcome,
    RepoResult, SendSlots,
};
use owner_access::{InMemoryRepository, async_trait};

/// The calls a test may change; each gets the wrapped repository.
#[async_trait]
pub trait Hooks: fmt::Debug + Send + Sync + 'static {
    async fn community_owner_ids(
        &self,
        inner: &InMemoryRepository,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<OwnerId>> {
        inner.community_owner_ids(community, filter).await
    }

    async fn create_batch(&self, inner: &InMemoryRepository, batch: &NewBatch) -> RepoResult<()> {
        inner.create_batch(batch).await
    }

    async fn take_send_slots(
        &self,
        inner: &InMemoryRepository,
        batch: &BatchId,
        interval: Duration,
        count: u32,
        now: Timestamp,
    ) -> RepoResult<SendSlots> {
        inner.take_send_slots(batch, interval, count, now).await
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
        inner
            .claim_deliveries(batch, sender, limit, lease, now)
            .await
    }

    async fn renew_claims(
        &self,
        inner: &InMemoryRepository,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        inner.renew_claims(batch, sender, owners, lease, now).await
    }

    async fn record_deliveries(
        &self,
        inner: &InMemoryRepository,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        inner.record_deliveries(batch, sender, outcomes, now).await
    }

    async fn invitation_states(
        &self,
        inner: &InMemoryRepository,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<(OwnerId, InvitationState)>> {
        inner.invitation_states(owners).await
    }

    async fn redeem_token(
        &self,
        inner: &InMemoryRepository,
        hash: &TokenHash,
        now: Timestamp,
    ) -> RepoResult<RedeemOutcome> {
        inner.redeem_token(hash, now).await
    }

    /// `issue_token`, and each token of `issue_tokens`, in order.
    async fn issue_token(&self, inner: &InMemoryRepository, token: &TokenRecord) -> RepoResult<()> {
        inner.issue_token(token).await
    }

    async fn owners(&self, inner: &InMemoryRepository, ids: &[OwnerId]) -> RepoResult<Vec<Owner>> {
        inner.owners(ids).await
    }

    async fn settle_registration(
        &self,
        inner: &InMemoryRepository,
        token: &TokenHash,
        activity: Option<&ActivityEntry>,
    ) -> RepoResult<bool> {
        inner.settle_registration(token, activity).await
    }

    async fn answer_redeem(
        &self,
        inner: &InMemoryRepository,
        token: &TokenHash,
        now: Timestamp,
    ) -> RepoResult<bool> {
        inner.answer_redeem(token, now).await
    }

    async fn email_holders(
        &self,
        inner: &InMemoryRepository,
        keys: &[String],
    ) -> RepoResult<Vec<EmailHolder>> {
        inner.email_holders(keys).await
    }

    async fn update_emails(
        &self,
        inner: &InMemoryRepository,
        edits: &[EmailEdit],
    ) -> RepoResult<Vec<OwnerId>> {
        inner.update_emails(edits).await
    }

    async fn begin_import<'a>(
        &self,
        inner: &'a InMemoryRepository,
        now: Timestamp,
    ) -> RepoResult<Box<dyn ImportSession + 'a>> {
        inner.begin_import(now).await
    }
}

pub struct Wrapped<H> {
    pub inner: InMemoryRepository,
    pub hooks: H,
}

impl<H: Hooks> Wrapped<H> {
    pub fn new(hooks: H) -> Self {
        Self {
            inner: InMemoryRepository::new(),
            hooks,
        }
    }
}

impl<H: Hooks> fmt::Display for Wrapped<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "in-memory repository with {:?}", self.hooks)
    }
}

// The delegating impls name every method of their trait, defaulted ones included: a
// wrapper that kept a default would silently bypass the wrapped adapter's own.
#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<H: Hooks> InvitationStore for Wrapped<H> {
    async fn create_batch(&self, batch: &NewBatch) -> RepoResult<()> {
        self.hooks.create_batch(&self.inner, batch).await
    }
    async fn take_send_slots(
        &self,
        batch: &BatchId,
        interval: Duration,
        count: u32,
        now: Timestamp,
    ) -> RepoResult<SendSlots> {
        self.hooks
            .take_send_slots(&self.inner, batch, interval, count, now)
            .await
    }
    async fn claim_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        limit: usize,
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<Delivery>> {
        self.hooks
            .claim_deliveries(&self.inner, batch, sender, limit, lease, now)
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
        self.hooks
            .renew_claims(&self.inner, batch, sender, owners, lease, now)
            .await
    }
    async fn record_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        self.hooks
            .record_deliveries(&self.inner, batch, sender, outcomes, now)
            .await
    }
    async fn redeem_token(&self, hash: &TokenHash, now: Timestamp) -> RepoResult<RedeemOutcome> {
        self.hooks.redeem_token(&self.inner, hash, now).await
    }
    async fn revoke_tokens(&self, owners: &[OwnerId], now: Timestamp) -> RepoResult<usize> {
        self.inner.revoke_tokens(owners, now).await
    }
    async fn owed_registrations(&self) -> RepoResult<Vec<OwedRegistration>> {
        self.inner.owed_registrations().await
    }
    async fn settle_registration(
        &self,
        token: &TokenHash,
        activity: Option<&ActivityEntry>,
    ) -> RepoResult<bool> {
        self.hooks
            .settle_registration(&self.inner, token, activity)
            .await
    }
    async fn answer_redeem(&self, token: &TokenHash, now: Timestamp) -> RepoResult<bool> {
        self.hooks.answer_redeem(&self.inner, token, now).await
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
    async fn batch(&self, id: &BatchId) -> RepoResult<Option<Batch>> {
        self.inner.batch(id).await
    }
    async fn batches(&self, community: &CommunityId) -> RepoResult<Vec<Batch>> {
        self.inner.batches(community).await
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
    async fn skipped_deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.inner.skipped_deliveries(batch).await
    }
    async fn requeue_failed(&self, batch: &BatchId) -> RepoResult<usize> {
        self.inner.requeue_failed(batch).await
    }
    async fn issue_token(&self, token: &TokenRecord) -> RepoResult<()> {
        self.hooks.issue_token(&self.inner, token).await
    }
    async fn issue_tokens(&self, tokens: &[TokenRecord]) -> RepoResult<()> {
        for token in tokens {
            self.hooks.issue_token(&self.inner, token).await?;
        }
        Ok(())
    }
    async fn token(&self, hash: &TokenHash) -> RepoResult<Option<TokenRecord>> {
        self.inner.token(hash).await
    }
    async fn invitation_states(
        &self,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<(OwnerId, InvitationState)>> {
        self.hooks.invitation_states(&self.inner, owners).await
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

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<H: Hooks> OwnerDirectory for Wrapped<H> {
    async fn upsert_community(&self, community: &Community) -> RepoResult<()> {
        self.inner.upsert_community(community).await
    }
    async fn upsert_owners(&self, owners: &[Owner], now: Timestamp) -> RepoResult<()> {
        self.inner.upsert_owners(owners, now).await
    }
    async fn begin_import<'a>(&'a self, now: Timestamp) -> RepoResult<Box<dyn ImportSession + 'a>> {
        self.hooks.begin_import(&self.inner, now).await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<H: Hooks> OwnerRepository for Wrapped<H> {
    async fn community(&self, id: &CommunityId) -> RepoResult<Option<Community>> {
        self.inner.community(id).await
    }
    async fn communities(&self) -> RepoResult<Vec<Community>> {
        self.inner.communities().await
    }
    async fn owners(&self, ids: &[OwnerId]) -> RepoResult<Vec<Owner>> {
        self.hooks.owners(&self.inner, ids).await
    }
    async fn community_owners(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<Owner>> {
        self.inner.community_owners(community, filter).await
    }
    async fn community_owner_ids(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<OwnerId>> {
        self.hooks
            .community_owner_ids(&self.inner, community, filter)
            .await
    }
    async fn email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.hooks.email_holders(&self.inner, keys).await
    }
    async fn shared_email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.inner.shared_email_holders(keys).await
    }
    async fn update_emails(&self, edits: &[EmailEdit]) -> RepoResult<Vec<OwnerId>> {
        self.hooks.update_emails(&self.inner, edits).await
    }
    async fn mark_registered(
        &self,
        owner: &OwnerId,
        sent_to: &str,
        at: Timestamp,
    ) -> RepoResult<Marked> {
        self.inner.mark_registered(owner, sent_to, at).await
    }
}
