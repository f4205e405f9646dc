//! The workflow's port ([`InvitationStore`]): drafts, batches and deliveries with
//! leases and fencing, tokens, invitation states, the activity feed.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{
    ActivityEntry, Batch, BatchId, CommunityId, Delivery, DeliveryCounts, DeliveryOutcome,
    DeliveryState, Draft, DraftId, InvitationState, NewBatch, OwnerId, Page, SenderId, Timestamp,
    TokenHash, TokenRecord, TokenRejection,
};

use super::{RepoResult, RepositoryError};

/// The result of a redeem attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedeemOutcome {
    /// This call won: the token is now used.
    Redeemed {
        /// The token, as stored after the change.
        token: TokenRecord,
    },
    /// The token did not work; nothing changed.
    Rejected(TokenRejection),
}

/// A registration owed: a redeem whose token the store spent (its first step) and
/// whose owner is not yet known to be marked registered in the directory (its second)
/// and settled (its third). A crash between the steps leaves one; the next redeem,
/// verify, review or send completes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwedRegistration {
    /// The spent token.
    pub token: TokenHash,
    /// Its owner.
    pub owner: OwnerId,
    /// The batch whose message carried it.
    pub batch: BatchId,
    /// The address the message went to: what `mark_registered` compares.
    pub sent_to: String,
    /// When the token was spent: the registration's time.
    pub at: Timestamp,
}

/// The senders holding claims on a batch (see [`InvitationStore::held_claims`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldClaims {
    /// The judging clock's now, to compare the leases' ends with.
    pub now: Timestamp,
    /// One entry per sender holding claims, in any order.
    pub holders: Vec<ClaimHolder>,
}

/// One sender's claims on a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHolder {
    /// The sender.
    pub sender: SenderId,
    /// How many deliveries it holds.
    pub deliveries: usize,
    /// The earliest end of its leases: when the first of them may be taken over.
    pub first_until: Timestamp,
    /// The latest end of its leases: when all of them may be, unless it renews them.
    pub last_until: Timestamp,
}

/// Send slots granted on a batch's shared schedule (see
/// [`InvitationStore::take_send_slots`]): `count` slots, `interval` apart, the first
/// at `first`, all by the judging clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendSlots {
    /// The judging clock's now when the slots were granted: a sender waits
    /// `first - now` from when it got the answer, so senders whose clocks differ
    /// still agree on the spacing.
    pub now: Timestamp,
    /// The first slot: at or after `now`.
    pub first: Timestamp,
    /// How many slots.
    pub count: u32,
    /// The time between two slots.
    pub interval: Duration,
}

impl SendSlots {
    /// The longest stretch one call may take (`count * interval`): a day. Longer is
    /// refused, so a schedule stays a time every store can hold.
    pub const MAX_SPAN: Duration = Duration::from_secs(24 * 3600);

    /// How long after the answer the first slot starts.
    pub fn starts_in(&self) -> Duration {
        self.first - self.now
    }

    /// Slot `k` (from 0), by the judging clock.
    pub fn slot(&self, k: u32) -> Timestamp {
        self.first + self.interval * k
    }

    /// Where the schedule stands after this grant: the next free slot.
    pub fn end(&self) -> Timestamp {
        self.first + self.interval * self.count
    }

    /// The check every adapter makes before taking slots: `count` at least 1,
    /// `interval` not zero, `count * interval` at most [`MAX_SPAN`](Self::MAX_SPAN).
    /// `Precondition` otherwise.
    pub fn check_request(interval: Duration, count: u32) -> RepoResult<Duration> {
        match interval.checked_mul(count) {
            Some(span) if count > 0 && !interval.is_zero() && span <= Self::MAX_SPAN => Ok(span),
            _ => Err(RepositoryError::Precondition {
                message: format!(
                    "send slots: {count} slots {interval:?} apart is not 1 or more slots, \
                     a non-zero interval and at most a day"
                ),
            }),
        }
    }
}

/// The workflow's port: drafts, batches and their deliveries (claims are leases, with
/// fencing), registration tokens, each owner's invitation state, and the activity
/// feed. The crate ships it
/// ([`InMemoryRepository`](crate::InMemoryRepository),
/// [`SqliteRepository`](crate::adapters::sqlite::SqliteRepository)); a host with its own
/// owner tables uses one of those beside its own [`OwnerRepository`](super::OwnerRepository).
///
/// Object safe: hold it as `Arc<dyn InvitationStore>`. Implementations must be safe to
/// call concurrently from many tasks and many processes sharing the store.
///
/// # Claims are leases
///
/// A run of the send engine claims a batch's deliveries before sending them. A claim
/// names its holder (the run's [`SenderId`]) and runs until a time (`until`); the
/// holder renews it well before then for as long as it works on the delivery, so a
/// live sender never loses a claim however slow it is, and a dead sender's claims can
/// be taken once their lease has run out. The claim methods below
/// ([`claim_deliveries`](Self::claim_deliveries), [`renew_claims`](Self::renew_claims),
/// [`record_deliveries`](Self::record_deliveries),
/// [`release_deliveries`](Self::release_deliveries), [`held_claims`](Self::held_claims),
/// [`revoke_claims`](Self::revoke_claims)) keep these rules:
///
/// - **One clock judges.** Whether a lease has run out is decided by one clock for
///   every sender of a batch: the store's own where it has one (a database server's
///   `now()`), else the `now` the caller passes. Callers pass their `now` and the
///   lease's *duration*, never an end time, so either works: a lease written when the
///   judging clock reads T runs until T + duration. The in-memory and SQLite adapters
///   judge by the caller's `now` (the processes sharing one SQLite file run on one
///   machine, with one clock).
/// - **Claim** takes pending deliveries and run-out leases, never a lease that still
///   runs, whoever holds it.
/// - **Renew** extends only the caller's own leases.
/// - **Fencing.** An outcome, a renewal and a release count only when they come from
///   the sender that holds the claim now. A lease that ran out but that nobody took
///   is still its holder's. A grouped write applies to the deliveries its sender still
///   holds and returns the others as refused, unchanged: one taken-over delivery never
///   costs the rest of the group, and a late write never overwrites the outcome of the
///   sender that took over.
/// - **Revoke** ends every claim on a batch at once, for an operator who knows their
///   senders are dead.
///
/// # Links: pending until accepted
///
/// An owner's working link is revoked only when a newer message to that owner has
/// been accepted by the transport, or when their primary email changes (or they
/// register). The send engine stores each message's token when it claims the
/// delivery, before the message goes out, so a new invitation and the owner's live
/// old one coexist until the new message is accepted:
///
/// - [`issue_token`](Self::issue_token) stores the new token as
///   [`TokenState::Pending`](crate::domain::TokenState::Pending) and revokes nothing.
///   A pending token cannot be redeemed
///   ([`TokenRejection::NotSent`]).
/// - [`record_deliveries`](Self::record_deliveries), in the same fenced grouped write
///   that records a delivery as sent, makes that delivery's pending tokens (of its
///   owner and batch) live and revokes the owner's live tokens of other batches: the
///   new link supersedes the old one at the moment the message counts as sent.
/// - A run that stops, fails or crashes before that (a delivery left pending, given
///   back, or failed) changes no token: the old link keeps working, the new token
///   stays pending. A message sent again by a resume after a crash carries a fresh
///   token of the same batch; when it is recorded, every pending token of that
///   delivery becomes live, so the copy that may already have been delivered keeps
///   working: sending a message again never kills the link in a copy the owner may
///   already have.
/// - So at any time an owner has live tokens of at most one batch, the one whose
///   message was accepted last, and any number of pending ones.
/// - An email change and a redeem revoke the owner's pending tokens with the live
///   ones.
#[async_trait]
pub trait InvitationStore: Send + Sync + fmt::Display {
    /// Inserts or replaces a draft.
    ///
    /// # Contract
    /// - A later [`draft`](Self::draft) returns exactly what was stored, attachments
    ///   included.
    async fn save_draft(&self, draft: &Draft) -> RepoResult<()>;

    /// A draft by id (`Ok(None)` when missing).
    async fn draft(&self, id: &DraftId) -> RepoResult<Option<Draft>>;

    /// The drafts of a community, newest first (by `updated_at`).
    async fn drafts(&self, community: &CommunityId) -> RepoResult<Vec<Draft>>;

    /// Deletes a draft.
    ///
    /// # Contract
    /// - Returns whether it existed; deleting a missing draft is `Ok(false)`.
    async fn delete_draft(&self, id: &DraftId) -> RepoResult<bool>;

    /// Stores a batch, its first activity entry and all its deliveries as pending, in
    /// one atomic step, before anything is sent.
    ///
    /// # Contract
    /// - All or nothing: after a failure (or a crash) none of it is visible.
    /// - `AlreadyExists` if the batch id is taken; nothing changes.
    /// - One delivery per (batch, owner): a repeated owner in `deliveries` is an
    ///   error (`Precondition`) and nothing changes.
    async fn create_batch(&self, batch: &NewBatch) -> RepoResult<()>;

    /// A batch by id (`Ok(None)` when missing).
    async fn batch(&self, id: &BatchId) -> RepoResult<Option<Batch>>;

    /// The batches of a community, newest first.
    async fn batches(&self, community: &CommunityId) -> RepoResult<Vec<Batch>>;

    // ----- Claims: leases held by a sender ---------------------------------------
    //
    // The rules are the trait's "Claims are leases" section; these methods are one
    // block that keeps them.

    /// Claims up to `limit` deliveries of a batch for `sender`, each for `lease`.
    ///
    /// # Contract
    /// - Compare-and-set, one atomic step (for a database, one statement): takes
    ///   deliveries that are pending, or claimed with a lease that has run out (its
    ///   `until` at or before the judging clock's now), whoever held them; never one
    ///   whose lease still runs, not even the caller's own. Two concurrent callers
    ///   never get the same delivery.
    /// - Each becomes `Claimed { at: now, holder: sender, until: now + lease }`, by
    ///   the judging clock.
    /// - Run-out leases first (the oldest `until` first), then pending deliveries
    ///   (by owner id): the deliveries of a sender that died are taken by the next
    ///   claim after their lease, so their owners wait about a lease, not until the
    ///   rest of the batch is sent.
    /// - Returns the claimed deliveries as stored, in any order; an empty list when
    ///   none is claimable. `NotFound` when the batch does not exist.
    async fn claim_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        limit: usize,
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<Delivery>>;

    /// Renews `sender`'s leases on the listed deliveries: what a live sender calls
    /// well before they run out, once for everything it holds, not once per message.
    ///
    /// # Contract
    /// - One atomic step (for a database, one statement).
    /// - Each listed delivery claimed by `sender` gets `until = now + lease` by the
    ///   judging clock, even if its lease had run out, as long as no other sender took
    ///   it; `at` and `holder` stay.
    /// - Returns the listed owners it did not renew, in any order: those `sender`
    ///   does not hold (taken over by another sender, released, revoked, settled,
    ///   unknown). They are left unchanged.
    /// - `NotFound` when the batch does not exist.
    async fn renew_claims(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>>;

    /// Records how claimed deliveries ended: what the send engine calls for a group
    /// of outcomes, so a store commits them at once instead of once per message.
    ///
    /// # Contract
    /// - Fenced, per delivery: an outcome counts only if `sender` holds the
    ///   delivery's claim now (a lease that ran out but that nobody took is still
    ///   held). The others are refused and left unchanged; the rest of the group is
    ///   recorded all the same.
    /// - A recorded delivery moves from `Claimed` to `Sent`, `Failed` or `Skipped`
    ///   (with the outcome's [`SkipReason`](crate::domain::SkipReason)) at `now`, its
    ///   `attempts` grows by the outcome's (a skip adds none), and on `Sent`, in the
    ///   same step:
    ///   the owner's invitation state ([`invitation_states`](Self::invitation_states)) becomes
    ///   [`InvitationState::after`]`(state before, now, expires_at)` (one more
    ///   invitation, the first one when there was none);
    ///   every `Pending` token of this owner and batch becomes `Live`; and the
    ///   owner's `Live` tokens of other batches become `Revoked { at: now }`
    ///   (superseded). Live tokens of the same batch stay live; pending tokens of
    ///   other batches stay pending.
    /// - `Failed` and `Skipped` change no token and no invitation state: the
    ///   pending tokens stay pending (never redeemable), the owner's older link keeps
    ///   working. A refused outcome changes nothing.
    /// - [`DeliveryOutcome::Unreachable`] moves it from `Claimed` back to `Pending`
    ///   (no holder, no lease) and changes no token, as `Failed` does; its
    ///   `attempts` grows by the outcome's and its
    ///   [`unreachable_runs`](Delivery::unreachable_runs) by one, and a later claim
    ///   returns it with that count: the send engine fails a delivery that the
    ///   server could not be reached for in
    ///   [`UNREACHABLE_RUNS`](crate::dispatch::UNREACHABLE_RUNS) runs in a row, so
    ///   a store that forgets the count lets one message stop every run of its batch.
    /// - The whole group is one atomic step; an error records none of it.
    /// - Returns the refused owners, in any order. `NotFound` when the batch does
    ///   not exist.
    async fn record_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>>;

    /// Gives claimed deliveries back, pending (a run that stops before sending them).
    ///
    /// # Contract
    /// - Fenced, per delivery, one atomic step: each listed delivery `sender` holds
    ///   becomes `Pending`; the others are left unchanged and returned as refused, in
    ///   any order.
    /// - `NotFound` when the batch does not exist.
    async fn release_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<OwnerId>>;

    /// Who holds claims on a batch and until when: what a run waits on when the rest
    /// of a batch is held by other senders.
    ///
    /// # Contract
    /// - One [`ClaimHolder`] per sender holding at least one `Claimed` delivery of
    ///   the batch (leases that ran out included, until someone takes them), in any
    ///   order, with its number of deliveries and their earliest and latest `until`.
    /// - [`HeldClaims::now`] is the judging clock's now (the given `now` for a store
    ///   without a clock of its own), to compare the `until`s with.
    /// - `NotFound` when the batch does not exist.
    async fn held_claims(&self, batch: &BatchId, now: Timestamp) -> RepoResult<HeldClaims>;

    /// Ends every claim on a batch at once, whoever holds it: an operator's take-over
    /// of a batch whose sender is known to be dead, without waiting for its leases.
    ///
    /// # Contract
    /// - One atomic step: every `Claimed` delivery of the batch becomes `Pending`.
    ///   Their former holders' later writes about them are refused (fencing).
    /// - Returns how many were claimed. `NotFound` when the batch does not exist.
    async fn revoke_claims(&self, batch: &BatchId) -> RepoResult<usize>;

    /// The invitation states of these owners: what the roster joins with the
    /// directory's owners (its Invited tab, its counts) and what
    /// [`compose_resend_to_invited`](crate::OwnerAccess::compose_resend_to_invited)
    /// selects by, for a page or a chunk of owners at once.
    ///
    /// # Contract
    /// - One `(owner, state)` per listed owner that has one, in any order, each
    ///   owner once however often listed; owners never sent an invitation (or
    ///   unknown) are left out. An owner's state is what
    ///   [`record_deliveries`](Self::record_deliveries) made it, message by message
    ///   recorded as sent, whatever happened since in the directory (a registration,
    ///   an email change): the store keeps the history, the service judges it.
    /// - Read-only, one round trip: a store answers a chunk of thousands of ids with
    ///   one query.
    async fn invitation_states(
        &self,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<(OwnerId, InvitationState)>>;

    // ----- The batch's rate -------------------------------------------------------

    /// Takes `count` send slots, `interval` apart, on the batch's schedule: the rate
    /// limit of a batch shared by every sender of it, in as many processes as share the
    /// store. The send engine calls it for a group of slots (about a quarter of a
    /// second's worth), never once per message.
    ///
    /// # Contract
    /// - One atomic step (for a database, one statement). The batch has one stored
    ///   "next free slot", none at first. With `now` the judging clock's now (the
    ///   store's own where it has one and judges leases by it, else the given `now`;
    ///   see "One clock judges"): `first = max(next, now)`, and `next` becomes
    ///   `first + count * interval`. Returns [`SendSlots`] with that `first`, `now`,
    ///   `count` and `interval`.
    /// - So the slots of concurrent callers never overlap: each grant starts where the
    ///   one before it ended, or later. Whatever the number of senders, the batch's
    ///   slots are at least the smallest `interval` asked for apart (senders that pass
    ///   different rates each take slots at their own interval from the one schedule:
    ///   the batch never goes faster than the highest rate named).
    /// - No credit while idle: a schedule that fell behind the clock starts again at
    ///   `now`; the time nobody sent is not made up later in a burst.
    /// - Each batch has a schedule of its own.
    /// - Slots a sender took and did not use (it stopped or died) are not given back:
    ///   they only lower the batch's rate, by at most one group per sender stopped.
    /// - `Precondition` (nothing changes) unless [`SendSlots::check_request`] accepts
    ///   `interval` and `count`; `NotFound` when the batch does not exist.
    ///
    /// No default: a store shared by several processes must keep the schedule where
    /// they all see it, and a default kept in one process would let every process send
    /// at the full rate, the fault this method exists to prevent.
    async fn take_send_slots(
        &self,
        batch: &BatchId,
        interval: Duration,
        count: u32,
        now: Timestamp,
    ) -> RepoResult<SendSlots>;

    // ----- Batch reads -----------------------------------------------------------

    /// Every delivery of a batch, ordered by owner id.
    async fn deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>>;

    /// Counts of a batch's deliveries by state.
    async fn delivery_counts(&self, batch: &BatchId) -> RepoResult<DeliveryCounts>;

    /// The failed deliveries of a batch, ordered by owner id: what a send's report
    /// lists, without reading every delivery of a large batch.
    ///
    /// # Contract
    /// - Exactly the deliveries of [`deliveries`](Self::deliveries) whose state is
    ///   `Failed`, in the same order. The default filters `deliveries`; a store with
    ///   an index on the state can answer from it.
    async fn failed_deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        let mut deliveries = self.deliveries(batch).await?;
        deliveries.retain(|d| matches!(d.state, DeliveryState::Failed { .. }));
        Ok(deliveries)
    }

    /// The skipped deliveries of a batch, ordered by owner id: what a send's report
    /// lists with their reasons.
    ///
    /// # Contract
    /// - Exactly the deliveries of [`deliveries`](Self::deliveries) whose state is
    ///   `Skipped`, in the same order. The default filters `deliveries`; a store with
    ///   an index on the state can answer from it, and a wrapper should forward it.
    async fn skipped_deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        let mut deliveries = self.deliveries(batch).await?;
        deliveries.retain(|d| matches!(d.state, DeliveryState::Skipped { .. }));
        Ok(deliveries)
    }

    /// Moves every failed delivery of a batch back to pending ("retry the failed
    /// owners"). Skipped deliveries stay skipped.
    ///
    /// # Contract
    /// - Each moves from `Failed` to `Pending` with its
    ///   [`unreachable_runs`](Delivery::unreachable_runs) back to 0 (its `attempts`
    ///   stay): a retry asked for by hand starts the count again.
    /// - Returns how many moved. `NotFound` when the batch does not exist.
    async fn requeue_failed(&self, batch: &BatchId) -> RepoResult<usize>;

    /// Stores a token hash for a message about to be sent.
    ///
    /// # Contract
    /// - Insert only: `AlreadyExists` when the hash is taken; nothing changes.
    /// - A `Pending` token (what the send engine issues, at claim) is stored as
    ///   given and revokes nothing: the owner's live links keep working until
    ///   [`record_deliveries`](Self::record_deliveries) records this batch's message
    ///   to them as sent (see "Links: pending until accepted").
    /// - A `Live` token is one whose message was accepted already (a host that
    ///   sends by itself, a test): in the same step, as for a message recorded as
    ///   sent, the owner's live tokens of *other* batches are revoked at
    ///   `token.issued_at` and their pending tokens of this batch become live. Live
    ///   tokens of the same batch stay live (a copy of this batch's message may be in
    ///   the owner's mailbox).
    /// - A `Revoked` or `Redeemed` token is stored as given and changes nothing else.
    async fn issue_token(&self, token: &TokenRecord) -> RepoResult<()>;

    /// Stores several token hashes, for messages about to be sent: what the send
    /// engine calls once per chunk of claimed deliveries (all `Pending`), so a store
    /// can commit them at once.
    ///
    /// # Contract
    /// - The same as [`issue_token`](Self::issue_token) for each, in order; the first
    ///   error is returned. Whether the tokens before it stay stored is the adapter's
    ///   choice: the default calls `issue_token` one by one, a transactional store may
    ///   store all or none.
    async fn issue_tokens(&self, tokens: &[TokenRecord]) -> RepoResult<()> {
        for token in tokens {
            self.issue_token(token).await?;
        }
        Ok(())
    }

    /// A token by hash (`Ok(None)` when unknown). Read-only.
    async fn token(&self, hash: &TokenHash) -> RepoResult<Option<TokenRecord>>;

    /// Redeems a token: once, atomically. The first step of a redeem (the workflow
    /// then marks the owner registered in the [`OwnerRepository`](super::OwnerRepository) and appends the
    /// activity entry).
    ///
    /// # Contract
    /// - Compare-and-set: succeeds exactly when the token is live (a pending one is
    ///   `Rejected(NotSent)`) and expires after `now`; then, in one step, the token
    ///   becomes redeemed at `now`, the owner's other live and pending tokens are
    ///   revoked, and an [`OwedRegistration`] (the token, its owner, batch and
    ///   `sent_to`, `now`) is recorded. Whether the owner is registered is the
    ///   directory's to say; the workflow asks it before.
    /// - Two concurrent calls with one token, or with two live tokens of one owner:
    ///   exactly one gets `Redeemed`.
    /// - Otherwise `Rejected` with the reason ([`TokenRecord::check`]) and nothing
    ///   changes.
    async fn redeem_token(&self, hash: &TokenHash, now: Timestamp) -> RepoResult<RedeemOutcome>;

    /// Every registration owed (see [`OwedRegistration`]), in any order: normally
    /// none, so a store should answer from an index without scanning tokens.
    ///
    /// # Contract
    /// - Exactly the registrations recorded by a `Redeemed` answer of
    ///   [`redeem_token`](Self::redeem_token) and not yet settled.
    async fn owed_registrations(&self) -> RepoResult<Vec<OwedRegistration>>;

    /// Settles an owed registration: the last step of a redeem.
    ///
    /// # Contract
    /// - Compare-and-set, one atomic step: when the registration of `token` is owed,
    ///   it is cleared and `activity` (when given) appended, and the answer is `true`;
    ///   otherwise nothing changes and the answer is `false` (another caller settled
    ///   it first). So the entry is appended at most once, however many processes
    ///   complete the same registration.
    async fn settle_registration(
        &self,
        token: &TokenHash,
        activity: Option<&ActivityEntry>,
    ) -> RepoResult<bool>;

    /// Takes the answer of a spent token's redeem: what makes exactly one redeem call
    /// answer with the registration. The call that spent the token takes it after its
    /// settlement; a later redeem of the same link takes it when the first call never
    /// answered (it crashed between the steps), so the registration is answered once
    /// whoever completes it, and a host that creates the portal account on that answer
    /// creates one.
    ///
    /// # Contract
    /// - Compare-and-set, one atomic step: `true` for the first call on a redeemed
    ///   token (the answer is recorded at `now`), `false` for every later call, and
    ///   `false` for a token that is not redeemed or unknown (nothing changes).
    async fn answer_redeem(&self, token: &TokenHash, now: Timestamp) -> RepoResult<bool>;

    /// Revokes the live and pending tokens of these owners at `now`: the bookkeeping of an email
    /// change made through the crate (a mass edit), after the directory committed it.
    ///
    /// # Contract
    /// - One atomic step; owners without such tokens (or unknown) are skipped.
    /// - Returns how many tokens it revoked.
    async fn revoke_tokens(&self, owners: &[OwnerId], now: Timestamp) -> RepoResult<usize>;

    /// Appends an activity entry.
    async fn append_activity(&self, entry: &ActivityEntry) -> RepoResult<()>;

    /// A page of a community's activity feed.
    ///
    /// # Contract
    /// - Newest first (by `at`; entries with the same `at` newest-appended first).
    async fn activity(&self, community: &CommunityId, page: Page)
    -> RepoResult<Vec<ActivityEntry>>;
}

/// Conveniences over [`InvitationStore`], for every implementation (`Arc<dyn …>`
/// included): implementors never write these, so a wrapper cannot get them wrong.
#[async_trait]
pub trait InvitationStoreExt: InvitationStore {
    /// Records how one claimed delivery ended.
    ///
    /// # Contract
    /// - [`record_deliveries`](InvitationStore::record_deliveries) of one outcome; a
    ///   refusal is [`RepositoryError::NotHolder`].
    async fn record_delivery(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owner: &OwnerId,
        outcome: &DeliveryOutcome,
        now: Timestamp,
    ) -> RepoResult<()> {
        let refused = self
            .record_deliveries(batch, sender, &[(owner.clone(), outcome.clone())], now)
            .await?;
        if refused.is_empty() {
            Ok(())
        } else {
            Err(RepositoryError::NotHolder {
                batch: batch.clone(),
                owner: owner.clone(),
                sender: sender.clone(),
            })
        }
    }
}

impl<T: InvitationStore + ?Sized> InvitationStoreExt for T {}
