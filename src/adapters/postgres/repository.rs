//! [`PostgresRepository`]: both ports, each call forwarded to its half (every
//! method, the optional ones included, so none falls back to a slower default).

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{
    ActivityEntry, Batch, BatchId, Community, CommunityId, Delivery, DeliveryCounts,
    DeliveryOutcome, Draft, DraftId, InvitationState, NewBatch, Owner, OwnerId, Page, SenderId,
    Timestamp, TokenHash, TokenRecord,
};
use crate::eligibility::OwnerFilter;
use crate::repository::{
    EmailEdit, EmailHolder, HeldClaims, ImportSession, InvitationStore, Marked, OwedRegistration,
    OwnerDirectory, OwnerRepository, RedeemOutcome, RepoResult, SendSlots,
};

use super::PostgresRepository;

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl OwnerRepository for PostgresRepository {
    async fn community(&self, id: &CommunityId) -> RepoResult<Option<Community>> {
        self.directory.community(id).await
    }
    async fn communities(&self) -> RepoResult<Vec<Community>> {
        self.directory.communities().await
    }
    async fn owners(&self, ids: &[OwnerId]) -> RepoResult<Vec<Owner>> {
        self.directory.owners(ids).await
    }
    async fn community_owners(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<Owner>> {
        self.directory.community_owners(community, filter).await
    }
    async fn community_owner_ids(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<OwnerId>> {
        self.directory.community_owner_ids(community, filter).await
    }
    async fn email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.directory.email_holders(keys).await
    }
    async fn shared_email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.directory.shared_email_holders(keys).await
    }
    async fn update_emails(&self, edits: &[EmailEdit]) -> RepoResult<Vec<OwnerId>> {
        self.directory.update_emails(edits).await
    }
    async fn mark_registered(
        &self,
        owner: &OwnerId,
        sent_to: &str,
        at: Timestamp,
    ) -> RepoResult<Marked> {
        self.directory.mark_registered(owner, sent_to, at).await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl OwnerDirectory for PostgresRepository {
    async fn upsert_community(&self, community: &Community) -> RepoResult<()> {
        self.directory.upsert_community(community).await
    }
    async fn upsert_owners(&self, owners: &[Owner], now: Timestamp) -> RepoResult<()> {
        self.directory.upsert_owners(owners, now).await
    }
    async fn begin_import<'a>(&'a self, now: Timestamp) -> RepoResult<Box<dyn ImportSession + 'a>> {
        self.directory.begin_import(now).await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl InvitationStore for PostgresRepository {
    async fn save_draft(&self, draft: &Draft) -> RepoResult<()> {
        self.store.save_draft(draft).await
    }
    async fn draft(&self, id: &DraftId) -> RepoResult<Option<Draft>> {
        self.store.draft(id).await
    }
    async fn drafts(&self, community: &CommunityId) -> RepoResult<Vec<Draft>> {
        self.store.drafts(community).await
    }
    async fn delete_draft(&self, id: &DraftId) -> RepoResult<bool> {
        self.store.delete_draft(id).await
    }
    async fn create_batch(&self, batch: &NewBatch) -> RepoResult<()> {
        self.store.create_batch(batch).await
    }
    async fn batch(&self, id: &BatchId) -> RepoResult<Option<Batch>> {
        self.store.batch(id).await
    }
    async fn batches(&self, community: &CommunityId) -> RepoResult<Vec<Batch>> {
        self.store.batches(community).await
    }
    async fn take_send_slots(
        &self,
        batch: &BatchId,
        interval: Duration,
        count: u32,
        now: Timestamp,
    ) -> RepoResult<SendSlots> {
        self.store
            .take_send_slots(batch, interval, count, now)
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
        self.store
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
        self.store
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
        self.store
            .record_deliveries(batch, sender, outcomes, now)
            .await
    }
    async fn release_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<OwnerId>> {
        self.store.release_deliveries(batch, sender, owners).await
    }
    async fn held_claims(&self, batch: &BatchId, now: Timestamp) -> RepoResult<HeldClaims> {
        self.store.held_claims(batch, now).await
    }
    async fn revoke_claims(&self, batch: &BatchId) -> RepoResult<usize> {
        self.store.revoke_claims(batch).await
    }
    async fn invitation_states(
        &self,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<(OwnerId, InvitationState)>> {
        self.store.invitation_states(owners).await
    }
    async fn deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.store.deliveries(batch).await
    }
    async fn delivery_counts(&self, batch: &BatchId) -> RepoResult<DeliveryCounts> {
        self.store.delivery_counts(batch).await
    }
    async fn failed_deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.store.failed_deliveries(batch).await
    }
    async fn skipped_deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.store.skipped_deliveries(batch).await
    }
    async fn requeue_failed(&self, batch: &BatchId) -> RepoResult<usize> {
        self.store.requeue_failed(batch).await
    }
    async fn issue_token(&self, token: &TokenRecord) -> RepoResult<()> {
        self.store.issue_token(token).await
    }
    async fn issue_tokens(&self, tokens: &[TokenRecord]) -> RepoResult<()> {
        self.store.issue_tokens(tokens).await
    }
    async fn token(&self, hash: &TokenHash) -> RepoResult<Option<TokenRecord>> {
        self.store.token(hash).await
    }
    async fn redeem_token(&self, hash: &TokenHash, now: Timestamp) -> RepoResult<RedeemOutcome> {
        self.store.redeem_token(hash, now).await
    }
    async fn owed_registrations(&self) -> RepoResult<Vec<OwedRegistration>> {
        self.store.owed_registrations().await
    }
    async fn settle_registration(
        &self,
        token: &TokenHash,
        activity: Option<&ActivityEntry>,
    ) -> RepoResult<bool> {
        self.store.settle_registration(token, activity).await
    }
    async fn answer_redeem(&self, token: &TokenHash, now: Timestamp) -> RepoResult<bool> {
        self.store.answer_redeem(token, now).await
    }
    async fn revoke_tokens(&self, owners: &[OwnerId], now: Timestamp) -> RepoResult<usize> {
        self.store.revoke_tokens(owners, now).await
    }
    async fn append_activity(&self, entry: &ActivityEntry) -> RepoResult<()> {
        self.store.append_activity(entry).await
    }
    async fn activity(
        &self,
        community: &CommunityId,
        page: Page,
    ) -> RepoResult<Vec<ActivityEntry>> {
        self.store.activity(community, page).await
    }
}
