//! Mass Edit: many owners' primary emails at once, all or nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::domain::{
    ActivityEntry, ActivityKind, CommunityId, EmailAddress, Owner, OwnerId, Timestamp,
};
use crate::error::{Error, MassEditProblem, Result};
use crate::repository::EmailEdit;

use super::OwnerAccess;

/// The result of a mass edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MassEditReport {
    /// Owners whose primary email changed (their outstanding links were revoked).
    pub changed: Vec<OwnerId>,
    /// Rows that set the address the owner already had.
    pub unchanged: usize,
}

impl OwnerAccess {
    /// Sets many owners' primary emails at once ("Mass Edit"), all or nothing.
    ///
    /// A blank email clears the address. Every row is checked first; if any owner is
    /// unknown (or not in `community`), appears twice, gets an invalid address, or
    /// would share an address with another owner record anywhere in the repository
    /// (the same mailbox: the same [`delivered_key`](crate::domain::delivered_key), so
    /// `a@ｅxample.org` is refused while another owner holds `a@example.org`), the
    /// whole edit is rejected with
    /// [`Error::MassEditRejected`] naming every bad row, and nothing changes. Owners
    /// whose address changes lose their outstanding links.
    ///
    /// # Errors
    /// - [`Error::MassEditRejected`]: one or more bad rows, each listed; nothing
    ///   changed.
    /// - [`Error::Repository`] with `Side::Directory`: reading the owners or the
    ///   holders of the new addresses, or the update itself, failed; nothing changed
    ///   (the update is all or nothing). With
    ///   [`RepositoryError::Precondition`](crate::repository::RepositoryError::Precondition),
    ///   an address was taken by another owner after the check: run the edit again to
    ///   see that row rejected.
    /// - [`Error::Repository`] with `Side::Store`: the directory committed the new
    ///   addresses, then revoking the changed owners' links or appending the activity
    ///   entry failed. The new addresses are kept; the old links stop working anyway (a
    ///   link works only while the owner's email is the address it was sent to); the
    ///   feed misses the entry. Running the same edit again finds those rows unchanged.
    pub async fn mass_edit_emails(
        &self,
        community: &CommunityId,
        edits: &[EmailEdit],
    ) -> Result<MassEditReport> {
        self.mass_edit_in(Some(community), edits).await
    }

    /// [`mass_edit_emails`](Self::mass_edit_emails) for owners of any communities:
    /// one file of edits, all or nothing as a whole. Each community whose owners the
    /// edit touches gets its own activity entry (with its own count), in the same
    /// step. An id that names no owner at all is an `UnknownOwner` row.
    ///
    /// # Errors
    /// As [`mass_edit_emails`](Self::mass_edit_emails): `MassEditRejected` with nothing
    /// changed; `Repository` from the directory with nothing changed; `Repository` from
    /// the store after the directory committed the new addresses.
    pub async fn mass_edit_emails_across(&self, edits: &[EmailEdit]) -> Result<MassEditReport> {
        self.mass_edit_in(None, edits).await
    }

    /// The steps of a mass edit, in order: read the edited owners, check every row,
    /// check the new addresses against every holder, then commit (the directory first,
    /// the store's bookkeeping after it).
    async fn mass_edit_in(
        &self,
        community: Option<&CommunityId>,
        edits: &[EmailEdit],
    ) -> Result<MassEditReport> {
        let existing = self.owners_to_edit(community, edits).await?;
        let CheckedRows {
            mut problems,
            new_keys,
        } = check_rows(edits, &existing);
        problems.extend(self.shared_addresses(edits, &new_keys).await?);
        if !problems.is_empty() {
            return Err(Error::MassEditRejected { problems });
        }
        let now = self.clock.now();
        let activity = mass_edit_activity(edits, &existing, &new_keys, now);
        self.commit_mass_edit(&trimmed(edits), &activity, now).await
    }

    /// The edited owners as the directory holds them, by id; with `community`, only
    /// its owners (an owner of another community is then an unknown row).
    async fn owners_to_edit(
        &self,
        community: Option<&CommunityId>,
        edits: &[EmailEdit],
    ) -> Result<HashMap<OwnerId, Owner>> {
        let ids: Vec<OwnerId> = edits.iter().map(|e| e.owner.clone()).collect();
        Ok(self
            .directory
            .owners(&ids)
            .await
            .map_err(Error::directory)?
            .into_iter()
            .filter(|o| community.is_none_or(|c| &o.community == c))
            .map(|o| (o.id.clone(), o))
            .collect())
    }

    /// A `SharedEmail` problem for each edited owner whose new address another owner
    /// record would hold too: one held now by an owner the edit leaves alone (an
    /// edited owner holds its old address no more), or given to two edited owners.
    async fn shared_addresses(
        &self,
        edits: &[EmailEdit],
        new_keys: &BTreeMap<OwnerId, Option<String>>,
    ) -> Result<Vec<MassEditProblem>> {
        let keys: Vec<String> = new_keys.values().flatten().cloned().collect();
        let holders = self
            .directory
            .email_holders(&keys)
            .await
            .map_err(Error::directory)?;
        let mut users: HashMap<&str, Vec<OwnerId>> = HashMap::new();
        for holder in &holders {
            if !new_keys.contains_key(&holder.owner) {
                users
                    .entry(holder.key.as_str())
                    .or_default()
                    .push(holder.owner.clone());
            }
        }
        for (owner, key) in new_keys {
            if let Some(key) = key {
                users.entry(key.as_str()).or_default().push(owner.clone());
            }
        }
        let mut problems = Vec::new();
        // An owner is reported once, however many rows name it.
        let mut reported = HashSet::new();
        for edit in edits {
            let Some(Some(key)) = new_keys.get(&edit.owner) else {
                continue;
            };
            let mut with: Vec<OwnerId> = users[key.as_str()]
                .iter()
                .filter(|o| **o != edit.owner)
                .cloned()
                .collect();
            if !with.is_empty() && reported.insert(&edit.owner) {
                with.sort();
                with.dedup();
                problems.push(MassEditProblem::SharedEmail {
                    owner: edit.owner.clone(),
                    email: edit.email.clone().unwrap_or_default(),
                    with,
                });
            }
        }
        Ok(problems)
    }

    /// Commits a checked edit. The directory commits first; the links of the owners
    /// whose address changed are revoked and the activity appended after it, in the
    /// store. A crash between the two loses at most that bookkeeping: the entries are
    /// appended at most once, and an old link stops working anyway, since a link works
    /// only while the owner's email is the address it was sent to.
    async fn commit_mass_edit(
        &self,
        edits: &[EmailEdit],
        activity: &[ActivityEntry],
        now: Timestamp,
    ) -> Result<MassEditReport> {
        let changed = self
            .directory
            .update_emails(edits)
            .await
            .map_err(Error::directory)?;
        let revoked = if changed.is_empty() {
            0
        } else {
            self.store
                .revoke_tokens(&changed, now)
                .await
                .map_err(Error::store)?
        };
        for entry in activity {
            self.store
                .append_activity(entry)
                .await
                .map_err(Error::store)?;
        }
        tracing::info!(
            rows = edits.len(),
            changed = changed.len(),
            revoked_links = revoked,
            communities = activity.len(),
            "mass edit applied"
        );
        Ok(MassEditReport {
            unchanged: edits.len() - changed.len(),
            changed,
        })
    }
}

/// What the rows' own checks found: their problems (a duplicate row, an unknown
/// owner, an invalid address), and each edited owner's new comparison key (`None`
/// clears the address), for the shared-address check.
struct CheckedRows {
    problems: Vec<MassEditProblem>,
    new_keys: BTreeMap<OwnerId, Option<String>>,
}

/// Checks each row on its own, in the order given; an owner's second row is a
/// `DuplicateRow` and is not checked further.
fn check_rows(edits: &[EmailEdit], existing: &HashMap<OwnerId, Owner>) -> CheckedRows {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut new_keys: BTreeMap<OwnerId, Option<String>> = BTreeMap::new();
    for edit in edits {
        if !seen.insert(edit.owner.clone()) {
            problems.push(MassEditProblem::DuplicateRow {
                owner: edit.owner.clone(),
            });
            continue;
        }
        if !existing.contains_key(&edit.owner) {
            problems.push(MassEditProblem::UnknownOwner {
                owner: edit.owner.clone(),
            });
            continue;
        }
        let raw = edit
            .email
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty());
        match raw.map(EmailAddress::parse) {
            None => {
                new_keys.insert(edit.owner.clone(), None);
            }
            Some(Ok(address)) => {
                new_keys.insert(edit.owner.clone(), Some(address.normalized().to_owned()));
            }
            Some(Err(error)) => problems.push(MassEditProblem::InvalidEmail {
                owner: edit.owner.clone(),
                email: raw.unwrap_or_default().to_owned(),
                error,
            }),
        }
    }
    CheckedRows { problems, new_keys }
}

/// One activity entry per community the edit touches, with how many of its owners
/// change address.
fn mass_edit_activity(
    edits: &[EmailEdit],
    existing: &HashMap<OwnerId, Owner>,
    new_keys: &BTreeMap<OwnerId, Option<String>>,
    now: Timestamp,
) -> Vec<ActivityEntry> {
    let mut changing: BTreeMap<&CommunityId, usize> = BTreeMap::new();
    for e in edits {
        let owner = &existing[&e.owner];
        *changing.entry(&owner.community).or_default() +=
            usize::from(owner.email_key() != new_keys[&e.owner]);
    }
    changing
        .into_iter()
        .map(|(community, changed)| ActivityEntry {
            community: community.clone(),
            at: now,
            kind: ActivityKind::MassEdit { changed },
        })
        .collect()
}

/// The edits as the directory takes them: each address trimmed, a blank one `None`.
fn trimmed(edits: &[EmailEdit]) -> Vec<EmailEdit> {
    edits
        .iter()
        .map(|e| EmailEdit {
            owner: e.owner.clone(),
            email: e
                .email
                .as_deref()
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned),
        })
        .collect()
}
