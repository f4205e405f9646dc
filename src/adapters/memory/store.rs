//! [`InvitationStore`] for [`InMemoryRepository`]: drafts, batches and their
//! deliveries (claims, leases, outcomes), tokens, owed registrations and activity.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;

use super::InMemoryRepository;
use super::state::{BatchState, not_found, remove_from_index};
use crate::domain::{
    ActivityEntry, Batch, BatchId, CommunityId, Delivery, DeliveryCounts, DeliveryOutcome,
    DeliveryState, Draft, DraftId, InvitationState, NewBatch, OwnerId, Page, SenderId, Timestamp,
    TokenHash, TokenRecord, TokenRejection, TokenState,
};
use crate::repository::{
    ClaimHolder, HeldClaims, InvitationStore, OwedRegistration, RedeemOutcome, RepoResult,
    RepositoryError, SendSlots,
};

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
                next_slot: None,
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

    async fn take_send_slots(
        &self,
        batch: &BatchId,
        interval: Duration,
        count: u32,
        now: Timestamp,
    ) -> RepoResult<SendSlots> {
        let span = SendSlots::check_request(interval, count)?;
        let mut state = self.lock();
        let b = state
            .batches
            .get_mut(batch)
            .ok_or_else(|| not_found("batch", batch))?;
        let first = b.next_slot.map_or(now, |next| next.max(now));
        b.next_slot = Some(first + span);
        Ok(SendSlots {
            now,
            first,
            count,
            interval,
        })
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
        let mut chosen: Vec<OwnerId> = b
            .claimed
            .iter()
            .take_while(|(until, _)| *until <= now)
            .take(limit)
            .map(|(_, owner)| owner.clone())
            .collect();
        let room = limit - chosen.len();
        chosen.extend(b.pending.iter().take(room).cloned());
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
