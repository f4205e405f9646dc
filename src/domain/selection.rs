//! Which owners an invitation goes to.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::OwnerId;

/// The owners a manager picked: "Select All" on a filtered roster, then toggles, or a
/// single owner. Ids are kept in order and without duplicates. An id that names no
/// owner is not an error here: the review lists it as excluded
/// ([`Ineligible::UnknownOwner`](crate::eligibility::Ineligible::UnknownOwner)).
///
/// Cloning is cheap: the ids are shared until one of the clones is changed. An invite
/// selecting a million owners is held by the caller, its review and the stored batch
/// at once; each holding its own copy of the ids cost about 80 MB a copy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    owners: Arc<BTreeSet<OwnerId>>,
}

impl Selection {
    /// Nobody selected.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exactly these owners.
    pub fn of(owners: impl IntoIterator<Item = OwnerId>) -> Self {
        Self {
            owners: Arc::new(owners.into_iter().collect()),
        }
    }

    /// One owner ("invite a single owner").
    pub fn single(owner: OwnerId) -> Self {
        Self::of([owner])
    }

    /// Ticks an owner. Returns whether it was newly added.
    pub fn select(&mut self, owner: OwnerId) -> bool {
        if self.owners.contains(&owner) {
            return false;
        }
        Arc::make_mut(&mut self.owners).insert(owner)
    }

    /// Unticks an owner. Returns whether it was selected.
    pub fn deselect(&mut self, owner: &OwnerId) -> bool {
        if !self.owners.contains(owner) {
            return false;
        }
        Arc::make_mut(&mut self.owners).remove(owner)
    }

    /// Flips one owner.
    pub fn toggle(&mut self, owner: OwnerId) {
        let owners = Arc::make_mut(&mut self.owners);
        if !owners.remove(&owner) {
            owners.insert(owner);
        }
    }

    /// Whether an owner is selected.
    pub fn contains(&self, owner: &OwnerId) -> bool {
        self.owners.contains(owner)
    }

    /// How many owners are selected (the count the Actions menu shows).
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Whether nobody is selected.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// The selected ids, in order.
    pub fn iter(&self) -> impl Iterator<Item = &OwnerId> {
        self.owners.iter()
    }
}

impl FromIterator<OwnerId> for Selection {
    fn from_iter<I: IntoIterator<Item = OwnerId>>(iter: I) -> Self {
        Self::of(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> OwnerId {
        OwnerId::new(s).unwrap()
    }

    #[test]
    fn select_toggle_and_count() {
        let mut s = Selection::of([id("a"), id("b"), id("a")]);
        assert_eq!(s.len(), 2);
        s.toggle(id("b"));
        assert!(!s.contains(&id("b")));
        s.toggle(id("c"));
        assert!(s.select(id("d")));
        assert!(!s.select(id("d")));
        assert!(s.deselect(&id("a")));
        assert_eq!(
            s.iter().cloned().collect::<Vec<_>>(),
            vec![id("c"), id("d")]
        );
    }

    #[test]
    fn clones_share_the_ids_until_one_changes() {
        let a = Selection::of([id("a"), id("b")]);
        let mut b = a.clone();
        assert!(Arc::ptr_eq(&a.owners, &b.owners));
        assert!(!b.select(id("a")), "already selected: nothing changes");
        assert!(Arc::ptr_eq(&a.owners, &b.owners));
        b.toggle(id("c"));
        assert!(!Arc::ptr_eq(&a.owners, &b.owners));
        assert_eq!(a.len(), 2);
        assert_eq!(b.len(), 3);
    }
}
