//! The conformance suite catches broken adapters: each wrapper below delegates to
//! [`InMemoryRepository`] but breaks one contract the way a real adapter could (a
//! non-atomic batch insert, a read-then-write redeem, a read-then-write claim). The
//! check for that contract must fail on it, and pass on the real adapter.
#![cfg(feature = "testing")]

use std::fmt;

use owner_access::domain::{
    AccessStatus, ActivityEntry, Batch, BatchId, Community, CommunityId, Delivery, DeliveryCounts,
    DeliveryOutcome, DeliveryState, Draft, DraftId, NewBatch, Owner, OwnerId, Page, Timestamp,
    TokenHash, TokenRecord, TokenRejection, TokenState,
};
use owner_access::eligibility::OwnerFilter;
use owner_access::repository::{
    EmailEdit, EmailHolder, RedeemOutcome, RepoResult, RepositoryError,
};
use owner_access::testing::{self, CheckResult, Failure, repository_conformance};
use owner_access::{InMemoryRepository, OwnerRepository, async_trait};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    /// `create_batch` writes the batch up to the repeated owner, then fails.
    PartialCreateBatch,
    /// `redeem_token` reads, yields, then writes without comparing.
    RacyRedeem,
    /// `claim_deliveries` reads the open deliveries, yields, then marks them.
    RacyClaim,
}

struct Broken {
    inner: InMemoryRepository,
    flaw: Flaw,
}

impl Broken {
    fn new(flaw: Flaw) -> Self {
        Self {
            inner: InMemoryRepository::new(),
            flaw,
        }
    }
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "broken repository ({:?})", self.flaw)
    }
}

#[async_trait]
impl OwnerRepository for Broken {
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
        if self.flaw != Flaw::PartialCreateBatch {
            return self.inner.create_batch(batch).await;
        }
        // Inserts row by row and only notices the repeat when it gets there.
        let mut seen = std::collections::BTreeSet::new();
        let repeat = batch
            .deliveries
            .iter()
            .position(|(o, _)| !seen.insert(o.clone()));
        match repeat {
            None => self.inner.create_batch(batch).await,
            Some(at) => {
                let partial = NewBatch {
                    deliveries: batch.deliveries[..at].to_vec(),
                    ..batch.clone()
                };
                self.inner.create_batch(&partial).await?;
                Err(RepositoryError::Precondition {
                    message: format!("owner `{}` repeated", batch.deliveries[at].0),
                })
            }
        }
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
        if self.flaw != Flaw::RacyClaim {
            return self
                .inner
                .claim_deliveries(batch, limit, now, stale_before)
                .await;
        }
        // Read what is open...
        let all = self.inner.deliveries(batch).await?;
        let mut stale: Vec<&Delivery> = all
            .iter()
            .filter(|d| matches!(d.state, DeliveryState::Claimed { at } if at <= stale_before))
            .collect();
        stale.sort_by_key(|d| match d.state {
            DeliveryState::Claimed { at } => (at, d.owner.clone()),
            _ => unreachable!(),
        });
        let chosen: Vec<Delivery> = all
            .iter()
            .filter(|d| d.state == DeliveryState::Pending)
            .chain(stale)
            .take(limit)
            .map(|d| Delivery {
                state: DeliveryState::Claimed { at: now },
                ..d.clone()
            })
            .collect();
        // ...let another caller in...
        tokio::task::yield_now().await;
        // ...then mark without checking that nobody else took them.
        self.inner
            .claim_deliveries(batch, limit, now, stale_before)
            .await?;
        Ok(chosen)
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
    async fn token(&self, hash: &TokenHash) -> RepoResult<Option<TokenRecord>> {
        self.inner.token(hash).await
    }

    async fn redeem_token(&self, hash: &TokenHash, now: Timestamp) -> RepoResult<RedeemOutcome> {
        if self.flaw != Flaw::RacyRedeem {
            return self.inner.redeem_token(hash, now).await;
        }
        // Read and decide...
        let Some(token) = self.inner.token(hash).await? else {
            return Ok(RedeemOutcome::Rejected(TokenRejection::Unknown));
        };
        if let Err(reason) = token.check(now) {
            return Ok(RedeemOutcome::Rejected(reason));
        }
        let Some(owner) = self.inner.owner(&token.owner).await? else {
            return Ok(RedeemOutcome::Rejected(TokenRejection::Unknown));
        };
        if owner.is_registered() {
            return Ok(RedeemOutcome::Rejected(TokenRejection::AlreadyUsed));
        }
        // ...let another caller in...
        tokio::task::yield_now().await;
        // ...then write, trusting the earlier read.
        let _ = self.inner.redeem_token(hash, now).await?;
        Ok(RedeemOutcome::Redeemed {
            owner: Box::new(owner.with_access(AccessStatus::Registered { at: Some(now) })),
            token: TokenRecord {
                state: TokenState::Redeemed { at: now },
                ..token
            },
        })
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

/// The check fails on the flawed adapter, passes on the real one, and the whole
/// suite on the flawed adapter reports exactly that check.
async fn caught<'a, F, Fut>(flaw: Flaw, name: &str, check: F)
where
    F: Fn(&'a dyn OwnerRepository) -> Fut,
    Fut: std::future::Future<Output = CheckResult> + 'a,
{
    let broken: &'a Broken = Box::leak(Box::new(Broken::new(flaw)));
    let failure = check(broken)
        .await
        .expect_err("the check must catch the flaw");
    assert_eq!(failure.check, name);
    println!("{flaw:?} caught: {failure}");

    let real: &'a InMemoryRepository = Box::leak(Box::new(InMemoryRepository::new()));
    check(real)
        .await
        .expect("the real adapter passes the check");

    let failures: Vec<Failure> = repository_conformance(|| async { Broken::new(flaw) })
        .await
        .expect_err("the suite must fail on a broken adapter");
    let names: Vec<&str> = failures.iter().map(|f| f.check).collect();
    assert_eq!(
        names,
        vec![name],
        "only the broken contract fails: {failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_atomic_create_batch_is_caught() {
    caught(
        Flaw::PartialCreateBatch,
        "create_batch_is_all_or_nothing",
        testing::create_batch_is_all_or_nothing,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeem_without_compare_and_set_is_caught() {
    caught(
        Flaw::RacyRedeem,
        "redeem_token_concurrently_once",
        testing::redeem_token_concurrently_once,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_hands_out_a_delivery_twice_is_caught() {
    caught(
        Flaw::RacyClaim,
        "claim_deliveries_concurrently",
        testing::claim_deliveries_concurrently,
    )
    .await;
}

/// A transport with one of two classic bugs: undoing dot-stuffing on every line that
/// starts with a dot (a lone "." or "..x" arrives altered), or storing a message twice.
struct BrokenTransport {
    inner: owner_access::InMemoryTransport,
    strips_leading_dots: bool,
}

impl fmt::Display for BrokenTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("broken transport")
    }
}

#[async_trait]
impl owner_access::MailTransport for BrokenTransport {
    async fn send(
        &self,
        envelope: &owner_access::transport::Envelope,
        message: &[u8],
    ) -> Result<owner_access::transport::Accepted, owner_access::transport::TransportError> {
        if self.strips_leading_dots {
            let text = String::from_utf8_lossy(message);
            let mangled: Vec<&str> = text
                .split("\r\n")
                .map(|line| line.strip_prefix('.').unwrap_or(line))
                .collect();
            self.inner
                .send(envelope, mangled.join("\r\n").as_bytes())
                .await
        } else {
            self.inner.send(envelope, message).await?;
            self.inner.send(envelope, message).await
        }
    }
}

#[tokio::test]
async fn the_transport_suite_catches_broken_transports() {
    for (strips_leading_dots, check) in [
        (true, "transport_preserves_bytes"),
        (false, "transport_delivers_once"),
    ] {
        let broken = BrokenTransport {
            inner: owner_access::InMemoryTransport::new(),
            strips_leading_dots,
        };
        let failures = testing::transport_conformance(&broken, &broken.inner)
            .await
            .expect_err("a broken transport must fail the suite");
        assert!(
            failures.iter().any(|f| f.check == check),
            "{check} should fail: {failures:?}"
        );
    }
    let sound = owner_access::InMemoryTransport::new();
    testing::transport_conformance(&sound, &sound)
        .await
        .unwrap();
}
