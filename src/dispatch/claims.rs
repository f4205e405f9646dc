//! Claims are leases: a run claims deliveries a chunk at a time (storing each one's
//! pending token), renews all it holds in one call, starts a message only on a lease
//! renewed recently enough, learns which deliveries another sender took over, and,
//! with nothing left to claim, waits for other senders' leases.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::domain::{
    BatchId, CommunityId, Delivery, DeliveryCounts, Owner, OwnerId, SenderId, SkipReason,
    Timestamp, TokenRecord, TokenState,
};
use crate::error::Side;
use crate::progress::{Progress, StopReason};
use crate::repository::{ClaimHolder, RepositoryError};
use crate::token::RegistrationToken;

use super::stop::{PortFailure, RunState};
use super::{Engine, PreparedBatch};

/// A run renews its leases once this fraction of a lease has passed since the last
/// renewal began...
pub(super) const RENEW_AFTER: f64 = 0.25;

/// ...and starts no message on them once this fraction has passed without one: the
/// rest is the margin for a message already started and for the two clocks.
pub(super) const FRESH_FOR: f64 = 0.75;

/// The longest a run waiting on another sender's leases goes without looking at them
/// again, as a fraction of its own lease: a live sender that settles the batch is
/// noticed this soon.
const LOOK_AGAIN_AFTER: f64 = 0.5;

/// A claimed delivery, checked and with its token stored: ready to render and send.
pub(super) struct Ready {
    pub(super) delivery: Delivery,
    pub(super) owner: Owner,
    pub(super) token: RegistrationToken,
    pub(super) issued_at: Timestamp,
    pub(super) expires_at: Timestamp,
}

/// What a claimed chunk turned into.
pub(super) struct Chunk {
    pub(super) ready: Vec<Ready>,
    /// Deliveries that may no longer be sent (see [`SkipReason`]), with the reason:
    /// recorded as skipped, never sent.
    pub(super) skipped: Vec<(OwnerId, SkipReason)>,
    /// When the claim was asked for: its lease runs from no earlier than this.
    pub(super) asked_at: Instant,
}

/// A renewal after its repository call.
pub(super) struct Renewed {
    pub(super) asked_at: Instant,
    /// The owners not renewed: another sender holds them now.
    pub(super) result: Result<Vec<OwnerId>, RepositoryError>,
}

/// This run's hold on its claims, as its workers check it before each attempt.
#[derive(Default)]
pub(super) struct Leases {
    /// Until when (by this process's monotonic clock) a message may be started on
    /// this run's claims: `FRESH_FOR` of a lease after the last renewal (or the first
    /// claim) was asked for. Monotonic time keeps running while the process is
    /// paused, so a sender woken after its lease ran out renews before it sends.
    fresh_until: Mutex<Option<Instant>>,
    /// Deliveries another sender took over: never started here again.
    lost: Mutex<HashSet<OwnerId>>,
    /// Wakes the workers waiting for a renewal.
    renewed: Notify,
}

impl Leases {
    pub(super) fn is_fresh(&self) -> bool {
        self.fresh_until
            .lock()
            .expect("leases")
            .is_some_and(|until| Instant::now() < until)
    }

    pub(super) fn fresh_until(&self, until: Instant) {
        *self.fresh_until.lock().expect("leases") = Some(until);
        self.renewed.notify_waiters();
    }

    pub(super) fn is_lost(&self, owner: &OwnerId) -> bool {
        self.lost.lock().expect("leases").contains(owner)
    }

    /// Marks deliveries as taken over; returns those not known as such before.
    pub(super) fn lose(&self, owners: Vec<OwnerId>) -> Vec<OwnerId> {
        let mut lost = self.lost.lock().expect("leases");
        let fresh: Vec<OwnerId> = owners
            .into_iter()
            .filter(|o| lost.insert(o.clone()))
            .collect();
        drop(lost);
        // Workers waiting for a renewal see the loss at once.
        self.renewed.notify_waiters();
        fresh
    }

    /// A delivery claimed again (its taker gave it back): this run's once more.
    pub(super) fn regained(&self, owner: &OwnerId) {
        let mut lost = self.lost.lock().expect("leases");
        if !lost.is_empty() {
            lost.remove(owner);
        }
    }

    pub(super) fn lost_count(&self) -> usize {
        self.lost.lock().expect("leases").len()
    }
}

pub(super) enum Leftover {
    /// Nothing: every delivery is sent or failed.
    Settled(DeliveryCounts),
    /// Other senders hold deliveries; the run waited for their leases.
    Waited,
    /// Pending deliveries and no holder: claimable again (another sender gave them
    /// back meanwhile).
    Unclaimed,
}

impl Engine<'_> {
    /// Claims up to `limit` deliveries, loads their owners, and stores a fresh pending token
    /// for each one that may still be sent, all in a few repository calls. A failure
    /// names its port: the claim and the tokens are the store's, the owners the
    /// directory's.
    pub(super) async fn claim_chunk(
        &self,
        prepared: &PreparedBatch,
        sender: &SenderId,
        limit: usize,
    ) -> Result<Chunk, PortFailure> {
        let store = |error| PortFailure {
            side: Side::Store,
            error,
        };
        let directory = |error| PortFailure {
            side: Side::Directory,
            error,
        };
        let asked_at = Instant::now();
        let claimed = self
            .repo
            .claim_deliveries(
                &prepared.batch.id,
                sender,
                limit,
                self.options.claim_lease,
                self.clock.now(),
            )
            .await
            .map_err(store)?;
        let mut chunk = Chunk {
            ready: Vec::with_capacity(claimed.len()),
            skipped: Vec::new(),
            asked_at,
        };
        if claimed.is_empty() {
            return Ok(chunk);
        }
        // The owners as they are now, and the addresses other owners hold too: two
        // reads per chunk, never one per message.
        let ids: Vec<OwnerId> = claimed.iter().map(|d| d.owner.clone()).collect();
        let mut owners: HashMap<OwnerId, Owner> = self
            .directory
            .owners(&ids)
            .await
            .map_err(directory)?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect();
        let keys: Vec<String> = claimed
            .iter()
            .map(|d| d.to.normalized().to_owned())
            .collect();
        let shared: HashSet<String> = self
            .directory
            .shared_email_holders(&keys)
            .await
            .map_err(directory)?
            .into_iter()
            .map(|h| h.key)
            .collect();
        let issued_at = self.clock.now();
        let expires_at = issued_at + prepared.token_ttl();
        let mut records = Vec::with_capacity(claimed.len());
        for delivery in claimed {
            let owner = owners.remove(&delivery.owner);
            let community = &prepared.batch.community;
            if let Some(reason) = Self::skip_reason(&delivery, owner.as_ref(), community, &shared) {
                chunk.skipped.push((delivery.owner, reason));
                continue;
            }
            let owner = owner.expect("checked by skip_reason");
            // Pending until its message is recorded as sent: the owner's older link
            // keeps working until then (a run may stop or crash before sending).
            let token = RegistrationToken::generate();
            records.push(TokenRecord {
                hash: token.hash(),
                owner: owner.id.clone(),
                batch: prepared.batch.id.clone(),
                issued_at,
                expires_at,
                sent_to: delivery.to.as_str().to_owned(),
                state: TokenState::Pending,
            });
            chunk.ready.push(Ready {
                delivery,
                owner,
                token,
                issued_at,
                expires_at,
            });
        }
        if !records.is_empty() {
            self.repo.issue_tokens(&records).await.map_err(store)?;
        }
        Ok(chunk)
    }

    /// Why an owner may no longer be sent to, checked just before sending (a batch may
    /// be resumed long after it was made): the first of [`SkipReason`]'s reasons that
    /// applies. `shared` holds the delivered keys that more than one owner holds now.
    fn skip_reason(
        delivery: &Delivery,
        owner: Option<&Owner>,
        community: &CommunityId,
        shared: &HashSet<String>,
    ) -> Option<SkipReason> {
        let Some(owner) = owner else {
            return Some(SkipReason::UnknownOwner);
        };
        if &owner.community != community {
            return Some(SkipReason::Moved);
        }
        if owner.is_registered() {
            return Some(SkipReason::Registered);
        }
        if owner.email_key().as_deref() != Some(delivery.to.normalized()) {
            return Some(SkipReason::EmailChanged);
        }
        if shared.contains(delivery.to.normalized()) {
            return Some(SkipReason::SharedEmail);
        }
        None
    }

    /// Renews every lease this run holds, in one repository call.
    pub(super) async fn renew(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: Vec<OwnerId>,
    ) -> Renewed {
        let asked_at = Instant::now();
        let result = self
            .repo
            .renew_claims(
                batch,
                sender,
                &owners,
                self.options.claim_lease,
                self.clock.now(),
            )
            .await;
        Renewed { asked_at, result }
    }

    /// Waits until a message may be started on `owner`'s claim: not taken over, and
    /// the run's leases renewed recently enough that no other sender can have taken
    /// it. `false` when it was taken over, or the run stops while it waits.
    pub(super) async fn may_send(&self, state: &RunState, owner: &OwnerId) -> bool {
        loop {
            let renewed = state.leases.renewed.notified();
            if state.leases.is_lost(owner) {
                return false;
            }
            if state.leases.is_fresh() {
                return true;
            }
            if state.is_stopping(self.control) {
                return false;
            }
            tokio::select! {
                _ = renewed => {}
                _ = state.stopped(self.control) => {}
            }
        }
    }

    /// Deliveries another sender took over: never sent here again, no longer held,
    /// and the run stops (its claims are not safe with it: it was paused or cut off
    /// from the store for longer than its lease).
    /// `refused` names the write the store refused (`renewal`, `outcome`).
    pub(super) fn lose(
        &self,
        owners: Vec<OwnerId>,
        refused: &'static str,
        holding: &mut HashSet<OwnerId>,
        queue: &mut VecDeque<Ready>,
        state: &RunState,
    ) {
        if owners.is_empty() {
            return;
        }
        for owner in &owners {
            holding.remove(owner);
        }
        let lost = state.leases.lose(owners);
        if !lost.is_empty() {
            tracing::warn!(
                deliveries = lost.len(),
                refused,
                "another sender took over deliveries whose lease had run out; this run stops"
            );
        }
        for owner in lost {
            self.control.emit(Progress::TakenOver { owner });
        }
        queue.retain(|r| !state.leases.is_lost(&r.delivery.owner));
        state.stop_with(StopReason::TakenOver { deliveries: 0 });
    }

    /// Looks at what is left of the batch once this run has nothing more to claim.
    /// When other senders hold some of it, tells the observer and waits until the
    /// first of their leases runs out (at most `LOOK_AGAIN_AFTER` of a lease, so a
    /// live sender's end is noticed soon).
    pub(super) async fn leftover(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        state: &RunState,
    ) -> Result<Leftover, RepositoryError> {
        let held = self.repo.held_claims(batch, self.clock.now()).await?;
        let others: Vec<&ClaimHolder> = held
            .holders
            .iter()
            .filter(|h| h.sender != *sender)
            .collect();
        let (Some(first), Some(until)) = (
            others.iter().map(|h| h.first_until).min(),
            others.iter().map(|h| h.last_until).max(),
        ) else {
            let counts = self.repo.delivery_counts(batch).await?;
            return Ok(if counts.pending + counts.claimed == 0 {
                Leftover::Settled(counts)
            } else {
                Leftover::Unclaimed
            });
        };
        let held_by_others: usize = others.iter().map(|h| h.deliveries).sum();
        let waiting = Progress::Waiting {
            held: held_by_others,
            senders: others.len(),
            until,
        };
        let changed = {
            let mut last = state.last_wait.lock().expect("run state");
            let changed = last.as_ref() != Some(&waiting);
            *last = Some(waiting.clone());
            changed
        };
        if changed {
            tracing::info!(
                held = held_by_others,
                senders = others.len(),
                until = %until,
                "waiting for other senders' leases to run out"
            );
            self.control.emit(waiting);
        }
        // A moment past the first lease's end, so that it has run out when we claim.
        let wait = (first - held.now + Duration::from_millis(5))
            .min(self.options.claim_lease.mul_f64(LOOK_AGAIN_AFTER));
        self.wait(wait, state).await;
        Ok(Leftover::Waited)
    }
}
