//! The state behind [`InMemoryRepository`](super::InMemoryRepository)'s lock, and the
//! helpers that keep its indexes in step.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use crate::domain::{
    ActivityEntry, Batch, BatchId, Community, CommunityId, Delivery, DeliveryCounts, DeliveryState,
    Draft, DraftId, InvitationState, Owner, OwnerId, SenderId, Timestamp, TokenHash, TokenRecord,
    TokenState,
};
#[cfg(doc)]
use crate::repository::InvitationStore;
use crate::repository::{OwedRegistration, RepositoryError};

#[derive(Default)]
pub(super) struct State {
    pub(super) communities: HashMap<CommunityId, Community>,
    pub(super) owners: HashMap<OwnerId, Owner>,
    pub(super) owners_by_community: HashMap<CommunityId, BTreeSet<OwnerId>>,
    pub(super) owners_by_email: HashMap<String, BTreeSet<OwnerId>>,
    pub(super) drafts: HashMap<DraftId, Draft>,
    pub(super) drafts_by_community: HashMap<CommunityId, BTreeSet<DraftId>>,
    pub(super) batches: HashMap<BatchId, BatchState>,
    /// (created_at, insertion sequence, id), iterated backwards for newest first.
    pub(super) batches_by_community: HashMap<CommunityId, BTreeSet<(Timestamp, u64, BatchId)>>,
    pub(super) tokens: HashMap<TokenHash, TokenRecord>,
    /// Pending and live tokens only: what revocation and promotion look at.
    pub(super) unspent_tokens_by_owner: HashMap<OwnerId, BTreeSet<TokenHash>>,
    /// (at, insertion sequence) → entry, iterated backwards for newest first.
    pub(super) activity: HashMap<CommunityId, BTreeMap<(Timestamp, u64), ActivityEntry>>,
    /// Redeems whose directory step is not yet known to be done, by token.
    pub(super) owed: HashMap<TokenHash, OwedRegistration>,
    /// Spent tokens whose redeem has been answered ([`InvitationStore::answer_redeem`]).
    pub(super) answered: HashSet<TokenHash>,
    /// Each invited owner's invitation history (the store's side).
    pub(super) invitations: HashMap<OwnerId, InvitationState>,
    pub(super) sequence: u64,
}

pub(super) struct BatchState {
    pub(super) batch: Batch,
    pub(super) deliveries: BTreeMap<OwnerId, Delivery>,
    pub(super) pending: BTreeSet<OwnerId>,
    /// Claimed deliveries by the end of their lease, so run-out ones are found
    /// without a scan.
    pub(super) claimed: BTreeSet<(Timestamp, OwnerId)>,
    pub(super) failed: BTreeSet<OwnerId>,
    pub(super) counts: DeliveryCounts,
    /// The next free send slot of the batch's rate schedule (`None` until one is
    /// taken).
    pub(super) next_slot: Option<Timestamp>,
}

impl BatchState {
    /// Moves one delivery to a new state, keeping the indexes and counts in step.
    pub(super) fn set_state(&mut self, owner: &OwnerId, state: DeliveryState) {
        let Some(delivery) = self.deliveries.get_mut(owner) else {
            return;
        };
        match &delivery.state {
            DeliveryState::Pending => {
                self.pending.remove(owner);
                self.counts.pending -= 1;
            }
            DeliveryState::Claimed { until, .. } => {
                self.claimed.remove(&(*until, owner.clone()));
                self.counts.claimed -= 1;
            }
            DeliveryState::Sent { .. } => self.counts.sent -= 1,
            DeliveryState::Failed { .. } => {
                self.failed.remove(owner);
                self.counts.failed -= 1;
            }
            DeliveryState::Skipped { .. } => self.counts.skipped -= 1,
        }
        match &state {
            DeliveryState::Pending => {
                self.pending.insert(owner.clone());
            }
            DeliveryState::Claimed { until, .. } => {
                self.claimed.insert((*until, owner.clone()));
            }
            DeliveryState::Sent { .. } | DeliveryState::Skipped { .. } => {}
            DeliveryState::Failed { .. } => {
                self.failed.insert(owner.clone());
            }
        }
        self.counts.add(&state);
        delivery.state = state;
    }

    /// Whether `sender` holds the claim on this delivery now.
    pub(super) fn is_held_by(&self, owner: &OwnerId, sender: &SenderId) -> bool {
        matches!(
            self.deliveries.get(owner).map(|d| &d.state),
            Some(DeliveryState::Claimed { holder, .. }) if holder == sender
        )
    }
}

pub(super) fn not_found(what: &'static str, id: impl fmt::Display) -> RepositoryError {
    RepositoryError::NotFound {
        what,
        id: id.to_string(),
    }
}

impl State {
    pub(super) fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    pub(super) fn append_activity(&mut self, entry: ActivityEntry) {
        let seq = self.next_sequence();
        self.activity
            .entry(entry.community.clone())
            .or_default()
            .insert((entry.at, seq), entry);
    }

    /// Revokes at `at` the owner's pending and live tokens that `revoke` picks.
    pub(super) fn revoke_tokens(
        &mut self,
        owner: &OwnerId,
        at: Timestamp,
        revoke: impl Fn(&TokenRecord) -> bool,
    ) {
        let Some(unspent) = self.unspent_tokens_by_owner.get_mut(owner) else {
            return;
        };
        let mut kept = BTreeSet::new();
        for hash in std::mem::take(unspent) {
            match self.tokens.get_mut(&hash) {
                Some(token) if revoke(token) => token.state = TokenState::Revoked { at },
                Some(_) => {
                    kept.insert(hash);
                }
                None => {}
            }
        }
        if kept.is_empty() {
            self.unspent_tokens_by_owner.remove(owner);
        } else {
            self.unspent_tokens_by_owner.insert(owner.clone(), kept);
        }
    }

    /// What recording a sent message does to the owner's links: the delivery's
    /// pending tokens become live and supersede the owner's live tokens of other
    /// batches, at `at`.
    pub(super) fn accept_tokens(&mut self, owner: &OwnerId, batch: &BatchId, at: Timestamp) {
        self.revoke_tokens(owner, at, |t| {
            t.state == TokenState::Live && t.batch != *batch
        });
        let Some(unspent) = self.unspent_tokens_by_owner.get(owner) else {
            return;
        };
        for hash in unspent {
            if let Some(token) = self.tokens.get_mut(hash)
                && token.state == TokenState::Pending
                && token.batch == *batch
            {
                token.state = TokenState::Live;
            }
        }
    }

    /// Stores an owner record, keeping the community and email indexes in step.
    pub(super) fn put_owner(&mut self, owner: Owner) {
        let new_key = owner.email_key();
        if let Some(old) = self.owners.get(&owner.id) {
            if old.community != owner.community {
                remove_from_index(&mut self.owners_by_community, &old.community, &owner.id);
            }
            if let Some(old_key) = old.email_key()
                && Some(&old_key) != new_key.as_ref()
            {
                remove_from_index(&mut self.owners_by_email, &old_key, &owner.id);
            }
        }
        self.owners_by_community
            .entry(owner.community.clone())
            .or_default()
            .insert(owner.id.clone());
        if let Some(key) = new_key {
            self.owners_by_email
                .entry(key)
                .or_default()
                .insert(owner.id.clone());
        }
        self.owners.insert(owner.id.clone(), owner);
    }
}

pub(super) fn remove_from_index<K, V>(index: &mut HashMap<K, BTreeSet<V>>, key: &K, value: &V)
where
    K: std::hash::Hash + Eq,
    V: Ord,
{
    if let Some(set) = index.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            index.remove(key);
        }
    }
}
