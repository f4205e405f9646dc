//! In-memory adapters: [`InMemoryRepository`] (a complete repository for demos and
//! small deployments) and [`InMemoryTransport`] (records what it is given and can
//! inject delivery faults, for tests).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{
    ActivityEntry, Batch, BatchId, Community, CommunityId, Delivery, DeliveryCounts,
    DeliveryOutcome, DeliveryState, Draft, DraftId, EmailAddress, InvitationState, NewBatch, Owner,
    OwnerId, Page, Registered, SenderId, Timestamp, TokenHash, TokenRecord, TokenRejection,
    TokenState, delivered_key,
};
use crate::eligibility::OwnerFilter;
use crate::repository::{
    ClaimHolder, EmailEdit, EmailHolder, HeldClaims, ImportSession, InvitationStore, Marked,
    OwedRegistration, OwnerDirectory, OwnerRepository, RedeemOutcome, RepoResult, RepositoryError,
};
use crate::transport::{Accepted, Envelope, MailTransport, TransportError};

/// Both storage ports ([`OwnerRepository`] with [`OwnerDirectory`], and
/// [`InvitationStore`]) kept in memory: a product feature for demos and
/// small deployments (nothing survives the process), and the reference the
/// conformance suite is written against.
///
/// All state sits behind one mutex, so every method is one atomic step and safe to
/// call from many tasks at once. Lookups are indexed: owners by community and by
/// delivered email key, deliveries per batch with a pending queue and an index of leases
/// by their end (claiming from a large batch costs O(claimed · log n), not O(n)), tokens by
/// hash and by owner, activity per community.
#[derive(Default)]
pub struct InMemoryRepository {
    state: Mutex<State>,
}

impl InMemoryRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every method checks before it writes, so a panic elsewhere cannot leave a
        // half-applied change behind: the data under a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Display for InMemoryRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("in-memory repository")
    }
}

impl fmt::Debug for InMemoryRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("InMemoryRepository")
            .field("communities", &state.communities.len())
            .field("owners", &state.owners.len())
            .field("batches", &state.batches.len())
            .field("tokens", &state.tokens.len())
            .finish()
    }
}

#[derive(Default)]
struct State {
    communities: HashMap<CommunityId, Community>,
    owners: HashMap<OwnerId, Owner>,
    owners_by_community: HashMap<CommunityId, BTreeSet<OwnerId>>,
    owners_by_email: HashMap<String, BTreeSet<OwnerId>>,
    drafts: HashMap<DraftId, Draft>,
    drafts_by_community: HashMap<CommunityId, BTreeSet<DraftId>>,
    batches: HashMap<BatchId, BatchState>,
    /// (created_at, insertion sequence, id), iterated backwards for newest first.
    batches_by_community: HashMap<CommunityId, BTreeSet<(Timestamp, u64, BatchId)>>,
    tokens: HashMap<TokenHash, TokenRecord>,
    /// Pending and live tokens only: what revocation and promotion look at.
    unspent_tokens_by_owner: HashMap<OwnerId, BTreeSet<TokenHash>>,
    /// (at, insertion sequence) → entry, iterated backwards for newest first.
    activity: HashMap<CommunityId, BTreeMap<(Timestamp, u64), ActivityEntry>>,
    /// Redeems whose directory step is not yet known to be done, by token.
    owed: HashMap<TokenHash, OwedRegistration>,
    /// Spent tokens whose redeem has been answered ([`InvitationStore::answer_redeem`]).
    answered: HashSet<TokenHash>,
    /// Each invited owner's invitation history (the store's side).
    invitations: HashMap<OwnerId, InvitationState>,
    sequence: u64,
}

struct BatchState {
    batch: Batch,
    deliveries: BTreeMap<OwnerId, Delivery>,
    pending: BTreeSet<OwnerId>,
    /// Claimed deliveries by the end of their lease, so run-out ones are found
    /// without a scan.
    claimed: BTreeSet<(Timestamp, OwnerId)>,
    failed: BTreeSet<OwnerId>,
    counts: DeliveryCounts,
}

impl BatchState {
    /// Moves one delivery to a new state, keeping the indexes and counts in step.
    fn set_state(&mut self, owner: &OwnerId, state: DeliveryState) {
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
    fn is_held_by(&self, owner: &OwnerId, sender: &SenderId) -> bool {
        matches!(
            self.deliveries.get(owner).map(|d| &d.state),
            Some(DeliveryState::Claimed { holder, .. }) if holder == sender
        )
    }
}

fn not_found(what: &'static str, id: impl fmt::Display) -> RepositoryError {
    RepositoryError::NotFound {
        what,
        id: id.to_string(),
    }
}

impl State {
    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    fn append_activity(&mut self, entry: ActivityEntry) {
        let seq = self.next_sequence();
        self.activity
            .entry(entry.community.clone())
            .or_default()
            .insert((entry.at, seq), entry);
    }

    /// Revokes at `at` the owner's pending and live tokens that `revoke` picks.
    fn revoke_tokens(
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
    fn accept_tokens(&mut self, owner: &OwnerId, batch: &BatchId, at: Timestamp) {
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
    fn put_owner(&mut self, owner: Owner) {
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

impl State {
    /// `upsert_owners` under the lock (nothing in it can fail).
    fn upsert_owners(&mut self, owners: &[Owner], now: Timestamp) {
        for incoming in owners {
            let (merged, email_changed) =
                Owner::merge_from_host(self.owners.get(&incoming.id), incoming);
            if email_changed {
                self.revoke_tokens(&merged.id, now, |_| true);
            }
            self.put_owner(merged);
        }
    }
}

/// An import into an [`InMemoryRepository`]: everything is applied at `commit`, under
/// one lock.
struct MemoryImport<'a> {
    repo: &'a InMemoryRepository,
    now: Timestamp,
    communities: Vec<Community>,
    owners: Vec<Owner>,
}

#[async_trait]
impl ImportSession for MemoryImport<'_> {
    async fn upsert_communities(&mut self, communities: &[Community]) -> RepoResult<()> {
        self.communities.extend_from_slice(communities);
        Ok(())
    }

    async fn upsert_owners(&mut self, owners: &[Owner]) -> RepoResult<()> {
        self.owners.extend_from_slice(owners);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> RepoResult<()> {
        let mut state = self.repo.lock();
        for community in self.communities {
            state.communities.insert(community.id.clone(), community);
        }
        state.upsert_owners(&self.owners, self.now);
        Ok(())
    }
}

fn remove_from_index<K, V>(index: &mut HashMap<K, BTreeSet<V>>, key: &K, value: &V)
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

/// The comparison key of an edit's new address, `None` when blank.
fn edit_key(edit: &EmailEdit) -> Option<String> {
    edit.email
        .as_deref()
        .map(delivered_key)
        .filter(|k| !k.is_empty())
}

#[async_trait]
impl OwnerDirectory for InMemoryRepository {
    async fn upsert_community(&self, community: &Community) -> RepoResult<()> {
        self.lock()
            .communities
            .insert(community.id.clone(), community.clone());
        Ok(())
    }

    async fn upsert_owners(&self, owners: &[Owner], now: Timestamp) -> RepoResult<()> {
        // Nothing below can fail, and the lock is held throughout: one atomic step.
        self.lock().upsert_owners(owners, now);
        Ok(())
    }

    /// Keeps the chunks until `commit`, which applies them all under one lock.
    async fn begin_import<'a>(&'a self, now: Timestamp) -> RepoResult<Box<dyn ImportSession + 'a>> {
        Ok(Box::new(MemoryImport {
            repo: self,
            now,
            communities: Vec::new(),
            owners: Vec::new(),
        }))
    }
}

#[async_trait]
impl OwnerRepository for InMemoryRepository {
    async fn community(&self, id: &CommunityId) -> RepoResult<Option<Community>> {
        Ok(self.lock().communities.get(id).cloned())
    }

    async fn communities(&self) -> RepoResult<Vec<Community>> {
        Ok(self.lock().communities.values().cloned().collect())
    }

    async fn owners(&self, ids: &[OwnerId]) -> RepoResult<Vec<Owner>> {
        let state = self.lock();
        let unique: BTreeSet<&OwnerId> = ids.iter().collect();
        Ok(unique
            .into_iter()
            .filter_map(|id| state.owners.get(id).cloned())
            .collect())
    }

    async fn community_owners(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<Owner>> {
        let state = self.lock();
        let Some(ids) = state.owners_by_community.get(community) else {
            return Ok(Vec::new());
        };
        Ok(ids
            .iter()
            .filter_map(|id| state.owners.get(id))
            .filter(|owner| filter.matches_owner(owner))
            .cloned()
            .collect())
    }

    async fn email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        let state = self.lock();
        let keys: BTreeSet<String> = keys.iter().map(|k| delivered_key(k)).collect();
        let mut holders = Vec::new();
        for key in keys {
            let Some(ids) = state.owners_by_email.get(&key) else {
                continue;
            };
            for id in ids {
                if let Some(owner) = state.owners.get(id) {
                    holders.push(EmailHolder {
                        key: key.clone(),
                        owner: owner.id.clone(),
                        property: owner.property.clone(),
                    });
                }
            }
        }
        Ok(holders)
    }

    async fn update_emails(&self, edits: &[EmailEdit]) -> RepoResult<Vec<OwnerId>> {
        let mut state = self.lock();
        // The last edit of an owner wins.
        let mut last: BTreeMap<&OwnerId, &EmailEdit> = BTreeMap::new();
        for edit in edits {
            if !state.owners.contains_key(&edit.owner) {
                return Err(not_found("owner", &edit.owner));
            }
            last.insert(&edit.owner, edit);
        }
        // Compare-and-set on uniqueness, before anything is written.
        let mut taken: HashMap<String, &OwnerId> = HashMap::new();
        for (owner, edit) in &last {
            let Some(key) = edit_key(edit) else { continue };
            if let Some(other) = taken.insert(key.clone(), owner) {
                return Err(RepositoryError::Precondition {
                    message: format!("owners `{other}` and `{owner}` would share `{key}`"),
                });
            }
            if let Some(holder) = state
                .owners_by_email
                .get(&key)
                .and_then(|ids| ids.iter().find(|id| !last.contains_key(id)))
            {
                return Err(RepositoryError::Precondition {
                    message: format!("`{key}` is held by owner `{holder}`"),
                });
            }
        }
        let mut changed = Vec::new();
        for (id, edit) in last {
            let Some(mut owner) = state.owners.get(id).cloned() else {
                continue;
            };
            let old_key = owner.email_key();
            owner.primary_email = edit.email.clone();
            if owner.email_key() != old_key {
                changed.push(id.clone());
            }
            state.put_owner(owner);
        }
        Ok(changed)
    }

    async fn mark_registered(
        &self,
        owner: &OwnerId,
        sent_to: &str,
        at: Timestamp,
    ) -> RepoResult<Marked> {
        let mut state = self.lock();
        let Some(stored) = state.owners.get_mut(owner) else {
            return Ok(Marked::UnknownOwner);
        };
        let key = delivered_key(sent_to);
        if key.is_empty() || stored.email_key().as_deref() != Some(key.as_str()) {
            return Ok(Marked::AddressChanged);
        }
        if !stored.is_registered() {
            stored.registered = Some(Registered { at: Some(at) });
        }
        Ok(Marked::Registered(Box::new(stored.clone())))
    }
}

#[async_trait]
impl InvitationStore for InMemoryRepository {
    async fn save_draft(&self, draft: &Draft) -> RepoResult<()> {
        let mut state = self.lock();
        if let Some(old) = state.drafts.get(&draft.id) {
            let old_community = old.invite.community.clone();
            remove_from_index(&mut state.drafts_by_community, &old_community, &draft.id);
        }
        state
            .drafts_by_community
            .entry(draft.invite.community.clone())
            .or_default()
            .insert(draft.id.clone());
        state.drafts.insert(draft.id.clone(), draft.clone());
        Ok(())
    }

    async fn draft(&self, id: &DraftId) -> RepoResult<Option<Draft>> {
        Ok(self.lock().drafts.get(id).cloned())
    }

    async fn drafts(&self, community: &CommunityId) -> RepoResult<Vec<Draft>> {
        let state = self.lock();
        let mut drafts: Vec<Draft> = state
            .drafts_by_community
            .get(community)
            .into_iter()
            .flatten()
            .filter_map(|id| state.drafts.get(id).cloned())
            .collect();
        drafts.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.id.cmp(&b.id)));
        Ok(drafts)
    }

    async fn delete_draft(&self, id: &DraftId) -> RepoResult<bool> {
        let mut state = self.lock();
        let Some(draft) = state.drafts.remove(id) else {
            return Ok(false);
        };
        remove_from_index(&mut state.drafts_by_community, &draft.invite.community, id);
        Ok(true)
    }

    async fn create_batch(&self, new: &NewBatch) -> RepoResult<()> {
        let mut state = self.lock();
        let id = &new.batch.id;
        if state.batches.contains_key(id) {
            return Err(RepositoryError::AlreadyExists {
                what: "batch",
                id: id.to_string(),
            });
        }
        let mut deliveries = BTreeMap::new();
        for (owner, to) in &new.deliveries {
            let delivery = Delivery {
                batch: id.clone(),
                owner: owner.clone(),
                to: to.clone(),
                state: DeliveryState::Pending,
                attempts: 0,
                unreachable_runs: 0,
            };
            if deliveries.insert(owner.clone(), delivery).is_some() {
                return Err(RepositoryError::Precondition {
                    message: format!("owner `{owner}` appears twice in batch `{id}`"),
                });
            }
        }
        let pending: BTreeSet<OwnerId> = deliveries.keys().cloned().collect();
        let counts = DeliveryCounts {
            pending: pending.len(),
            ..DeliveryCounts::default()
        };
        let seq = state.next_sequence();
        state
            .batches_by_community
            .entry(new.batch.community.clone())
            .or_default()
            .insert((new.batch.created_at, seq, id.clone()));
        state.batches.insert(
            id.clone(),
            BatchState {
                batch: new.batch.clone(),
                deliveries,
                pending,
                claimed: BTreeSet::new(),
                failed: BTreeSet::new(),
                counts,
            },
        );
        state.append_activity(new.activity.clone());
        Ok(())
    }

    async fn batch(&self, id: &BatchId) -> RepoResult<Option<Batch>> {
        Ok(self.lock().batches.get(id).map(|b| b.batch.clone()))
    }

    async fn batches(&self, community: &CommunityId) -> RepoResult<Vec<Batch>> {
        let state = self.lock();
        Ok(state
            .batches_by_community
            .get(community)
            .into_iter()
            .flat_map(|set| set.iter().rev())
            .filter_map(|(_, _, id)| state.batches.get(id).map(|b| b.batch.clone()))
            .collect())
    }

    async fn claim_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        limit: usize,
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<Delivery>> {
        let mut state = self.lock();
        let b = state
            .batches
            .get_mut(batch)
            .ok_or_else(|| not_found("batch", batch))?;
        let mut chosen: Vec<OwnerId> = b.pending.iter().take(limit).cloned().collect();
        let room = limit - chosen.len();
        chosen.extend(
            b.claimed
                .iter()
                .take_while(|(until, _)| *until <= now)
                .take(room)
                .map(|(_, owner)| owner.clone()),
        );
        let mut claimed = Vec::with_capacity(chosen.len());
        for owner in chosen {
            let lease = DeliveryState::Claimed {
                at: now,
                holder: sender.clone(),
                until: now + lease,
            };
            b.set_state(&owner, lease);
            if let Some(d) = b.deliveries.get(&owner) {
                claimed.push(d.clone());
            }
        }
        Ok(claimed)
    }

    async fn renew_claims(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        let mut state = self.lock();
        let b = state
            .batches
            .get_mut(batch)
            .ok_or_else(|| not_found("batch", batch))?;
        let mut refused = Vec::new();
        for owner in owners {
            let at = match b.deliveries.get(owner).map(|d| &d.state) {
                Some(DeliveryState::Claimed { at, holder, .. }) if holder == sender => *at,
                _ => {
                    refused.push(owner.clone());
                    continue;
                }
            };
            let renewed = DeliveryState::Claimed {
                at,
                holder: sender.clone(),
                until: now + lease,
            };
            b.set_state(owner, renewed);
        }
        Ok(refused)
    }

    async fn record_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let b = state
            .batches
            .get_mut(batch)
            .ok_or_else(|| not_found("batch", batch))?;
        let mut refused = Vec::new();
        let mut accepted = Vec::new();
        for (owner, outcome) in outcomes {
            if !b.is_held_by(owner, sender) {
                refused.push(owner.clone());
                continue;
            }
            let (new_state, attempts, expires) = match outcome {
                DeliveryOutcome::Sent {
                    expires_at,
                    attempts,
                } => (
                    DeliveryState::Sent { at: now },
                    *attempts,
                    Some(*expires_at),
                ),
                DeliveryOutcome::Failed { error, attempts } => (
                    DeliveryState::Failed {
                        at: now,
                        error: error.clone(),
                    },
                    *attempts,
                    None,
                ),
                DeliveryOutcome::Unreachable { attempts } => {
                    (DeliveryState::Pending, *attempts, None)
                }
                DeliveryOutcome::Skipped { reason } => (
                    DeliveryState::Skipped {
                        at: now,
                        reason: *reason,
                    },
                    0,
                    None,
                ),
            };
            if let Some(d) = b.deliveries.get_mut(owner) {
                d.attempts = d.attempts.saturating_add(attempts);
                if matches!(outcome, DeliveryOutcome::Unreachable { .. }) {
                    d.unreachable_runs = d.unreachable_runs.saturating_add(1);
                }
            }
            b.set_state(owner, new_state);
            if let Some(expires_at) = expires {
                let after = InvitationState::after(state.invitations.get(owner), now, expires_at);
                state.invitations.insert(owner.clone(), after);
                accepted.push(owner);
            }
        }
        for owner in accepted {
            state.accept_tokens(owner, batch, now);
        }
        Ok(refused)
    }

    async fn release_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<OwnerId>> {
        let mut state = self.lock();
        let b = state
            .batches
            .get_mut(batch)
            .ok_or_else(|| not_found("batch", batch))?;
        let mut refused = Vec::new();
        for owner in owners {
            if b.is_held_by(owner, sender) {
                b.set_state(owner, DeliveryState::Pending);
            } else {
                refused.push(owner.clone());
            }
        }
        Ok(refused)
    }

    async fn held_claims(&self, batch: &BatchId, now: Timestamp) -> RepoResult<HeldClaims> {
        let state = self.lock();
        let b = state
            .batches
            .get(batch)
            .ok_or_else(|| not_found("batch", batch))?;
        let mut by_sender: BTreeMap<&SenderId, ClaimHolder> = BTreeMap::new();
        // In order of `until`: the first seen of a sender is its earliest.
        for (until, owner) in &b.claimed {
            let Some(DeliveryState::Claimed { holder, .. }) =
                b.deliveries.get(owner).map(|d| &d.state)
            else {
                continue;
            };
            let entry = by_sender.entry(holder).or_insert_with(|| ClaimHolder {
                sender: holder.clone(),
                deliveries: 0,
                first_until: *until,
                last_until: *until,
            });
            entry.deliveries += 1;
            entry.last_until = *until;
        }
        Ok(HeldClaims {
            now,
            holders: by_sender.into_values().collect(),
        })
    }

    async fn revoke_claims(&self, batch: &BatchId) -> RepoResult<usize> {
        let mut state = self.lock();
        let b = state
            .batches
            .get_mut(batch)
            .ok_or_else(|| not_found("batch", batch))?;
        let claimed: Vec<OwnerId> = b.claimed.iter().map(|(_, owner)| owner.clone()).collect();
        for owner in &claimed {
            b.set_state(owner, DeliveryState::Pending);
        }
        Ok(claimed.len())
    }

    async fn deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        let state = self.lock();
        let b = state
            .batches
            .get(batch)
            .ok_or_else(|| not_found("batch", batch))?;
        Ok(b.deliveries.values().cloned().collect())
    }

    async fn delivery_counts(&self, batch: &BatchId) -> RepoResult<DeliveryCounts> {
        let state = self.lock();
        state
            .batches
            .get(batch)
            .map(|b| b.counts)
            .ok_or_else(|| not_found("batch", batch))
    }

    async fn requeue_failed(&self, batch: &BatchId) -> RepoResult<usize> {
        let mut state = self.lock();
        let b = state
            .batches
            .get_mut(batch)
            .ok_or_else(|| not_found("batch", batch))?;
        let failed: Vec<OwnerId> = b.failed.iter().cloned().collect();
        for owner in &failed {
            b.set_state(owner, DeliveryState::Pending);
            if let Some(d) = b.deliveries.get_mut(owner) {
                d.unreachable_runs = 0;
            }
        }
        Ok(failed.len())
    }

    async fn issue_token(&self, token: &TokenRecord) -> RepoResult<()> {
        let mut state = self.lock();
        if state.tokens.contains_key(&token.hash) {
            return Err(RepositoryError::AlreadyExists {
                what: "token",
                id: token.hash.to_hex(),
            });
        }
        if token.state == TokenState::Live {
            // Accepted already: as a message recorded as sent.
            state.accept_tokens(&token.owner, &token.batch, token.issued_at);
        }
        if matches!(token.state, TokenState::Live | TokenState::Pending) {
            state
                .unspent_tokens_by_owner
                .entry(token.owner.clone())
                .or_default()
                .insert(token.hash);
        }
        state.tokens.insert(token.hash, token.clone());
        Ok(())
    }

    async fn invitation_states(
        &self,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<(OwnerId, InvitationState)>> {
        let state = self.lock();
        let unique: BTreeSet<&OwnerId> = owners.iter().collect();
        Ok(unique
            .into_iter()
            .filter_map(|id| state.invitations.get(id).map(|i| (id.clone(), *i)))
            .collect())
    }

    async fn token(&self, hash: &TokenHash) -> RepoResult<Option<TokenRecord>> {
        Ok(self.lock().tokens.get(hash).cloned())
    }

    async fn redeem_token(&self, hash: &TokenHash, now: Timestamp) -> RepoResult<RedeemOutcome> {
        let mut state = self.lock();
        let Some(token) = state.tokens.get(hash).cloned() else {
            return Ok(RedeemOutcome::Rejected(TokenRejection::Unknown));
        };
        if let Err(reason) = token.check(now) {
            return Ok(RedeemOutcome::Rejected(reason));
        }
        let owner = token.owner.clone();
        state.revoke_tokens(&owner, now, |t| t.hash != *hash);
        remove_from_index(&mut state.unspent_tokens_by_owner, &owner, hash);
        let mut token = token;
        token.state = TokenState::Redeemed { at: now };
        state.tokens.insert(*hash, token.clone());
        state.owed.insert(
            *hash,
            OwedRegistration {
                token: *hash,
                owner: token.owner.clone(),
                batch: token.batch.clone(),
                sent_to: token.sent_to.clone(),
                at: now,
            },
        );
        Ok(RedeemOutcome::Redeemed { token })
    }

    async fn owed_registrations(&self) -> RepoResult<Vec<OwedRegistration>> {
        Ok(self.lock().owed.values().cloned().collect())
    }

    async fn settle_registration(
        &self,
        token: &TokenHash,
        activity: Option<&ActivityEntry>,
    ) -> RepoResult<bool> {
        let mut state = self.lock();
        if state.owed.remove(token).is_none() {
            return Ok(false);
        }
        if let Some(entry) = activity {
            state.append_activity(entry.clone());
        }
        Ok(true)
    }

    async fn answer_redeem(&self, token: &TokenHash, _now: Timestamp) -> RepoResult<bool> {
        let mut state = self.lock();
        let redeemed = matches!(
            state.tokens.get(token).map(|t| t.state),
            Some(TokenState::Redeemed { .. })
        );
        Ok(redeemed && state.answered.insert(*token))
    }

    async fn revoke_tokens(&self, owners: &[OwnerId], now: Timestamp) -> RepoResult<usize> {
        let mut state = self.lock();
        let mut revoked = 0;
        for owner in owners {
            revoked += state
                .unspent_tokens_by_owner
                .get(owner)
                .map_or(0, BTreeSet::len);
            state.revoke_tokens(owner, now, |_| true);
        }
        Ok(revoked)
    }

    async fn append_activity(&self, entry: &ActivityEntry) -> RepoResult<()> {
        self.lock().append_activity(entry.clone());
        Ok(())
    }

    async fn activity(
        &self,
        community: &CommunityId,
        page: Page,
    ) -> RepoResult<Vec<ActivityEntry>> {
        let state = self.lock();
        Ok(state
            .activity
            .get(community)
            .into_iter()
            .flat_map(|feed| feed.values().rev())
            .skip(page.offset)
            .take(page.limit)
            .cloned()
            .collect())
    }
}

/// A delivery failure [`InMemoryTransport`] can be told to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// A transient reply (`451 4.3.0`): the engine may retry.
    Transient,
    /// A transient connection error (refused, dropped, timed out).
    Connection,
    /// A permanent reply (`550 5.1.1`): this recipient fails, no retry.
    Permanent,
    /// A fatal error (`535 5.7.8`, authentication refused): nothing can be sent.
    Fatal,
    /// The message is accepted and recorded, but the reply is lost: the call returns
    /// a transient connection error, so the engine sends it again (with the same
    /// Message-ID) and the recipient gets two copies.
    LostReply,
}

impl Fault {
    fn error(self) -> TransportError {
        match self {
            Fault::Transient => {
                TransportError::from_reply(451, Some("4.3.0".into()), "injected transient failure")
            }
            Fault::Connection => TransportError::connection("injected: connection dropped"),
            Fault::Permanent => TransportError::from_reply(
                550,
                Some("5.1.1".into()),
                "injected: mailbox unavailable",
            ),
            Fault::Fatal => TransportError {
                code: Some(535),
                enhanced: Some("5.7.8".into()),
                ..TransportError::fatal("injected: authentication refused")
            },
            Fault::LostReply => TransportError::connection(
                "injected: connection lost after the message was accepted",
            ),
        }
    }
}

/// A message [`InMemoryTransport`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedMessage {
    /// The envelope it was sent with.
    pub envelope: Envelope,
    /// The bytes, exactly as given.
    pub bytes: Vec<u8>,
}

impl RecordedMessage {
    /// The value of the `Message-ID` header (angle brackets included, folding
    /// undone), if the message has one.
    pub fn message_id(&self) -> Option<String> {
        header_value(&self.bytes, "message-id")
    }
}

/// The first value of a header field in a message's header section.
fn header_value(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut found: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(value) = found.as_mut() {
            if line.starts_with([' ', '\t']) {
                value.push_str(line);
                continue;
            }
            break;
        }
        if let Some((field, value)) = line.split_once(':')
            && field.trim().eq_ignore_ascii_case(name)
        {
            found = Some(value.to_owned());
        }
    }
    found.map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    fault: Fault,
    /// `None`: always; `Some(n)`: the next `n` attempts.
    remaining: Option<u32>,
}

impl Rule {
    /// Whether the rule fires for this attempt (and counts it down).
    fn fire(&mut self) -> Option<Fault> {
        match &mut self.remaining {
            None => Some(self.fault),
            Some(0) => None,
            Some(n) => {
                *n -= 1;
                Some(self.fault)
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct FractionRule {
    fault: Fault,
    fraction: f64,
    seed: u64,
}

#[derive(Debug, Default)]
struct TransportState {
    messages: Vec<RecordedMessage>,
    by_address: HashMap<String, Rule>,
    all: Option<Rule>,
    fraction: Option<FractionRule>,
    attempts_by_address: HashMap<String, u32>,
    attempts: u64,
}

/// A [`MailTransport`] that keeps every accepted message in memory, for tests and
/// demos.
///
/// It records each accepted message (envelope and bytes), counts attempts, tracks the
/// most sends seen in flight at once (with an optional per-send latency so
/// concurrency shows), and injects faults:
///
/// - for one address, always or for the next N attempts ([`fail_address`](Self::fail_address),
///   [`fail_address_times`](Self::fail_address_times));
/// - for every send ([`fail_all`](Self::fail_all), [`fail_all_times`](Self::fail_all_times));
/// - for a fraction of sends chosen deterministically from a seed
///   ([`fail_fraction`](Self::fail_fraction));
///
/// An address rule wins over an every-send rule, which wins over the fraction.
/// [`Fault::LostReply`] records the message and still reports an error.
///
/// ```
/// use owner_access::{InMemoryTransport, MailTransport};
/// use owner_access::adapters::memory::Fault;
/// use owner_access::domain::EmailAddress;
/// use owner_access::transport::Envelope;
///
/// # tokio_test_block_on(async {
/// let transport = InMemoryTransport::new();
/// let to: EmailAddress = "ann@example.org".parse().unwrap();
/// let envelope = Envelope::new("hoa@example.org".parse().unwrap(), to.clone());
/// transport.fail_address_times(&to, Fault::Transient, 1);
/// assert!(transport.send(&envelope, b"Subject: hi\r\n\r\nhello\r\n").await.unwrap_err().is_transient());
/// assert!(transport.send(&envelope, b"Subject: hi\r\n\r\nhello\r\n").await.is_ok());
/// assert_eq!(transport.messages_to(&to).len(), 1);
/// # });
/// # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Default)]
pub struct InMemoryTransport {
    state: Mutex<TransportState>,
    latency: Option<Duration>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Counts a send in flight for as long as it lives (also when the send is dropped).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// SplitMix64: a small, fixed mixing function, so fault selection is the same on
/// every platform and Rust version.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl InMemoryTransport {
    /// A transport that accepts everything at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every send wait this long (tokio's timer) before it completes, so
    /// concurrent sends overlap and [`max_in_flight`](Self::max_in_flight) shows them.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }

    fn lock(&self) -> MutexGuard<'_, TransportState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every accepted message, in the order accepted.
    pub fn messages(&self) -> Vec<RecordedMessage> {
        self.lock().messages.clone()
    }

    /// The accepted messages whose envelope recipient is `to` (compared by `delivered_key`).
    pub fn messages_to(&self, to: &EmailAddress) -> Vec<RecordedMessage> {
        self.lock()
            .messages
            .iter()
            .filter(|m| &m.envelope.to == to)
            .cloned()
            .collect()
    }

    /// How many messages were accepted.
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// Whether no message was accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets the recorded messages (faults and counters stay).
    pub fn clear(&self) {
        self.lock().messages.clear();
    }

    /// How many times `send` was called, successful or not.
    pub fn attempts(&self) -> u64 {
        self.lock().attempts
    }

    /// How many times `send` was called for this recipient.
    pub fn attempts_to(&self, to: &EmailAddress) -> u32 {
        self.lock()
            .attempts_by_address
            .get(to.normalized())
            .copied()
            .unwrap_or(0)
    }

    /// The most sends that were in flight at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Every send to `to` fails with `fault` (until [`clear_faults`](Self::clear_faults)).
    pub fn fail_address(&self, to: &EmailAddress, fault: Fault) {
        self.set_address_rule(to, fault, None);
    }

    /// The next `times` sends to `to` fail with `fault`; later ones go through.
    pub fn fail_address_times(&self, to: &EmailAddress, fault: Fault, times: u32) {
        self.set_address_rule(to, fault, Some(times));
    }

    fn set_address_rule(&self, to: &EmailAddress, fault: Fault, remaining: Option<u32>) {
        self.lock()
            .by_address
            .insert(to.normalized().to_owned(), Rule { fault, remaining });
    }

    /// Every send fails with `fault` (e.g. [`Fault::Fatal`]: authentication refused).
    pub fn fail_all(&self, fault: Fault) {
        self.lock().all = Some(Rule {
            fault,
            remaining: None,
        });
    }

    /// The next `times` sends, whatever the recipient, fail with `fault`.
    pub fn fail_all_times(&self, fault: Fault, times: u32) {
        self.lock().all = Some(Rule {
            fault,
            remaining: Some(times),
        });
    }

    /// About `fraction` (0.0 to 1.0) of all sends fail with `fault`. Which ones is
    /// decided from `seed`, the recipient and the number of earlier attempts to that
    /// recipient, so the choice is the same on every run whatever the order in which
    /// concurrent sends arrive, and a retry of a failed recipient draws again.
    pub fn fail_fraction(&self, fraction: f64, seed: u64, fault: Fault) {
        self.lock().fraction = Some(FractionRule {
            fault,
            fraction: fraction.clamp(0.0, 1.0),
            seed,
        });
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        let mut state = self.lock();
        state.by_address.clear();
        state.all = None;
        state.fraction = None;
    }

    /// Counts the attempt and decides its fault, if any.
    fn attempt(state: &mut TransportState, key: &str) -> Option<Fault> {
        state.attempts += 1;
        let counter = state.attempts_by_address.entry(key.to_owned()).or_insert(0);
        let attempt = *counter;
        *counter += 1;
        if let Some(fault) = state.by_address.get_mut(key).and_then(Rule::fire) {
            return Some(fault);
        }
        if let Some(fault) = state.all.as_mut().and_then(Rule::fire) {
            return Some(fault);
        }
        let rule = state.fraction?;
        let draw = mix(rule.seed ^ mix(fnv1a(key.as_bytes()) ^ mix(u64::from(attempt))));
        // The top 53 bits as a number in [0, 1).
        let unit = (draw >> 11) as f64 / (1u64 << 53) as f64;
        (unit < rule.fraction).then_some(rule.fault)
    }
}

impl fmt::Display for InMemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("in-memory transport")
    }
}

#[async_trait]
impl MailTransport for InMemoryTransport {
    async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<Accepted, TransportError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = InFlight(&self.in_flight);
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(latency) = self.latency {
            tokio::time::sleep(latency).await;
        }
        let mut state = self.lock();
        let fault = Self::attempt(&mut state, envelope.to.normalized());
        match fault {
            Some(Fault::LostReply) | None => {
                state.messages.push(RecordedMessage {
                    envelope: envelope.clone(),
                    bytes: message.to_vec(),
                });
                match fault {
                    Some(f) => Err(f.error()),
                    None => Ok(Accepted {
                        response: Some(format!("250 2.0.0 queued as {}", state.messages.len())),
                    }),
                }
            }
            Some(f) => Err(f.error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ErrorClass;

    fn addr(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    fn envelope(to: &str) -> Envelope {
        Envelope::new(addr("hoa@example.org"), addr(to))
    }

    const MSG: &[u8] = b"Message-ID: <b-1.o-1@example.org>\r\nSubject: hi\r\n\r\nhello\r\n";

    #[tokio::test]
    async fn records_accepted_messages() {
        let t = InMemoryTransport::new();
        assert_eq!(t.to_string(), "in-memory transport");
        assert!(t.is_empty());
        t.send(&envelope("a@example.org"), MSG).await.unwrap();
        t.send(&envelope("B@example.org"), b"x\r\n").await.unwrap();
        assert_eq!(t.len(), 2);
        let to_b = t.messages_to(&addr("b@EXAMPLE.org"));
        assert_eq!(to_b.len(), 1);
        assert_eq!(to_b[0].bytes, b"x\r\n");
        assert_eq!(
            t.messages()[0].message_id().as_deref(),
            Some("<b-1.o-1@example.org>")
        );
        assert_eq!(t.attempts(), 2);
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.attempts(), 2);
    }

    #[tokio::test]
    async fn address_faults_always_and_for_n_attempts() {
        let t = InMemoryTransport::new();
        let a = addr("a@example.org");
        let b = addr("b@example.org");
        t.fail_address(&a, Fault::Permanent);
        t.fail_address_times(&b, Fault::Transient, 2);
        for _ in 0..3 {
            let e = t.send(&envelope("A@example.org"), MSG).await.unwrap_err();
            assert_eq!(e.class, ErrorClass::Permanent);
            assert_eq!(e.code, Some(550));
        }
        for _ in 0..2 {
            let e = t.send(&envelope("b@example.org"), MSG).await.unwrap_err();
            assert!(e.is_transient() && !e.connection);
            assert_eq!(e.code, Some(451));
        }
        t.send(&envelope("b@example.org"), MSG).await.unwrap();
        assert_eq!(t.messages_to(&b).len(), 1);
        assert!(t.messages_to(&a).is_empty());
        assert_eq!(t.attempts_to(&b), 3);
        t.send(&envelope("c@example.org"), MSG).await.unwrap();
        t.clear_faults();
        t.send(&envelope("a@example.org"), MSG).await.unwrap();
        assert_eq!(t.len(), 3);
    }

    #[tokio::test]
    async fn connection_and_fatal_faults_are_classified() {
        let t = InMemoryTransport::new();
        t.fail_address(&addr("c@example.org"), Fault::Connection);
        let e = t.send(&envelope("c@example.org"), MSG).await.unwrap_err();
        assert!(e.is_transient() && e.connection);
        t.fail_all(Fault::Fatal);
        let e = t.send(&envelope("d@example.org"), MSG).await.unwrap_err();
        assert!(e.is_fatal());
        assert_eq!(e.code, Some(535));
        // The address rule wins over the every-send rule.
        let e = t.send(&envelope("c@example.org"), MSG).await.unwrap_err();
        assert!(e.connection);
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn fail_all_times_then_recovers() {
        let t = InMemoryTransport::new();
        t.fail_all_times(Fault::Connection, 2);
        assert!(t.send(&envelope("a@example.org"), MSG).await.is_err());
        assert!(t.send(&envelope("b@example.org"), MSG).await.is_err());
        assert!(t.send(&envelope("c@example.org"), MSG).await.is_ok());
        assert_eq!(t.len(), 1);
    }

    #[tokio::test]
    async fn lost_reply_records_the_message_and_reports_a_connection_error() {
        let t = InMemoryTransport::new();
        let a = addr("a@example.org");
        t.fail_address_times(&a, Fault::LostReply, 1);
        let e = t.send(&envelope("a@example.org"), MSG).await.unwrap_err();
        assert!(e.is_transient() && e.connection);
        t.send(&envelope("a@example.org"), MSG).await.unwrap();
        let copies = t.messages_to(&a);
        assert_eq!(copies.len(), 2, "delivered, then delivered again");
        assert_eq!(copies[0].message_id(), copies[1].message_id());
    }

    async fn failures_with_seed(seed: u64) -> Vec<usize> {
        let t = InMemoryTransport::new();
        t.fail_fraction(0.3, seed, Fault::Transient);
        let mut failed = Vec::new();
        for i in 0..400 {
            let to = format!("owner{i}@example.org");
            if t.send(&envelope(&to), MSG).await.is_err() {
                failed.push(i);
            }
        }
        assert_eq!(t.len() + failed.len(), 400);
        failed
    }

    #[tokio::test]
    async fn fraction_is_deterministic_and_roughly_right() {
        let a = failures_with_seed(7).await;
        let b = failures_with_seed(7).await;
        let c = failures_with_seed(8).await;
        assert_eq!(a, b, "same seed, same failures");
        assert_ne!(a, c, "another seed, other failures");
        assert!(
            (80..=160).contains(&a.len()),
            "about 30% of 400: {}",
            a.len()
        );
    }

    #[tokio::test]
    async fn fraction_does_not_depend_on_order_and_retries_draw_again() {
        let forward = InMemoryTransport::new();
        let backward = InMemoryTransport::new();
        forward.fail_fraction(0.5, 42, Fault::Transient);
        backward.fail_fraction(0.5, 42, Fault::Transient);
        let mut f = BTreeSet::new();
        let mut b = BTreeSet::new();
        for i in 0..100 {
            if forward
                .send(&envelope(&format!("o{i}@example.org")), MSG)
                .await
                .is_err()
            {
                f.insert(i);
            }
        }
        for i in (0..100).rev() {
            if backward
                .send(&envelope(&format!("o{i}@example.org")), MSG)
                .await
                .is_err()
            {
                b.insert(i);
            }
        }
        assert_eq!(f, b);
        // Retrying each failed recipient eventually gets through.
        for i in &f {
            let mut tries = 0;
            while forward
                .send(&envelope(&format!("o{i}@example.org")), MSG)
                .await
                .is_err()
            {
                tries += 1;
                assert!(tries < 40, "retries must draw afresh");
            }
        }
        assert_eq!(forward.len(), 100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn latency_shows_concurrency() {
        let t =
            std::sync::Arc::new(InMemoryTransport::new().with_latency(Duration::from_millis(30)));
        let sends = (0..8).map(|i| {
            let t = t.clone();
            async move { t.send(&envelope(&format!("o{i}@example.org")), MSG).await }
        });
        for r in futures::future::join_all(sends).await {
            r.unwrap();
        }
        assert_eq!(t.max_in_flight(), 8);
        t.send(&envelope("x@example.org"), MSG).await.unwrap();
        assert_eq!(t.max_in_flight(), 8);
        assert_eq!(t.len(), 9);
    }

    #[tokio::test]
    async fn sequential_sends_are_one_in_flight() {
        let t = InMemoryTransport::new().with_latency(Duration::from_millis(1));
        for i in 0..3 {
            t.send(&envelope(&format!("o{i}@example.org")), MSG)
                .await
                .unwrap();
        }
        assert_eq!(t.max_in_flight(), 1);
    }

    #[test]
    fn repository_names_itself() {
        assert_eq!(
            InMemoryRepository::new().to_string(),
            "in-memory repository"
        );
    }
}
