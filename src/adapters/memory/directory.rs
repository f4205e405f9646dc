//! [`OwnerDirectory`] and [`OwnerRepository`] for [`InMemoryRepository`]: communities,
//! owners and their addresses, and imports applied under one lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;

use super::InMemoryRepository;
use super::state::{State, not_found};
use crate::domain::{Community, CommunityId, Owner, OwnerId, Registered, Timestamp, delivered_key};
use crate::eligibility::OwnerFilter;
use crate::repository::{
    EmailEdit, EmailHolder, ImportSession, Marked, OwnerDirectory, OwnerRepository, RepoResult,
    RepositoryError,
};

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
