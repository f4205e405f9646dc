//! The conformance suite catches broken adapters: each wrapper below delegates to
//! [`InMemoryRepository`] but breaks one contract the way a real adapter could (a
//! non-atomic batch insert, a read-then-write redeem, a read-then-write rate schedule, one
//! that saves up idle time for a burst, a read-then-write claim, a
//! renewal that renews nothing, an outcome recorded whoever holds the claim, a link
//! made live and the older one revoked at claim, a skip recorded as a failure, owner
//! ids read without the filter, a redeem answered twice, an invitation state that keeps
//! only the latest invitation). The check for that contract must fail on it, and pass
//! on the real adapter.
#![cfg(feature = "testing")]

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use common::wrapped::{Hooks, Wrapped};

use owner_access::domain::{
    ActivityEntry, BatchId, Community, CommunityId, Delivery, DeliveryOutcome, DeliveryState,
    InvitationState, NewBatch, Owner, OwnerId, SenderId, Timestamp, TokenHash, TokenRecord,
    TokenRejection, TokenState, delivered_key,
};
use owner_access::eligibility::OwnerFilter;
use owner_access::prelude::*;
use owner_access::repository::{
    EmailEdit, EmailHolder, ImportSession, Marked, RedeemOutcome, RepoResult, RepositoryError,
    SendSlots,
};
use owner_access::testing::{self, CheckResult, Failure, repository_conformance};
use owner_access::{InMemoryRepository, async_trait};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    /// `create_batch` writes the batch up to the repeated owner, then fails.
    PartialCreateBatch,
    /// `redeem_token` reads, yields, then writes without comparing.
    RacyRedeem,
    /// `claim_deliveries` reads the open deliveries, yields, then marks them.
    RacyClaim,
    /// `email_holders` matches stored addresses by their trimmed, lower-cased text
    /// (the key before the delivered address): `ann@ｅｘａｍｐｌｅ.org` is not found
    /// under `ann@example.org`.
    TextKeyHolders,
    /// `update_emails` checks uniqueness on the trimmed, lower-cased text, so it
    /// lets an owner take another spelling of a held mailbox.
    TextKeyUniqueness,
    /// `begin_import` writes each chunk straight into the store as it comes, as a
    /// streaming import without a transaction would.
    StreamingImport,
    /// `renew_claims` reports every lease renewed and renews none.
    NoRenewal,
    /// `record_deliveries` records any claimed delivery, whoever holds its claim.
    UnfencedRecord,
    /// `issue_token` stores a pending token as live, superseding the owner's older
    /// link at claim, before the message has gone out (what this crate did before
    /// links waited for the message to be accepted).
    LiveAtClaim,
    /// `record_deliveries` gives an `Unreachable` delivery back as a release does,
    /// without counting the run (a store without the column).
    UncountedUnreachable,
    /// `record_deliveries` records a skip as a failure whose error says "skipped: …"
    /// (what this crate did before skips were a state of their own).
    SkipAsFailed,
    /// `community_owner_ids` gives every owner of the community, whatever the
    /// filter, as a store reading only its id column could.
    UnfilteredIds,
    /// `settle_registration` reads whether the registration is owed, yields, then
    /// clears it and appends the entry without comparing: two settlers both append.
    RacySettle,
    /// `answer_redeem` answers `true` for a redeemed token every time: two redeems of
    /// one link both answer with the registration.
    RepeatedAnswer,
    /// The invitation state keeps only the latest invitation (first time, count 1),
    /// as a store that writes it with `INSERT OR REPLACE` would.
    LatestInvitationOnly,
    /// `take_send_slots` reads the batch's schedule, yields, then writes it: callers
    /// at once are handed the same slots (a rate kept without compare-and-set).
    RacySlots,
    /// `take_send_slots` keeps the schedule where it stood however long nobody sent,
    /// as a token bucket that fills while idle does: the slots it hands out after a
    /// pause are already past, a burst.
    BurstAfterIdle,
}

/// An import that writes each chunk as it comes: visible before the commit, and
/// kept when the session is dropped.
struct Streaming<'a> {
    inner: &'a InMemoryRepository,
    now: Timestamp,
}

#[async_trait]
impl ImportSession for Streaming<'_> {
    async fn upsert_communities(&mut self, communities: &[Community]) -> RepoResult<()> {
        for c in communities {
            self.inner.upsert_community(c).await?;
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    async fn upsert_owners(&mut self, owners: &[Owner]) -> RepoResult<()> {
        self.inner.upsert_owners(owners, self.now).await
    }

    async fn commit(self: Box<Self>) -> RepoResult<()> {
        Ok(())
    }
}

/// The comparison key before the delivered address.
fn text_key(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// The holders of `keys` whose stored address has the key as its text.
async fn text_holders(inner: &InMemoryRepository, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
    let holders = inner.email_holders(keys).await?;
    let ids: Vec<OwnerId> = holders.iter().map(|h| h.owner.clone()).collect();
    let emails: BTreeMap<OwnerId, String> = inner
        .owners(&ids)
        .await?
        .into_iter()
        .filter_map(|o| Some((o.id.clone(), text_key(o.primary_email.as_deref()?))))
        .collect();
    Ok(holders
        .into_iter()
        .filter(|h| {
            keys.iter()
                .any(|k| emails.get(&h.owner) == Some(&text_key(k)))
        })
        .collect())
}

/// The in-memory repository with one flaw.
type Broken = Wrapped<Flawed>;

#[derive(Debug)]
struct Flawed(Flaw, Schedules);

impl Flawed {
    fn new(flaw: Flaw) -> Self {
        Self(flaw, Schedules::default())
    }
}

/// The schedules of [`Flaw::RacySlots`]: the next free slot of each batch.
#[derive(Debug, Default)]
struct Schedules(std::sync::Mutex<BTreeMap<BatchId, Timestamp>>);

#[async_trait]
impl Hooks for Flawed {
    async fn take_send_slots(
        &self,
        inner: &InMemoryRepository,
        batch: &BatchId,
        interval: Duration,
        count: u32,
        now: Timestamp,
    ) -> RepoResult<SendSlots> {
        match self.0 {
            Flaw::RacySlots => {
                let span = SendSlots::check_request(interval, count)?;
                if inner.batch(batch).await?.is_none() {
                    return Err(RepositoryError::NotFound {
                        what: "batch",
                        id: batch.to_string(),
                    });
                }
                let next = self.1.0.lock().unwrap().get(batch).copied();
                tokio::task::yield_now().await;
                let first = next.map_or(now, |n| n.max(now));
                self.1.0.lock().unwrap().insert(batch.clone(), first + span);
                Ok(SendSlots {
                    now,
                    first,
                    count,
                    interval,
                })
            }
            Flaw::BurstAfterIdle => {
                // The schedule as if the clock stood still since the first grant.
                let first_now = *self.1.0.lock().unwrap().entry(batch.clone()).or_insert(now);
                let slots = inner
                    .take_send_slots(batch, interval, count, first_now)
                    .await?;
                Ok(SendSlots { now, ..slots })
            }
            _ => inner.take_send_slots(batch, interval, count, now).await,
        }
    }

    async fn invitation_states(
        &self,
        inner: &InMemoryRepository,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<(OwnerId, InvitationState)>> {
        let mut states = inner.invitation_states(owners).await?;
        if self.0 == Flaw::LatestInvitationOnly {
            for (_, state) in &mut states {
                state.first_at = state.last_at;
                state.count = 1;
            }
        }
        Ok(states)
    }

    async fn community_owner_ids(
        &self,
        inner: &InMemoryRepository,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<OwnerId>> {
        let filter = if self.0 == Flaw::UnfilteredIds {
            OwnerFilter::all()
        } else {
            filter.clone()
        };
        inner.community_owner_ids(community, &filter).await
    }

    async fn begin_import<'a>(
        &self,
        inner: &'a InMemoryRepository,
        now: Timestamp,
    ) -> RepoResult<Box<dyn ImportSession + 'a>> {
        if self.0 == Flaw::StreamingImport {
            Ok(Box::new(Streaming { inner, now }))
        } else {
            inner.begin_import(now).await
        }
    }

    async fn settle_registration(
        &self,
        inner: &InMemoryRepository,
        token: &TokenHash,
        activity: Option<&ActivityEntry>,
    ) -> RepoResult<bool> {
        if self.0 != Flaw::RacySettle {
            return inner.settle_registration(token, activity).await;
        }
        let owed = inner
            .owed_registrations()
            .await?
            .iter()
            .any(|o| o.token == *token);
        tokio::task::yield_now().await;
        if !owed {
            return Ok(false);
        }
        inner.settle_registration(token, None).await?;
        if let Some(entry) = activity {
            inner.append_activity(entry).await?;
        }
        Ok(true)
    }

    async fn answer_redeem(
        &self,
        inner: &InMemoryRepository,
        token: &TokenHash,
        now: Timestamp,
    ) -> RepoResult<bool> {
        let first = inner.answer_redeem(token, now).await?;
        if self.0 != Flaw::RepeatedAnswer {
            return Ok(first);
        }
        let redeemed = inner
            .token(token)
            .await?
            .is_some_and(|t| matches!(t.state, TokenState::Redeemed { .. }));
        Ok(redeemed)
    }

    async fn email_holders(
        &self,
        inner: &InMemoryRepository,
        keys: &[String],
    ) -> RepoResult<Vec<EmailHolder>> {
        if self.0 == Flaw::TextKeyHolders {
            text_holders(inner, keys).await
        } else {
            inner.email_holders(keys).await
        }
    }

    async fn update_emails(
        &self,
        inner: &InMemoryRepository,
        edits: &[EmailEdit],
    ) -> RepoResult<Vec<OwnerId>> {
        if self.0 != Flaw::TextKeyUniqueness {
            return inner.update_emails(edits).await;
        }
        let ids: Vec<OwnerId> = edits.iter().map(|e| e.owner.clone()).collect();
        let stored: BTreeMap<OwnerId, Owner> = inner
            .owners(&ids)
            .await?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect();
        if let Some(missing) = ids.iter().find(|id| !stored.contains_key(*id)) {
            return Err(RepositoryError::NotFound {
                what: "owner",
                id: missing.to_string(),
            });
        }
        // Uniqueness by text: among the edits, then against the other holders.
        let mut taken = BTreeMap::new();
        for edit in edits {
            let Some(key) = edit
                .email
                .as_deref()
                .map(text_key)
                .filter(|k| !k.is_empty())
            else {
                continue;
            };
            if taken.insert(key.clone(), edit.owner.clone()).is_some() {
                return Err(RepositoryError::Precondition { message: key });
            }
            let holders = text_holders(inner, &[delivered_key(&key)]).await?;
            if holders.iter().any(|h| !ids.contains(&h.owner)) {
                return Err(RepositoryError::Precondition { message: key });
            }
        }
        // Applied as host upserts.
        let mut changed = Vec::new();
        let mut updated = Vec::new();
        for edit in edits {
            let mut owner = stored[&edit.owner].clone();
            let before = owner.email_key();
            owner.primary_email = edit.email.clone();
            if owner.email_key() != before {
                changed.push(owner.id.clone());
            }
            updated.push(owner);
        }
        inner
            .upsert_owners(&updated, Timestamp::from_unix_seconds(0))
            .await?;
        Ok(changed)
    }

    async fn create_batch(&self, inner: &InMemoryRepository, batch: &NewBatch) -> RepoResult<()> {
        if self.0 != Flaw::PartialCreateBatch {
            return inner.create_batch(batch).await;
        }
        // Inserts row by row and only notices the repeat when it gets there.
        let mut seen = std::collections::BTreeSet::new();
        let repeat = batch
            .deliveries
            .iter()
            .position(|(o, _)| !seen.insert(o.clone()));
        match repeat {
            None => inner.create_batch(batch).await,
            Some(at) => {
                let partial = NewBatch {
                    deliveries: batch.deliveries[..at].to_vec(),
                    ..batch.clone()
                };
                inner.create_batch(&partial).await?;
                Err(RepositoryError::Precondition {
                    message: format!("owner `{}` repeated", batch.deliveries[at].0),
                })
            }
        }
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
        if self.0 != Flaw::RacyClaim {
            return inner
                .claim_deliveries(batch, sender, limit, lease, now)
                .await;
        }
        // Read what is open...
        let all = inner.deliveries(batch).await?;
        let mut run_out: Vec<&Delivery> = all
            .iter()
            .filter(|d| matches!(d.state, DeliveryState::Claimed { until, .. } if until <= now))
            .collect();
        run_out.sort_by_key(|d| match d.state {
            DeliveryState::Claimed { until, .. } => (until, d.owner.clone()),
            _ => unreachable!(),
        });
        let chosen: Vec<Delivery> = run_out
            .into_iter()
            .chain(all.iter().filter(|d| d.state == DeliveryState::Pending))
            .take(limit)
            .map(|d| Delivery {
                state: DeliveryState::Claimed {
                    at: now,
                    holder: sender.clone(),
                    until: now + lease,
                },
                ..d.clone()
            })
            .collect();
        // ...let another caller in...
        tokio::task::yield_now().await;
        // ...then mark without checking that nobody else took them.
        inner
            .claim_deliveries(batch, sender, limit, lease, now)
            .await?;
        Ok(chosen)
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
        if self.0 != Flaw::NoRenewal {
            return inner.renew_claims(batch, sender, owners, lease, now).await;
        }
        // Says every lease was renewed, and renews none.
        Ok(Vec::new())
    }

    async fn record_deliveries(
        &self,
        inner: &InMemoryRepository,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        if self.0 == Flaw::UncountedUnreachable {
            let (gone, rest): (Vec<_>, Vec<_>) = outcomes
                .iter()
                .cloned()
                .partition(|(_, o)| matches!(o, DeliveryOutcome::Unreachable { .. }));
            let mut refused = inner.record_deliveries(batch, sender, &rest, now).await?;
            let owners: Vec<OwnerId> = gone.into_iter().map(|(o, _)| o).collect();
            refused.extend(inner.release_deliveries(batch, sender, &owners).await?);
            return Ok(refused);
        }
        if self.0 == Flaw::SkipAsFailed {
            let as_failed: Vec<(OwnerId, DeliveryOutcome)> = outcomes
                .iter()
                .map(|(owner, outcome)| match outcome {
                    DeliveryOutcome::Skipped { reason } => (
                        owner.clone(),
                        DeliveryOutcome::Failed {
                            error: format!("skipped: {reason}"),
                            attempts: 0,
                        },
                    ),
                    other => (owner.clone(), other.clone()),
                })
                .collect();
            return inner
                .record_deliveries(batch, sender, &as_failed, now)
                .await;
        }
        if self.0 != Flaw::UnfencedRecord {
            return inner.record_deliveries(batch, sender, outcomes, now).await;
        }
        // Checks that each delivery is claimed, not by whom: records it as if the
        // writer were whoever holds it now.
        let holders: BTreeMap<OwnerId, SenderId> = inner
            .deliveries(batch)
            .await?
            .into_iter()
            .filter_map(|d| match d.state {
                DeliveryState::Claimed { holder, .. } => Some((d.owner, holder)),
                _ => None,
            })
            .collect();
        let mut refused = Vec::new();
        for (owner, outcome) in outcomes {
            match holders.get(owner) {
                Some(holder) => {
                    let one = [(owner.clone(), outcome.clone())];
                    refused.extend(inner.record_deliveries(batch, holder, &one, now).await?);
                }
                None => refused.push(owner.clone()),
            }
        }
        Ok(refused)
    }

    async fn issue_token(&self, inner: &InMemoryRepository, token: &TokenRecord) -> RepoResult<()> {
        if self.0 == Flaw::LiveAtClaim && token.state == TokenState::Pending {
            let live = TokenRecord {
                state: TokenState::Live,
                ..token.clone()
            };
            return inner.issue_token(&live).await;
        }
        inner.issue_token(token).await
    }

    async fn redeem_token(
        &self,
        inner: &InMemoryRepository,
        hash: &TokenHash,
        now: Timestamp,
    ) -> RepoResult<RedeemOutcome> {
        if self.0 != Flaw::RacyRedeem {
            return inner.redeem_token(hash, now).await;
        }
        // Read and decide...
        let Some(token) = inner.token(hash).await? else {
            return Ok(RedeemOutcome::Rejected(TokenRejection::Unknown));
        };
        if let Err(reason) = token.check(now) {
            return Ok(RedeemOutcome::Rejected(reason));
        }
        // ...let another caller in...
        tokio::task::yield_now().await;
        // ...then write, trusting the earlier read.
        let _ = inner.redeem_token(hash, now).await?;
        Ok(RedeemOutcome::Redeemed {
            token: TokenRecord {
                state: TokenState::Redeemed { at: now },
                ..token
            },
        })
    }
}

async fn caught<'a, F, Fut>(flaw: Flaw, name: &str, check: F)
where
    F: Fn(&'a dyn OwnerStorage) -> Fut,
    Fut: std::future::Future<Output = CheckResult> + 'a,
{
    caught_by(flaw, &[name], check).await;
}

/// `check` (the first of `names`) fails on the flaw and passes on the real adapter;
/// the whole suite fails on it, in exactly the checks `names`.
async fn caught_by<'a, F, Fut>(flaw: Flaw, names: &[&str], check: F)
where
    F: Fn(&'a dyn OwnerStorage) -> Fut,
    Fut: std::future::Future<Output = CheckResult> + 'a,
{
    let broken: &'a Broken = Box::leak(Box::new(Broken::new(Flawed::new(flaw))));
    let failure = check(broken)
        .await
        .expect_err("the check must catch the flaw");
    assert_eq!(failure.check, names[0]);
    println!("{flaw:?} caught: {failure}");

    let real: &'a InMemoryRepository = Box::leak(Box::new(InMemoryRepository::new()));
    check(real)
        .await
        .expect("the real adapter passes the check");

    let failures: Vec<Failure> =
        repository_conformance(|| async { Broken::new(Flawed::new(flaw)) })
            .await
            .expect_err("the suite must fail on a broken adapter");
    let failed: Vec<&str> = failures.iter().map(|f| f.check).collect();
    let mut want = names.to_vec();
    want.sort_unstable();
    let mut got = failed.clone();
    got.sort_unstable();
    assert_eq!(got, want, "only the broken contract fails: {failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_schedule_without_compare_and_set_is_caught() {
    caught(
        Flaw::RacySlots,
        "send_slots_concurrently",
        testing::send_slots_concurrently,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_schedule_that_saves_up_idle_time_is_caught() {
    caught(
        Flaw::BurstAfterIdle,
        "send_slots_rules",
        testing::send_slots_rules,
    )
    .await;
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
    caught_by(
        Flaw::RacyClaim,
        &["claim_deliveries_concurrently", "renewal_races_take_over"],
        testing::claim_deliveries_concurrently,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_found_by_text_instead_of_mailbox_are_caught() {
    caught_by(
        Flaw::TextKeyHolders,
        &["email_holders_rules", "directory_email_holders"],
        testing::email_holders_rules,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_that_does_not_renew_leases_is_caught() {
    caught_by(
        Flaw::NoRenewal,
        &[
            "renew_claims_rules",
            "held_claims_and_revoke",
            "renewal_races_take_over",
        ],
        testing::renew_claims_rules,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_edit_unique_by_text_instead_of_mailbox_is_caught() {
    caught_by(
        Flaw::TextKeyUniqueness,
        &["update_emails_uniqueness", "directory_update_emails"],
        testing::update_emails_uniqueness,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_that_writes_each_chunk_as_it_comes_is_caught() {
    caught(
        Flaw::StreamingImport,
        "import_session_is_one_step",
        testing::import_session_is_one_step,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_that_forgets_unreachable_runs_is_caught() {
    caught(
        Flaw::UncountedUnreachable,
        "unreachable_runs_are_counted",
        testing::unreachable_runs_are_counted,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_ids_that_ignore_the_filter_are_caught() {
    caught(
        Flaw::UnfilteredIds,
        "community_owners_filters",
        testing::community_owners_filters,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_state_that_keeps_only_the_latest_invitation_is_caught() {
    caught(
        Flaw::LatestInvitationOnly,
        "invitation_states_follow_sent_messages",
        testing::invitation_states_follow_sent_messages,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_without_compare_and_set_is_caught() {
    caught(
        Flaw::RacySettle,
        "owed_registrations_rules",
        testing::owed_registrations_rules,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_taken_twice_is_caught() {
    caught(
        Flaw::RepeatedAnswer,
        "redeem_answered_once",
        testing::redeem_answered_once,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_without_fencing_is_caught() {
    caught_by(
        Flaw::UnfencedRecord,
        &[
            "stale_holder_writes_are_refused",
            "tokens_pending_until_sent",
            "unreachable_runs_are_counted",
            "invitation_states_follow_sent_messages",
        ],
        testing::stale_holder_writes_are_refused,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_that_revokes_the_old_link_at_claim_is_caught() {
    caught_by(
        Flaw::LiveAtClaim,
        &[
            "tokens_pending_until_sent",
            "upsert_email_change_revokes_tokens",
            "update_emails_applies_and_revokes",
            "redeem_token_rules",
            "revoke_tokens_rules",
            "skipped_deliveries_are_settled",
        ],
        testing::tokens_pending_until_sent,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_that_records_a_skip_as_a_failure_is_caught() {
    caught(
        Flaw::SkipAsFailed,
        "skipped_deliveries_are_settled",
        testing::skipped_deliveries_are_settled,
    )
    .await;
}

/// A host directory whose `mark_registered` ignores the link's address (it marks
/// whoever the token names): the directory suite must catch it, and only in the check
/// of that contract.
struct CarelessDirectory(InMemoryRepository);

impl fmt::Display for CarelessDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a directory that marks without comparing addresses")
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl OwnerRepository for CarelessDirectory {
    async fn community(
        &self,
        id: &owner_access::domain::CommunityId,
    ) -> RepoResult<Option<Community>> {
        self.0.community(id).await
    }
    async fn communities(&self) -> RepoResult<Vec<Community>> {
        self.0.communities().await
    }
    async fn owners(&self, ids: &[OwnerId]) -> RepoResult<Vec<Owner>> {
        self.0.owners(ids).await
    }
    async fn community_owners(
        &self,
        community: &owner_access::domain::CommunityId,
        filter: &owner_access::eligibility::OwnerFilter,
    ) -> RepoResult<Vec<Owner>> {
        self.0.community_owners(community, filter).await
    }
    async fn community_owner_ids(
        &self,
        community: &owner_access::domain::CommunityId,
        filter: &owner_access::eligibility::OwnerFilter,
    ) -> RepoResult<Vec<OwnerId>> {
        self.0.community_owner_ids(community, filter).await
    }
    async fn email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.0.email_holders(keys).await
    }
    async fn shared_email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.0.shared_email_holders(keys).await
    }
    async fn update_emails(&self, edits: &[EmailEdit]) -> RepoResult<Vec<OwnerId>> {
        self.0.update_emails(edits).await
    }
    async fn mark_registered(
        &self,
        owner: &OwnerId,
        _sent_to: &str,
        at: Timestamp,
    ) -> RepoResult<Marked> {
        // Whatever address the link went to: the owner's own, as far as this knows.
        let Some(stored) = self.0.owner(owner).await? else {
            return Ok(Marked::UnknownOwner);
        };
        let own = stored.primary_email.clone().unwrap_or_default();
        self.0.mark_registered(owner, &own, at).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_suite_catches_a_careless_mark() {
    let seed = |seed: testing::Seed| async move {
        let dir = InMemoryRepository::new();
        testing::seed_through_upserts(&dir, &seed).await.unwrap();
        CarelessDirectory(dir)
    };
    let failures = testing::directory_conformance(seed)
        .await
        .expect_err("the suite must fail on a careless directory");
    let failed: Vec<&str> = failures.iter().map(|f| f.check).collect();
    assert_eq!(failed, ["directory_mark_registered"], "{failures:?}");
    println!("caught: {}", failures[0]);
    // The sound directory passes the same suite.
    testing::directory_conformance(|seed| async move {
        let dir = InMemoryRepository::new();
        testing::seed_through_upserts(&dir, &seed).await.unwrap();
        dir
    })
    .await
    .unwrap_or_else(|f| panic!("{f:#?}"));
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
